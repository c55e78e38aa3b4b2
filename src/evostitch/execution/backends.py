"""A backend by name, as the CLI and the API choose one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import SearchError
from ..evolution.backend import Backend
from ..evolution.stitching import ProblemSpec, evaluator_factory, problem_from_spec
from .inprocess import InProcessBackend
from .ray_backend import RayBackend

BACKENDS = ("inprocess", "ray")
DEFAULT_EVAL_BATCH = 8  # offspring evaluated together share their common computation


@dataclass(frozen=True)
class Workers:
    """The Ray backend's actors: how many, what each asks of the cluster, and which
    cluster: "auto" or "HOST:PORT" joins a running one, None starts a local one for the
    run."""

    workers: int = 2
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    address: str | None = None


def make_backend(
    backend: str | Backend,
    spec: ProblemSpec,
    *,
    problem: Any = None,
    batch: int = DEFAULT_EVAL_BATCH,
    trust_code: bool = False,
    device: Any = None,
    workers: Workers | None = None,
) -> Backend:
    """A backend by name for the problem `spec` (its supernetwork, data, precision,
    validation subset and racing): "inprocess" (pipelined,
    `batch` offspring at a time, evaluating `problem` when given) or "ray" (`workers`'
    actors, `batch` offspring each, each building its own evaluator from `spec`)."""
    if isinstance(backend, Backend):
        return backend
    if backend not in BACKENDS:
        raise SearchError(f"unknown backend {backend!r}: {' or '.join(BACKENDS)}")
    if batch < 1:
        raise SearchError("need batch >= 1")
    if backend == "inprocess":
        if problem is None:
            problem, _ = problem_from_spec(spec, trust_code=trust_code, device=device)
        return InProcessBackend(lambda: problem.evaluate, batch, pipeline=True)
    factory = evaluator_factory(
        spec.supernet, spec.data, spec.split, trust_code=trust_code, device=device,
        amp=spec.amp, subset=spec.subset, fidelity=spec.fidelity, confidence=spec.confidence,
    )  # fmt: skip
    w = workers or Workers()
    return RayBackend(
        factory,
        num_workers=w.workers,
        num_gpus=w.gpus_per_worker,
        num_cpus=w.cpus_per_worker,
        address=w.address,
        per_worker=batch,
    )

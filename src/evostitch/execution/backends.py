"""A backend by name, as the CLI and the API choose one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import SearchError
from ..evolution.backend import Backend
from ..evolution.stitching import evaluator_factory, problem_from_spec, problem_spec
from .inprocess import InProcessBackend
from .ray_backend import RayBackend

BACKENDS = ("inprocess", "ray")
DEFAULT_EVAL_BATCH = 8  # offspring evaluated together share their common computation


def make_backend(
    backend: str | Backend,
    supernet: str | Path,
    data: str,
    *,
    batch: int = DEFAULT_EVAL_BATCH,
    workers: int = 2,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    ray_address: str | None = None,
    problem: Any = None,
    trust_code: bool = False,
    device: Any = None,
    amp: str | None = None,
    subset: int | None = None,
    race: dict[str, Any] | None = None,
) -> Backend:
    """A backend by name: "inprocess" (pipelined, `batch` offspring at a time, evaluating
    `problem` when given) or "ray" (`workers` actors, `batch` offspring each); `subset`:
    evaluate on that many seeded validation samples; `race`: a problem spec whose
    "fidelity" and "confidence" say whether and how offspring are raced."""
    fidelity = {k: race[k] for k in ("fidelity", "confidence") if k in race} if race else {}
    if isinstance(backend, Backend):
        return backend
    if backend not in BACKENDS:
        raise SearchError(f"unknown backend {backend!r}: {' or '.join(BACKENDS)}")
    if batch < 1:
        raise SearchError("need batch >= 1")
    if backend == "inprocess":
        if problem is None:
            spec = problem_spec(supernet, data, amp=amp, subset=subset, **fidelity)
            problem, _ = problem_from_spec(spec, trust_code=trust_code, device=device)
        return InProcessBackend(lambda: problem.evaluate, batch, pipeline=True)
    return RayBackend(
        evaluator_factory(
            supernet,
            data,
            trust_code=trust_code,
            device=device,
            amp=amp,
            subset=subset,
            **fidelity,
        ),
        num_workers=workers,
        num_gpus=gpus_per_worker,
        num_cpus=cpus_per_worker,
        address=ray_address,
        per_worker=batch,
    )

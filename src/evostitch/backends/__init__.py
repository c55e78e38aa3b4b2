"""Where evaluations run: in this process, or on a pool of Ray workers.

A backend takes `(ticket, genotype)` submissions and hands back `Result`s as they
complete. Workers are built from a picklable *evaluator factory*, a zero-argument
callable returning the evaluate function (e.g. a `functools.partial` of a top-level
function). It is called once per worker, so a worker loads its model and data once and
then evaluates many genotypes.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from evostitch.search.base import Genotype, Objectives

Evaluator = Callable[[Genotype], Objectives]
EvaluatorFactory = Callable[[], Evaluator]


@dataclass(frozen=True)
class Result:
    """A finished evaluation: objectives, or None and `error` (one line) when it failed."""

    ticket: int
    genotype: Genotype
    objectives: Objectives | None
    error: str | None = None
    seconds: float = 0.0
    worker: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0


class Backend(ABC):
    """Runs evaluations. `capacity` is how many it wants in flight to keep its workers busy."""

    capacity: int = 1

    @abstractmethod
    def submit(self, ticket: int, genotype: Genotype) -> None:
        """Start evaluating `genotype`; its Result will carry `ticket`."""

    @abstractmethod
    def results(self, timeout: float | None = None) -> list[Result]:
        """Results completed so far, waiting up to `timeout` seconds for at least one."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release workers. Idempotent."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def error_line(exc: BaseException) -> str:
    """`Type: message` on one line, with the innermost frame that raised it."""
    text = " ".join(str(exc).split()) or "(no message)"
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" [{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}]" if frames else ""
    return f"{type(exc).__name__}: {text}{where}"


def evaluate_one(evaluate: Evaluator, ticket: int, genotype: Genotype, worker: str) -> Result:
    """Run one evaluation, turning an exception into a failed Result."""
    started = time.time()
    t0 = time.perf_counter()
    try:
        objectives: Objectives | None = tuple(float(v) for v in evaluate(genotype))
        error = None
    except Exception as e:
        objectives, error = None, error_line(e)
    seconds = time.perf_counter() - t0
    return Result(ticket, genotype, objectives, error, seconds, worker, started, time.time())


from evostitch.backends.inprocess import InProcessBackend  # noqa: E402
from evostitch.backends.ray_backend import RayBackend  # noqa: E402

__all__ = [
    "Backend",
    "Evaluator",
    "EvaluatorFactory",
    "InProcessBackend",
    "RayBackend",
    "Result",
    "evaluate_one",
]

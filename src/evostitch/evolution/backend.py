"""The contract between the search loop and where evaluations run.

A backend takes `(ticket, genotype)` submissions and hands back `Result`s as they
complete. Workers are built from a picklable *evaluator factory*, a zero-argument
callable returning the evaluate function (e.g. a `functools.partial` of a top-level
function). It is called once per worker, so a worker loads its model and data once and
then evaluates many genotypes.

Racing (`evostitch.evaluation.racing`): the loop sets `Backend.context` (the front and the
steering floor) before it submits; a backend hands the context current when a batch
leaves to `evaluate_batch`, which races the batch when the evaluate function is a
`RacingEvaluate`. A stopped offspring's Result carries the images it saw and the upper
bound on its metric.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from evostitch.errors import SearchError
from evostitch.evolution.base import Genotype, Objectives

EvaluateFn = Callable[[Genotype], Objectives]
EvaluatorFactory = Callable[[], EvaluateFn]


class RaceOutcome(Protocol):
    """What a race gives one offspring (`evaluation.racing.Outcome`)."""

    @property
    def objectives(self) -> Sequence[float]: ...
    @property
    def images(self) -> int | None: ...
    @property
    def bound(self) -> float | None: ...


@runtime_checkable
class RacingEvaluate(Protocol):
    """An evaluate function that races (`evaluation.racing.RacingEvaluator`): `races` is
    true and `race_many` races a batch against a `Backend.context` (None: in full)."""

    races: bool

    def __call__(self, genotype: Genotype) -> Objectives: ...

    def race_many(
        self, genotypes: Sequence[Sequence[int]], context: dict[str, Any] | None
    ) -> Sequence[RaceOutcome]: ...


def races(evaluate: object) -> bool:
    """Whether `evaluate` is a `RacingEvaluate` that says it races."""
    return isinstance(evaluate, RacingEvaluate) and bool(evaluate.races)


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
    images: int | None = None  # a raced offspring stopped after this many images
    bound: float | None = None  # ... with this upper bound on its metric


@dataclass(frozen=True)
class FolderFactory:
    """An evaluator factory that builds from a saved supernetwork's folder: `load(folder)`.
    Picklable when `load` is (a `functools.partial` of a top-level function); a backend
    whose workers may not read `folder` hands `load` a copy of it instead
    (`evostitch.execution.shipping`)."""

    folder: str
    load: Callable[[str], EvaluateFn]

    def __call__(self) -> EvaluateFn:
        return self.load(self.folder)


@dataclass(frozen=True)
class Pool:
    """A backend's workers as they are now: ready to evaluate, still starting (or waiting
    for the cluster's resources), and the machines (nodes) the ready ones are on."""

    ready: int
    starting: int = 0
    nodes: int = 1


class Backend(ABC):
    """Runs evaluations. `capacity` is how many it wants in flight to keep its workers busy.
    `context`: what a racing evaluator races against (None: evaluate in full)."""

    capacity: int = 1
    context: dict | None = None

    def pool(self) -> Pool | None:
        """Its workers now (None: evaluations run in this process)."""
        return None

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


def evaluate_one(evaluate: EvaluateFn, ticket: int, genotype: Genotype, worker: str) -> Result:
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


def evaluate_batch(
    evaluate: EvaluateFn, items: list[tuple[int, Genotype]], worker: str, context: Any = None
) -> list[Result]:
    """Evaluate `(ticket, genotype)` items together through `evaluate.evaluate_many`, if the
    evaluator has one (each Result gets an equal share of the time), else one at a time;
    raced against `context` through `evaluate.race_many` when both are there (a
    `RacingEvaluate`).

    If the batch call fails, the items are evaluated one at a time, so that a failure is
    reported for its own genotype only.
    """
    if isinstance(evaluate, RacingEvaluate) and context is not None:
        started, t0 = time.time(), time.perf_counter()
        try:
            outcomes = list(evaluate.race_many([g for _, g in items], context))
        except Exception:
            outcomes = []
        if len(outcomes) == len(items):
            seconds, now = (time.perf_counter() - t0) / len(items), time.time()
            return [
                Result(t, g, tuple(map(float, o.objectives)), None, seconds, worker, started,
                       now, o.images, o.bound)
                for (t, g), o in zip(items, outcomes, strict=True)
            ]  # fmt: skip
    many = getattr(evaluate, "evaluate_many", None)
    if many is not None and len(items) > 1:
        started, t0 = time.time(), time.perf_counter()
        try:
            values = [tuple(float(v) for v in o) for o in many([g for _, g in items])]
        except Exception:
            values = []
        if len(values) == len(items):
            seconds, now = (time.perf_counter() - t0) / len(items), time.time()
            return [
                Result(t, g, o, None, seconds, worker, started, now)
                for (t, g), o in zip(items, values, strict=True)
            ]
    return [evaluate_one(evaluate, t, g, worker) for t, g in items]


class SerialBackend(Backend):
    """Evaluates in the calling thread, in ticket order, with an evaluator built once.

    `batch_size` (default 1) is how many submissions it accepts before `results()`
    evaluates them all, together when the evaluator has `evaluate_many` (see
    `evaluate_batch`); it also lets a deterministic Ray schedule with the same batch size
    be checked against this backend exactly. What the search loop uses when given none.
    """

    def __init__(self, evaluator_factory: EvaluatorFactory, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise SearchError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.capacity = batch_size
        self._factory = evaluator_factory
        self._evaluate: EvaluateFn | None = None
        self._queue: list[tuple[int, Genotype]] = []
        self._worker = worker_name()

    def submit(self, ticket: int, genotype: Genotype) -> None:
        self._queue.append((ticket, tuple(genotype)))

    def results(self, timeout: float | None = None) -> list[Result]:
        if not self._queue:
            return []
        return self._run(self._take(), self.context)

    def _take(self) -> list[tuple[int, Genotype]]:
        batch, self._queue = sorted(self._queue), []
        return batch

    def _run(self, batch: list[tuple[int, Genotype]], context: Any = None) -> list[Result]:
        if self._evaluate is None:
            self._evaluate = self._factory()
        return evaluate_batch(self._evaluate, batch, self._worker, context)

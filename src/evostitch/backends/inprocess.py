"""The default backend: evaluations run one after the other in the calling process."""

from __future__ import annotations

import time

from evostitch.backends import (
    Backend,
    Evaluator,
    EvaluatorFactory,
    Result,
    evaluate_one,
    worker_name,
)
from evostitch.search.base import Genotype


def evaluate_batch(
    evaluate: Evaluator, items: list[tuple[int, Genotype]], worker: str
) -> list[Result]:
    """Evaluate `(ticket, genotype)` items together through `evaluate.evaluate_many`, if the
    evaluator has one (each Result gets an equal share of the time), else one at a time.

    If the batch call fails, the items are evaluated one at a time, so that a failure is
    reported for its own genotype only.
    """
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


class InProcessBackend(Backend):
    """Evaluates synchronously, in ticket order, with an evaluator built once.

    `batch_size` (default 1) is how many submissions it accepts before `results()`
    evaluates them all, together when the evaluator has `evaluate_many` (see
    `evaluate_batch`); it also lets a deterministic Ray schedule with the same batch size
    be checked against this backend exactly.
    """

    def __init__(self, evaluator_factory: EvaluatorFactory, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.capacity = batch_size
        self._factory = evaluator_factory
        self._evaluate = None
        self._queue: list[tuple[int, Genotype]] = []
        self._worker = worker_name()

    def submit(self, ticket: int, genotype: Genotype) -> None:
        self._queue.append((ticket, tuple(genotype)))

    def results(self, timeout: float | None = None) -> list[Result]:
        if not self._queue:
            return []
        if self._evaluate is None:
            self._evaluate = self._factory()
        batch, self._queue = sorted(self._queue), []
        return evaluate_batch(self._evaluate, batch, self._worker)

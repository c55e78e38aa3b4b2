"""The default backend: evaluations run one after the other in the calling process."""

from __future__ import annotations

from evostitch.backends import Backend, EvaluatorFactory, Result, evaluate_one, worker_name
from evostitch.search.base import Genotype


class InProcessBackend(Backend):
    """Evaluates synchronously, in ticket order, with an evaluator built once.

    `batch_size` (default 1) is how many submissions it accepts before `results()`
    evaluates them all; it exists so that a deterministic Ray schedule with the same batch
    size can be checked against this backend exactly.
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
        return [evaluate_one(self._evaluate, t, g, self._worker) for t, g in batch]

"""The default backend: evaluations run one after the other in the calling process.

With `pipeline=True` they run on one background thread instead, a batch ahead: while a
batch evaluates, the search loop stores the previous batch's results, tells the
algorithm and asks for the next batch, so its bookkeeping hides behind the evaluation.
When no batch is out (all returned to the loop, e.g. after a barrier in the algorithm),
the first submission starts at once rather than waiting for a full batch. Batches are
formed by what the loop did, never by timing, and returned in submission order, so a
seeded run stays reproducible.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future

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
    """Evaluates in ticket order, with an evaluator built once.

    `batch_size` (default 1) is how many submissions it accepts before `results()`
    evaluates them all, together when the evaluator has `evaluate_many` (see
    `evaluate_batch`); it also lets a deterministic Ray schedule with the same batch size
    be checked against this backend exactly. `pipeline=True` evaluates on a background
    thread with two batches in flight (see the module docstring); the evaluator is then
    built and called on that thread, and `results()` waits for the oldest batch whatever
    its `timeout`.
    """

    def __init__(
        self, evaluator_factory: EvaluatorFactory, batch_size: int = 1, pipeline: bool = False
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.capacity = 2 * batch_size if pipeline else batch_size
        self._factory = evaluator_factory
        self._evaluate = None
        self._queue: list[tuple[int, Genotype]] = []
        self._worker = worker_name()
        self._running: deque[Future] = deque()
        self._thread: threading.Thread | None = None
        self._todo: queue.Queue[tuple[Future, list[tuple[int, Genotype]]] | None] = queue.Queue()
        if pipeline:  # a daemon: Ctrl-C does not wait for the batch it is evaluating
            self._thread = threading.Thread(target=self._serve, name="evostitch-eval", daemon=True)
            self._thread.start()

    def submit(self, ticket: int, genotype: Genotype) -> None:
        self._queue.append((ticket, tuple(genotype)))
        if self._thread is not None and (len(self._queue) >= self.batch_size or not self._running):
            self._start()  # a full batch, or the first one while none is out: no waiting

    def results(self, timeout: float | None = None) -> list[Result]:
        if self._thread is None:
            if not self._queue:
                return []
            return self._run(self._take())
        if self._queue:  # the loop submits no more for now: a partial batch goes too
            self._start()
        if not self._running:
            return []
        return self._running.popleft().result()  # no timeout: what the loop asks next
        # must not depend on how long an evaluation took

    def close(self) -> None:
        """Drop the batches not started; the one evaluating (if any) is abandoned."""
        if self._thread is not None:
            for future in self._running:
                future.cancel()
            self._running.clear()
            self._todo.put(None)
            self._thread = None

    def _take(self) -> list[tuple[int, Genotype]]:
        batch, self._queue = sorted(self._queue), []
        return batch

    def _start(self) -> None:
        future: Future = Future()
        self._running.append(future)
        self._todo.put((future, self._take()))

    def _serve(self) -> None:
        """The evaluation thread: batches in the order they were started."""
        while (item := self._todo.get()) is not None:
            future, batch = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._run(batch))
            except BaseException as exc:  # handed to results()
                future.set_exception(exc)

    def _run(self, batch: list[tuple[int, Genotype]]) -> list[Result]:
        if self._evaluate is None:
            self._evaluate = self._factory()
        return evaluate_batch(self._evaluate, batch, self._worker)

"""In-process evaluation, optionally pipelined on a background thread.

With `pipeline=True` evaluations run on one background thread, a batch ahead: while a
batch evaluates, the search loop stores the previous batch's results, tells the
algorithm and asks for the next batch, so its bookkeeping hides behind the evaluation.
When no batch is out (all returned to the loop, e.g. after a barrier in the algorithm),
the first submission starts at once rather than waiting for a full batch. Batches are
formed by what the loop did, never by timing, and returned in submission order, so a
seeded run stays reproducible. Without it, this is the search loop's `SerialBackend`.
"""

from __future__ import annotations

import atexit
import queue
import sys
import threading
from collections import deque
from concurrent.futures import Future
from typing import Any

from ..evolution.backend import EvaluatorFactory, Result, SerialBackend
from ..evolution.base import Genotype

JOIN_SECONDS = 10.0  # close(): the most it waits for an idle evaluation thread to end
_BUSY: set[threading.Thread] = set()  # closed while evaluating: joined at exit
NOTE_SECONDS = 2.0  # at exit, a longer wait for them is announced
WAIT_NOTE = "waiting for the evaluation in progress to end (Ctrl-C again to leave at once)"


def _join_busy_threads() -> None:
    """At interpreter exit, wait for the evaluation threads `close()` left evaluating a
    batch. A daemon thread still inside torch when the interpreter finalizes is ended by
    pthread_exit, which aborts the process from a C++ frame ("terminate called without
    an active exception", exit 134), e.g. after a full disk ended a search in one line."""
    try:
        while _BUSY:
            thread = _BUSY.pop()
            thread.join(timeout=NOTE_SECONDS)
            if thread.is_alive():
                print(WAIT_NOTE, file=sys.stderr, flush=True)
                thread.join()
    except KeyboardInterrupt:  # a second Ctrl-C: the user prefers to leave at once
        pass


def _join_at_exit(thread: threading.Thread) -> None:
    if not _BUSY:  # the first one: the exit hook (atexit runs before finalization)
        atexit.register(_join_busy_threads)
    _BUSY.add(thread)


class InProcessBackend(SerialBackend):
    """Evaluates in ticket order with an evaluator built once, `batch_size` at a time.

    `pipeline=True` evaluates on a background thread with two batches in flight (see the
    module docstring); the evaluator is then built and called on that thread, and
    `results()` waits for the oldest batch whatever its `timeout`.
    """

    def __init__(
        self, evaluator_factory: EvaluatorFactory, batch_size: int = 1, pipeline: bool = False
    ) -> None:
        super().__init__(evaluator_factory, batch_size)
        self.capacity = 2 * batch_size if pipeline else batch_size
        self._running: deque[Future] = deque()
        self._thread: threading.Thread | None = None
        self._todo: queue.Queue[tuple[Future, list[tuple[int, Genotype]], Any] | None]
        self._todo = queue.Queue()
        if pipeline:  # a daemon: Ctrl-C does not wait for the batch it is evaluating
            self._thread = threading.Thread(target=self._serve, name="evostitch-eval", daemon=True)
            self._thread.start()

    def submit(self, ticket: int, genotype: Genotype) -> None:
        super().submit(ticket, genotype)
        if self._thread is not None and (len(self._queue) >= self.batch_size or not self._running):
            self._start()  # a full batch, or the first one while none is out: no waiting

    def results(self, timeout: float | None = None) -> list[Result]:
        if self._thread is None:
            return super().results(timeout)
        if self._queue:  # the loop submits no more for now: a partial batch goes too
            self._start()
        if not self._running:
            return []
        return self._running.popleft().result()  # no timeout: what the loop asks next
        # must not depend on how long an evaluation took

    def close(self) -> None:
        """Drop the batches not started; the one evaluating (if any) is abandoned. An idle
        evaluation thread (the end of a search) is joined: left to end during interpreter
        shutdown, it could free torch tensors there and abort the process."""
        if self._thread is not None:
            for future in self._running:
                future.cancel()
            busy = any(future.running() for future in self._running)
            self._running.clear()
            self._todo.put(None)
            if not busy:  # only cancelled batches before the sentinel: it ends at once
                self._thread.join(timeout=JOIN_SECONDS)
            else:
                _join_at_exit(self._thread)
            self._thread = None

    def _start(self) -> None:
        future: Future = Future()
        self._running.append(future)
        self._todo.put((future, self._take(), self.context))  # the context as it leaves

    def _serve(self) -> None:
        """The evaluation thread: batches in the order they were started."""
        while (item := self._todo.get()) is not None:
            future, batch, context = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._run(batch, context))
            except BaseException as exc:  # handed to results()
                future.set_exception(exc)

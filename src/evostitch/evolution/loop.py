"""The search loop: ask the algorithm, evaluate through a backend, store, tell, checkpoint.

Rules the loop keeps:

- The backend is kept full: the loop asks until `backend.capacity` evaluations are in
  flight (or the algorithm answers None: it waits for results).
- A candidate whose canonical genotype is stored is told at once from the cache; one whose
  canonical genotype is being evaluated waits for that evaluation. Both count as cache
  hits; neither is evaluated. Algorithms with a memo of their own (ours) skip most known
  networks before asking (`memo_hits`); the loop hands them the stored rows first
  (`Algorithm.remember`), so a resumed algorithm knows what was evaluated before.
- The budget counts *performed* evaluations: rows in the run's database, across resumes.
- Guards against an algorithm that only produces cache hits (`LoopLimits`): it stops after
  `max_requests` asks in one call (default 20 x budget) or `max_consecutive_hits` cache
  hits in a row (default 10,000); `SearchResult.stopped` says why it stopped.
- A failed evaluation (the evaluator raised, returned the wrong number of objectives or a
  non-finite value, or its worker kept dying) is stored with status "failed", printed as
  one line, and told to the algorithm as the worst objectives (+inf on every objective;
  our algorithms rank such a solution below all others). Within a call it is served
  from the cache like any stored row; a later call (a resume: the data may have been
  fixed since) evaluates every stored failure once more, first (`retry_failed`). The
  new evaluation replaces the failed row in place (same id), so the run still holds one
  row per network and the budget, which counts rows, is unchanged: a failure spent one
  evaluation of the budget when it happened, and its retries spend none. A retry that
  succeeds is handed to the algorithm (`Algorithm.remember`) and to racing's front.
- The database is the source of truth. Every row is queued for commit as soon as it is
  stored, and committed by the store's writer thread while the next evaluation runs; the
  algorithm's checkpoint is written every `checkpoint_every` evaluations (queued after
  the rows, on the same thread) and at the end, so after a SIGKILL it may lag the
  database (which may lack the rows still queued, normally none or one). When
  `run_search` returns or raises, every row is committed. A resumed algorithm that asks
  again for a genotype stored after its checkpoint gets it from the cache, free.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from evostitch.errors import RunError, SearchError
from evostitch.evolution.archive import nondominated
from evostitch.evolution.backend import Backend, Result, SerialBackend, races
from evostitch.evolution.base import Algorithm, Genotype, Problem, steering_floor
from evostitch.evolution.cache import CacheCounters, EvaluationCache
from evostitch.evolution.progress import SearchView
from evostitch.evolution.race_front import RaceFront, race_counts
from evostitch.evolution.store import EvaluationRecord, RunConfig, RunStore

CHECKPOINT_FORMAT = "evostitch-checkpoint"


@dataclass
class SearchResult:
    """Counters over the whole run (across resumes), the archive, and how this call went.

    `front` is the non-dominated set of the stored (ok) rows: the database's view, which
    holds even when the algorithm's own `archive` lags after a crash. `memo_hits`: known
    networks the algorithm skipped itself, without asking (across resumes).
    """

    requested: int
    performed: int
    cache_hits: int
    failed: int
    evaluated_now: int
    wall_seconds: float
    stopped: str
    archive: Any = None
    front: list[EvaluationRecord] = field(default_factory=list)
    memo_hits: int = 0
    raced: int = 0  # racing (evolution.race_front): evaluations raced, of them stopped early,
    raced_stopped: int = 0  # and the images that saved against scoring them all in full
    images_saved: int = 0
    retried: int = 0  # stored failures evaluated again by this call (rows replaced, not added)


def restore_from_checkpoint(store: RunStore, algorithm: Algorithm) -> bool:
    """Load the algorithm's state from the run's checkpoint; False if there is none yet."""
    checkpoint = store.load_checkpoint()
    if checkpoint is None or "state" not in checkpoint:
        return False
    if checkpoint.get("algorithm") != algorithm.name:
        raise RunError(
            f"{store.path} was checkpointed by algorithm {checkpoint.get('algorithm')!r},"
            f" not {algorithm.name!r}"
        )
    try:
        algorithm.load_state_dict(checkpoint["state"])
    except (LookupError, TypeError, ValueError, AttributeError, ArithmeticError, SearchError) as e:
        why = " ".join(f"{type(e).__name__}: {e}".split())[:200]  # hand-edited, crafted, or old
        raise RunError(
            f"{store.path}: the checkpoint does not fit algorithm {algorithm.name!r} ({why});"
            " delete checkpoint.json to restart the algorithm from the stored evaluations,"
            " which are intact"
        ) from None
    return True


@dataclass(frozen=True)
class LoopLimits:
    """`run_search`'s guards and pace: at most `max_requests` asks in one call (None: 20
    x budget) and `max_consecutive_hits` cache hits in a row; results polled every
    `poll_seconds`; stored failures evaluated once more first (`retry_failed`)."""

    max_requests: int | None = None
    max_consecutive_hits: int = 10_000
    poll_seconds: float = 0.25
    retry_failed: bool = True


def run_search(
    problem: Problem,
    algorithm: Algorithm,
    store: RunStore,
    backend: Backend | None = None,
    budget: int | None = None,
    *,
    checkpoint_every: int = 100,
    progress: bool = True,
    limits: LoopLimits | None = None,
) -> SearchResult:
    """Search until `budget` evaluations are stored (default: the run config's budget).

    `backend` defaults to evaluating `problem.evaluate` in this process. The store's rows
    pre-fill the cache, so calling this on a resumed store never re-evaluates a stored
    evaluation, except the failed ones, evaluated once more first (`limits.retry_failed`).
    """
    budget = store.config.budget if budget is None else budget
    limits = limits or LoopLimits()
    if limits.max_requests is None:
        limits = dataclasses.replace(limits, max_requests=20 * budget)
    backend = backend or SerialBackend(lambda: problem.evaluate)
    cache = EvaluationCache(problem, store)
    for stored in cache.records():
        algorithm.remember(stored.canonical, cache.told(stored))
    _restore_counters(store, cache.counters)
    loop = _Loop(problem, algorithm, cache, backend, budget, limits)
    start, performed_before = time.perf_counter(), cache.counters.performed
    last_checkpoint = cache.counters.performed
    view = SearchView(progress, budget, backend.capacity, algorithm, cache, performed_before)
    try:
        poll = limits.poll_seconds
        retried = _retry(algorithm, cache, backend, loop.racing, view, poll, limits.retry_failed)
        while True:
            loop.fill()
            view.update(cache.counters, performed_before, len(loop.submitted), backend.pool())
            if not loop.submitted:
                loop.stopped = loop.stopped or ("budget" if loop.remaining() <= 0 else "algorithm")
                break
            loop.collect(view)
            if cache.counters.performed - last_checkpoint >= checkpoint_every:
                _checkpoint(store, algorithm, cache.counters, later=True)
                last_checkpoint = cache.counters.performed
    except BaseException:  # (Ctrl-C too) the last periodic checkpoint stays: consistent
        with contextlib.suppress(Exception):  # a failed write is raised by store.close()
            store.flush()
        raise
    finally:
        view.close(cache.counters, performed_before, len(loop.submitted), backend.pool())
    _checkpoint(store, algorithm, cache.counters)
    c = cache.counters
    return SearchResult(
        requested=c.requested,
        performed=c.performed,
        cache_hits=c.cache_hits,
        failed=c.failed,
        evaluated_now=c.performed - performed_before,
        wall_seconds=time.perf_counter() - start,
        stopped=loop.stopped,
        archive=getattr(algorithm, "archive", None),
        front=nondominated(cache.records()),
        memo_hits=algorithm.memo_hits,
        raced=(counts := race_counts(cache.records()))["raced"],
        raced_stopped=counts["stopped"],
        images_saved=counts["saved"],
        retried=retried,
    )


class _Loop:
    """What `run_search` has in flight: tickets submitted to the backend and the
    candidates waiting on each canonical genotype, with the guards' counts."""

    def __init__(
        self,
        problem: Problem,
        algorithm: Algorithm,
        cache: EvaluationCache,
        backend: Backend,
        budget: int,
        limits: LoopLimits,
    ) -> None:
        self.problem, self.algorithm, self.cache = problem, algorithm, cache
        self.backend, self.budget, self.limits = backend, budget, limits
        self.submitted: dict[int, Genotype] = {}  # ticket given to the backend -> canonical
        self.waiting: dict[Genotype, list[int]] = {}  # canonical in flight -> tickets
        self.asked, self.hits_in_a_row, self.stopped = 0, 0, ""
        self.racing = (
            RaceFront(problem.metric_index, cache.records()) if races(problem.evaluate) else None
        )

    def remaining(self) -> int:
        return self.budget - self.cache.counters.performed - len(self.submitted)

    def fill(self) -> None:
        """Ask until the backend is full, the budget is in flight or a guard stops it;
        known networks are told from the cache or wait for the one in flight."""
        algorithm, cache, backend = self.algorithm, self.cache, self.backend
        if self.racing is not None:  # the front and floor as they are now (race_front)
            backend.context = self.racing.context(steering_floor(algorithm))
        while not self.stopped and len(self.submitted) < backend.capacity and self.remaining() > 0:
            candidate = algorithm.ask()
            if candidate is None:
                break
            self.asked += 1
            canonical, record = cache.lookup(candidate.genotype)
            if record is not None:
                self.hits_in_a_row += 1
                algorithm.tell(candidate.ticket, cache.told(record))
            elif canonical in self.waiting:
                self.hits_in_a_row += 1
                cache.count_hit()
                self.waiting[canonical].append(candidate.ticket)
            else:
                self.hits_in_a_row = 0
                backend.submit(candidate.ticket, candidate.genotype)
                self.submitted[candidate.ticket] = canonical
                self.waiting[canonical] = [candidate.ticket]
            if self.asked >= self.limits.max_requests:
                self.stopped = "max_requests"
            elif self.hits_in_a_row >= self.limits.max_consecutive_hits:
                self.stopped = "cache_hits"

    def collect(self, view: SearchView) -> None:
        """Store the results that came back and tell every candidate waiting on them."""
        for result in self.backend.results(timeout=self.limits.poll_seconds):
            canonical = self.submitted.pop(result.ticket)
            record = self.cache.add(_record(result, canonical, self.problem.n_objectives))
            if self.racing is not None:
                self.racing.add(record)
            if not record.ok:
                view.failure(record)
            for ticket in self.waiting.pop(canonical):
                self.algorithm.tell(ticket, self.cache.told(record))


def resume_search(
    path: str | os.PathLike[str],
    problem: Problem,
    algorithm_factory: Callable[[RunConfig], Algorithm],
    backend: Backend | None = None,
    budget: int | None = None,
    **options: Any,
) -> SearchResult:
    """Continue the run in `path` to its budget without re-evaluating anything stored.

    `algorithm_factory` rebuilds the algorithm from the run's config (name, params, seed);
    its state is then restored from checkpoint.json when there is one. A `budget` becomes
    the run's own (config.json), so a finished run can be searched further; the
    algorithm keeps its parameters (its steering floor stays where the old budget left
    it). `options` are passed to `run_search`.
    """
    with RunStore.open(path) as store:
        if budget is not None and budget != store.config.budget:
            store.set_budget(budget)
        try:
            algorithm = algorithm_factory(store.config)
        except (TypeError, ValueError, OverflowError) as e:  # config.json's params, crafted
            why = " ".join(str(e).split())[:200]
            raise RunError(
                f"{store.path}: config.json does not rebuild algorithm"
                f" {store.config.algorithm!r} ({type(e).__name__}: {why})"
            ) from None
        restore_from_checkpoint(store, algorithm)
        return run_search(problem, algorithm, store, backend, **options)


def _record(result: Result, canonical: Genotype, n_objectives: int) -> EvaluationRecord:
    objectives, error = result.objectives, result.error
    if objectives is not None and len(objectives) != n_objectives:
        objectives, error = None, f"expected {n_objectives} objectives, got {len(objectives)}"
    elif objectives is not None and not all(math.isfinite(v) for v in objectives):
        objectives, error = None, f"objectives are not finite: {objectives}"
    return EvaluationRecord(
        genotype=tuple(result.genotype),
        canonical=canonical,
        objectives=objectives,
        error=error or (None if objectives is not None else "failed"),
        seconds=result.seconds,
        worker=result.worker,
        started_at=result.started_at,
        finished_at=result.finished_at,
        images=result.images if objectives is not None else None,
        bound=result.bound if objectives is not None else None,
    )


def _retry(
    algorithm: Algorithm,
    cache: EvaluationCache,
    backend: Backend,
    racing: RaceFront | None,
    view: SearchView,
    poll_seconds: float,
    enabled: bool = True,
) -> int:
    """Evaluate every stored failure once more, keeping the backend full; each result
    replaces its failed row (`EvaluationCache.replace`: same id, no row added, so the
    budget is untouched). Tickets are negative: never one the algorithm gave. Returns
    how many were retried."""
    todo = cache.failed() if enabled else []
    pending: dict[int, EvaluationRecord] = {}
    for n, failed in enumerate(todo, start=1):
        while len(pending) >= backend.capacity:
            _retried(backend.results(timeout=poll_seconds), pending, algorithm, cache, racing, view)
        if racing is not None:
            backend.context = racing.context(steering_floor(algorithm))
        backend.submit(-n, failed.genotype)
        pending[-n] = failed
    while pending:
        _retried(backend.results(timeout=poll_seconds), pending, algorithm, cache, racing, view)
    return len(todo)


def _retried(
    results: list[Result],
    pending: dict[int, EvaluationRecord],
    algorithm: Algorithm,
    cache: EvaluationCache,
    racing: RaceFront | None,
    view: SearchView,
) -> None:
    """Store the retries that came back, tell the algorithm and racing those that worked."""
    for result in results:
        failed = pending.pop(result.ticket)
        record = cache.replace(_record(result, failed.canonical, cache.problem.n_objectives))
        if record.ok:
            algorithm.remember(record.canonical, cache.told(record))
            if racing is not None:
                racing.add(record)
        else:
            view.failure(record)


def _checkpoint(
    store: RunStore, algorithm: Algorithm, counters: CacheCounters, later: bool = False
) -> None:
    """Save the algorithm's checkpoint; `later`: on the store's writer thread."""
    save = store.save_checkpoint_later if later else store.save_checkpoint
    save(
        {
            "format": CHECKPOINT_FORMAT,
            "algorithm": algorithm.name,
            "rows": counters.performed,
            "counters": asdict(counters),
            "saved_at": time.time(),
            "state": algorithm.state_dict(),
        }
    )


def _restore_counters(store: RunStore, counters: CacheCounters) -> None:
    """Requests and hits come from the checkpoint; rows stored after it count as requests."""
    checkpoint = store.load_checkpoint() or {}  # its types checked by the store
    saved = checkpoint.get("counters", {})
    counters.cache_hits = saved.get("cache_hits", 0)
    rows_after = counters.performed - checkpoint.get("rows", 0)
    counters.requested = saved.get("requested", 0) + max(0, rows_after)

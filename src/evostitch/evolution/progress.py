"""The search's progress: a bar (when enabled) with the counters, the rate, the workers
busy (on Ray: how many are live, on how many nodes) and the archive's hypervolume, and
one line per failed evaluation (always)."""

from __future__ import annotations

import math
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from evostitch.evolution.backend import Pool
from evostitch.evolution.base import Algorithm
from evostitch.evolution.cache import CacheCounters, EvaluationCache
from evostitch.evolution.store import EvaluationRecord


class SearchView:
    """The progress bar (when enabled) and one line per failed evaluation (always)."""

    def __init__(
        self, enabled: bool, budget: int, capacity: int, algorithm, cache, done: int = 0
    ) -> None:
        self.console = Console(stderr=True)
        self.capacity = capacity
        self.algorithm: Algorithm = algorithm
        self.cache: EvaluationCache = cache
        self.start = time.perf_counter()
        self._hv, self._hv_time = "-", -math.inf
        self.progress = None
        if enabled:
            self.progress = Progress(
                TextColumn("[bold]search"),
                BarColumn(bar_width=10),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                # time left while it runs (from the recent rate), time taken once done
                TimeRemainingColumn(elapsed_when_finished=True),
                console=self.console,
            )
            # a resumed run starts at what it had done, so the rate is this run's own
            self.task = self.progress.add_task("search", total=budget, completed=done, info="")
            self.progress.start()

    def failure(self, record: EvaluationRecord) -> None:
        genotype = "".join(map(str, record.genotype))
        self.console.print(f"evaluation failed [{genotype}]: {record.error}", markup=False)

    def update(
        self, c: CacheCounters, performed_before: int, busy: int, pool: Pool | None = None
    ) -> None:
        if self.progress is None:
            return
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = (c.performed - performed_before) / elapsed
        info = (
            f"hits {c.cache_hits} memo {self.algorithm.memo_hits}"
            + (f" failed {c.failed}" if c.failed else "")  # fits 80 columns otherwise
            + f" {rate:.1f}/s busy {busy}/{self.capacity}{_workers(pool)} HV {self._hypervolume()}"
        )
        self.progress.update(self.task, completed=c.performed, info=info)

    def _hypervolume(self) -> str:
        """The archive's hypervolume, refreshed at most every 2 seconds; "-" if unknown.

        Either the archive's own `hypervolume()`, or, for an archive with an
        `objectives_array()`, the volume against a reference point derived from the
        evaluated reference solutions (`evostitch.evolution.archive`), as a fraction of
        the box from the problem's `ideal` when it has one (as reports show it). Any
        error: "-".
        """
        if time.perf_counter() - self._hv_time < 2.0:
            return self._hv
        self._hv_time = time.perf_counter()
        archive = getattr(self.algorithm, "archive", None)
        try:
            method = getattr(archive, "hypervolume", None)
            if callable(method):
                self._hv = f"{float(method()):.3g}"
            elif callable(getattr(archive, "objectives_array", None)):
                from evostitch.evolution.archive import (
                    box_volume,
                    hypervolume,
                    reference_point_from,
                )

                problem = self.cache.problem
                refs = [self.cache.lookup_stored(g) for g in problem.references]
                refs = [r.objectives for r in refs if r is not None and r.ok]
                if refs:
                    point = reference_point_from(refs)
                    hv = hypervolume(archive.objectives_array(), point)
                    if problem.ideal is None:
                        self._hv = f"{hv:.3g}"
                    else:
                        self._hv = f"{hv / box_volume(point, problem.ideal):.4f}"
        except Exception:  # an archive that needs arguments, a module still missing...
            self._hv = "-"
        return self._hv

    def close(
        self, c: CacheCounters, performed_before: int, busy: int, pool: Pool | None = None
    ) -> None:
        if self.progress is not None:
            self._hv_time = -math.inf
            self.update(c, performed_before, busy, pool)
            task = self.progress.tasks[0]
            if task.finished_time is None:  # stopped before its budget: time taken, too
                task.finished_time = task.elapsed
            self.progress.stop()


def _workers(pool: Pool | None) -> str:
    """What a backend's workers are, e.g. ` on 8 workers, 4 nodes` (and those starting)."""
    if pool is None:
        return ""
    starting = f" (+{pool.starting} starting)" if pool.starting else ""
    nodes = f", {pool.nodes} node{'s' * (pool.nodes != 1)}" if pool.ready else ""
    return f" on {pool.ready} worker{'s' * (pool.ready != 1)}{starting}{nodes}"

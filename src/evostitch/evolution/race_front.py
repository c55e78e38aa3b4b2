"""The run's race front: what a racing evaluator races against, kept by the search loop.

With racing (`evostitch.evaluation.racing`), an offspring stops as soon as a confidence
bound on its metric shows that it can neither enter the front nor reach the steering
floor. The loop hands every batch it submits the front *of the run store* at that moment
(the non-dominated full evaluations: a stopped one never counts) and the algorithm's
current floor (`RaceFront.context`). A stopped offspring is stored with the images it
saw and its upper bound, is never on the front (`archive.nondominated` skips it), and
the algorithm is told its metric *on the images it saw* (at most the upper bound:
`EvaluationCache.told`). The front dominates that value, or it is under the floor, so
it can neither enter the archive nor win over a front member. It is unbiased, as noisy
as the images it saw; the upper bound, the issue's first suggestion, sits 2-3 standard
errors above the truth and lets a dominated offspring win population slots by its
bound. Measured (benchmarks/time_to_front.py, lk-gomea, 120 evaluations, 2 seeds): final
hypervolume 1.000 and 0.958 of full's with the estimate, 0.986 and 0.961 with the
bound: no clear difference at that scale. Per algorithm:

- rs: archive only: a stopped offspring never enters it;
- ga: familial replacement compares the child's told value with its parents';
- gomea, lk-gomea: optimal mixing accepts a change that is not worse by the told value,
  forced improvements come from the archive (never a stopped offspring);
- nsga2: ranks by the told values: a stopped offspring is dominated by the front.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from evostitch.evolution.archive import dominates, weakly_dominates
from evostitch.evolution.base import Objectives
from evostitch.files import write_text_atomic

RACING = "racing.json"  # a raced run's counts, beside front.csv


class RaceFront:
    """The non-dominated objectives of the full evaluations stored so far."""

    def __init__(self, metric_index: int | None, records: Iterable[Any] = ()) -> None:
        self.metric_index = 0 if metric_index is None else metric_index
        self.points: list[Objectives] = []
        for record in records:
            self.add(record)

    def add(self, record: Any) -> None:
        """Offer a stored record; failed and stopped ones never count."""
        if not record.ok or getattr(record, "stopped", False):
            return
        f = tuple(record.objectives)
        if any(weakly_dominates(p, f) for p in self.points):
            return
        self.points = [p for p in self.points if not dominates(f, p)] + [f]

    def context(self, floor: float | None) -> dict[str, Any]:
        """What a racing evaluator is handed (JSON-able, small)."""
        return {
            "front": [list(p) for p in sorted(self.points)],
            "floor": floor,
            "metric_index": self.metric_index,
        }


def race_counts(records: Iterable[Any]) -> dict[str, int]:
    """Of the raced evaluations among `records`: how many (`raced`), how many stopped early
    (`stopped`), images scored (`images`) and images saved against scoring every raced one
    on the whole split (`saved`; the split's size is what a full race saw)."""
    raced = [r for r in records if r.ok and getattr(r, "images", None) is not None]
    total = max((r.images for r in raced), default=0)
    stopped = [r for r in raced if r.stopped]
    return {
        "raced": len(raced),
        "stopped": len(stopped),
        "images": sum(r.images for r in raced),
        "saved": sum(total - r.images for r in stopped),
    }


def save_race_counts(folder: Path, records: Iterable[Any]) -> Path | None:
    """RUN/racing.json: `race_counts` of a raced run (nothing for a run not raced)."""
    counts = race_counts(records)
    if not counts["raced"]:
        return None
    path = Path(folder) / RACING
    write_text_atomic(path, json.dumps(counts, indent=1) + "\n")
    return path

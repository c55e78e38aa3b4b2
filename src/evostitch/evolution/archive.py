"""Elitist archive of non-dominated solutions, and the indicators computed on it.

Objectives are minimised. The hypervolume comes from pymoo (moocore underneath); we
never compute it ourselves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np

from evostitch.errors import SearchError
from evostitch.evolution.base import Genotype, Objectives


class Solution(NamedTuple):
    genotype: Genotype
    objectives: Objectives


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Pareto dominance for minimisation: a is nowhere worse and somewhere better."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def weakly_dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True))


R = TypeVar("R")


def nondominated(records: Iterable[R]) -> list[R]:
    """The records (anything with `.ok` and `.objectives`, e.g. stored evaluations) that are
    ok, not stopped early by racing, and that no other dominates (minimisation; equal
    objectives are all kept)."""
    full = (r for r in records if r.ok and not getattr(r, "stopped", False))
    ranked = sorted(full, key=lambda r: r.objectives)
    front: list[R] = []
    for r in ranked:  # lexicographic order: only an earlier record can dominate a later one
        if not any(dominates(f.objectives, r.objectives) for f in front):
            front.append(r)
    return front


class Archive:
    """Non-dominated (genotype, objectives) pairs.

    A newcomer enters unless an archived solution weakly dominates it (so equal
    objective vectors are kept once, first come first served), its genotype is
    already archived, or an objective is not finite (a failed evaluation); entering
    removes what it dominates.

    Floor (adaptive steering): with `metric_index` set, objective `metric_index` holds
    the negated task metric. A solution whose metric (= -objective) is below `floor`
    is not admitted, and `set_floor()` removes archived ones that fall below it.
    """

    def __init__(self, metric_index: int | None = None, floor: float | None = None) -> None:
        self.metric_index = metric_index
        self.floor = floor
        self._solutions: list[Solution] = []
        self._genotypes: set[Genotype] = set()

    def __len__(self) -> int:
        return len(self._solutions)

    def __iter__(self) -> Iterator[Solution]:
        return iter(self._solutions)

    def __contains__(self, genotype: object) -> bool:
        return genotype in self._genotypes

    @property
    def solutions(self) -> list[Solution]:
        return list(self._solutions)

    def objectives_array(self) -> np.ndarray:
        """Objectives of the archived solutions as an (n, m) float array."""
        return np.array([s.objectives for s in self._solutions], dtype=float)

    def below_floor(self, objectives: Sequence[float]) -> bool:
        if self.floor is None or self.metric_index is None:
            return False
        return -objectives[self.metric_index] < self.floor

    def add(self, genotype: Sequence[int], objectives: Sequence[float]) -> bool:
        """Offer a solution; return whether it entered the archive."""
        g = tuple(map(int, genotype))
        f = tuple(float(v) for v in objectives)
        if g in self._genotypes or not all(map(math.isfinite, f)) or self.below_floor(f):
            return False
        if any(weakly_dominates(s.objectives, f) for s in self._solutions):
            return False
        kept = [s for s in self._solutions if not dominates(f, s.objectives)]
        for s in self._solutions:
            if dominates(f, s.objectives):
                self._genotypes.discard(s.genotype)
        self._solutions = kept
        self._solutions.append(Solution(g, f))
        self._genotypes.add(g)
        return True

    def set_floor(self, floor: float | None) -> int:
        """Set the metric floor and drop archived solutions under it; return how many."""
        self.floor = floor
        kept = [s for s in self._solutions if not self.below_floor(s.objectives)]
        removed = len(self._solutions) - len(kept)
        if removed:
            self._solutions = kept
            self._genotypes = {s.genotype for s in kept}
        return removed

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric_index": self.metric_index,
            "floor": self.floor,
            "solutions": [[list(s.genotype), list(s.objectives)] for s in self._solutions],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Archive:
        archive = cls(metric_index=data.get("metric_index"), floor=data.get("floor"))
        for g, f in data["solutions"]:
            sol = Solution(tuple(map(int, g)), tuple(map(float, f)))
            archive._solutions.append(sol)
            archive._genotypes.add(sol.genotype)
        return archive


def hypervolume(
    points: Sequence[Sequence[float]] | np.ndarray, ref_point: Sequence[float]
) -> float:
    """Hypervolume (minimisation) dominated by `points` and bounded by `ref_point` (pymoo).

    Points that do not dominate the reference point contribute nothing.
    """
    from pymoo.indicators.hv import HV

    ref = np.asarray(ref_point, dtype=float)
    pts = np.asarray(points, dtype=float).reshape(-1, len(ref))
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    return float(HV(ref_point=ref)(pts))


def box_volume(ref_point: Sequence[float], ideal: Sequence[float]) -> float:
    """Volume of the box between `ideal` and `ref_point`, the largest possible
    hypervolume (1.0 for an empty box, so that dividing by it is always safe)."""
    return float(np.prod(np.asarray(ref_point, float) - np.asarray(ideal, float))) or 1.0


def reference_point_from(
    references_objectives: Sequence[Sequence[float]], margin: float = 0.1
) -> tuple[float, ...]:
    """Hypervolume reference point from the reference solutions' (parents') objectives.

    Rule: per objective, take the worst (largest) value among the references and move
    it outwards by `margin` times its magnitude: `worst + margin * max(|worst|, 1e-12)`.
    For the usual (-accuracy, MACs) pair this means: offspring count toward the volume
    when their accuracy beats 90% of the weakest parent's and their cost stays under
    110% of the costliest reference (the ensemble). Every reference solution itself
    lies strictly inside, so the parents alone already have a positive hypervolume.
    """
    f = np.asarray(references_objectives, dtype=float)
    if f.ndim != 2 or len(f) == 0:
        raise SearchError("need at least one reference objective vector")
    worst = f.max(axis=0)
    return tuple(float(w + margin * max(abs(w), 1e-12)) for w in worst)

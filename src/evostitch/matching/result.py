"""What a matching returns: `MatchResult` for two DAGs, `Matching` for two networks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MatchResult:
    """A cycle-free matching: `pairs` (a, b, weight) in topological order of A."""

    pairs: list[tuple[str, str, float]]
    total: float
    optimal: bool  # False only when the time limit stopped the search
    nodes_explored: int  # branch-and-bound nodes, or dynamic-programming states
    seconds: float


@dataclass
class Matching(MatchResult):
    """A matching of two traced networks; `weight_seconds` is the time spent on weights."""

    weight_seconds: float = 0.0
    candidates: tuple[int, int] = (0, 0)

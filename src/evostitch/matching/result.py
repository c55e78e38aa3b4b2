"""What a matching returns: `MatchResult` for two DAGs (the solvers' pairs), `Matching`
for K >= 2 networks (groups, one node or None per parent)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

Group = tuple[Hashable | None, ...]


@dataclass
class MatchResult:
    """A cycle-free matching of two DAGs: `pairs` (a, b, weight) in topological order of A."""

    pairs: list[tuple[str, str, float]]
    total: float
    optimal: bool  # False only when the time limit stopped the search
    nodes_explored: int  # branch-and-bound nodes, or dynamic-programming states
    seconds: float


@dataclass
class Matching:
    """A cycle-free matching of K >= 2 parents: `groups` (a node or None per parent) in a
    topological order of the merge, `weights` per group. `optimal` is proven (K = 2, the
    DP, brute force, or the pairwise bound reached); `method` is "match_dags", "dp",
    "progressive" or "brute". For networks, `weight_seconds` is the time spent on weights
    and `candidates` the stitching points per parent."""

    groups: list[Group]
    weights: list[float]
    total: float
    optimal: bool
    method: str
    seconds: float
    nodes_explored: int = 0  # the two-DAG solver's branch-and-bound nodes or DP states
    weight_seconds: float = 0.0
    candidates: tuple[int, ...] = ()

    def rows(self) -> list[tuple]:
        """The groups with their weight last: `(node or None, ..., weight)`."""
        return [(*g, w) for g, w in zip(self.groups, self.weights, strict=True)]

"""Exact cycle-free matching of the points of two networks (METHOD.md section 2, step 3).

Problem: given DAGs A and B and weights w(a, b) > 0 on compatible pairs, choose pairs,
each node at most once, of maximum total weight such that merging each matched a with
its b leaves the union of A and B acyclic. The merged graph is acyclic iff the *pair
graph* is: one vertex per pair, an arc p -> q when a_p reaches a_q in A or b_p reaches
b_q in B. Cycles can run through several pairs (parallel branches), so every check is on
the whole merged graph, never only on pairwise crossings.

Two exact solvers; `method="auto"` (default) uses the first when it is small enough.

1. Dynamic programming over order ideals (`method="dp"`, module `dp`): exact, and well
   under a second on real networks, whose points form nearly a chain; its state space
   grows exponentially with the width of the graphs (many parallel branches), so beyond
   `DP_LIMITS["auto"]` "auto" switches to the branch and bound.
2. Branch and bound, as in the paper but exact (`method="bnb"`, module `bnb`), on the
   packed reachability of `reach`. Its docstring also explains the tie-breaking bonus
   (Ties) that `match_dags` adds to every weight.

`match` matches K >= 2 traced networks into groups (`multi.match_parents`; for two, the
pairs of `match_dags`), weighing each pair of parents with `similarity` (uniform or
CKA); `brute` holds the reference optima and acyclicity checks used by the tests.

The DP maximises the bonus-perturbed weights exactly when weights lie on a grid (the
bonus then only chooses among the optima: the one pairing similar depths), the plain
weights otherwise. Both solvers are deterministic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from fractions import Fraction

import networkx as nx
import numpy as np

from ..errors import DataError, MatchingError
from .brute import brute_force_match, brute_force_match_k, is_acyclic_merge
from .dp import DP_LIMITS, dp_match, past
from .multi import is_acyclic_merge_k, match_parents
from .reach import Reach, topological_order
from .result import Matching, MatchResult
from .similarity import Pair, cka_weights, compatible_pairs, uniform_weights

__all__ = [
    "MatchResult",
    "Matching",
    "brute_force_match",
    "brute_force_match_k",
    "is_acyclic_merge",
    "is_acyclic_merge_k",
    "match",
    "match_dags",
    "match_parents",
]


def _default_depth(dag: nx.DiGraph, order: list) -> dict:
    """Longest path from a source, relative to the longest one: increases along edges."""
    longest: dict = {}
    for v in order:
        longest[v] = max((longest[u] + 1 for u in dag.predecessors(v)), default=0)
    top = max(longest.values(), default=0) or 1
    return {v: d / top for v, d in longest.items()}


def _grid_unit(values: np.ndarray) -> float | None:
    """u > 0 with every value an integer multiple of u (at most 10**7 units), else None."""
    fracs = []
    for v in np.unique(values):
        f = Fraction(float(v)).limit_denominator(10_000)
        if f <= 0 or abs(float(f) - v) > 1e-12 * max(1.0, abs(v)):
            return None
        fracs.append(f)
    den = math.lcm(*(f.denominator for f in fracs))
    num = math.gcd(*(f.numerator * (den // f.denominator) for f in fracs))
    unit = Fraction(num, den)
    if max(fracs) / unit > 10**7:
        return None
    return float(unit)


def _orders(dag_a: nx.DiGraph, dag_b: nx.DiGraph) -> tuple[list, list, dict, dict, Reach]:
    """Topological orders and indices of A and B, and the packed reachability of A + B
    (A's nodes first, then B's)."""
    order_a = topological_order(dag_a, "dag_a")
    order_b = topological_order(dag_b, "dag_b")
    index_a = {v: i for i, v in enumerate(order_a)}
    index_b = {v: i for i, v in enumerate(order_b)}
    na, nb = len(order_a), len(order_b)
    base = Reach.of([(dag_a, order_a, index_a, 0), (dag_b, order_b, index_b, na)], na + nb)
    return order_a, order_b, index_a, index_b, base


def _merge_fixed(
    fixed: list, index_a: dict, index_b: dict, base: Reach
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Merge the fixed pairs into `base` (checked: known nodes, none reused, no cycle);
    returns their indices and which nodes they use."""
    na = len(index_a)
    fixed_idx = []
    used = np.zeros(na + len(index_b), dtype=bool)
    for a, b in fixed:
        if a not in index_a or b not in index_b:
            raise MatchingError(f"fixed pair {(a, b)} names a node outside the graphs")
        u, v = index_a[a], na + index_b[b]
        if used[u] or used[v]:
            raise MatchingError(f"fixed pair {(a, b)} reuses a node of another fixed pair")
        if base.connected(u, v):
            raise MatchingError(f"fixed pairs {fixed} cannot be merged without a cycle")
        base.merge(u, v)
        used[u] = used[v] = True
        fixed_idx.append((u, v))
    return fixed_idx, used


def _candidates(
    weights: Mapping[Pair, float], index_a: dict, index_b: dict, base: Reach, used: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs (indices in A + B, weight) in (topological index of a, of b) order:
    positive finite weight, nodes free, mergeable after the fixed pairs."""
    na = len(index_a)
    items = []
    for (a, b), weight in weights.items():
        if a not in index_a or b not in index_b:
            raise MatchingError(f"weighted pair {(a, b)} names a node outside the graphs")
        if not weight > 0 or not math.isfinite(weight):
            continue
        items.append((index_a[a], na + index_b[b], float(weight)))
    items.sort()
    pa = np.array([i[0] for i in items], dtype=np.int64)
    pb = np.array([i[1] for i in items], dtype=np.int64)
    w = np.array([i[2] for i in items], dtype=float)
    ok = ~used[pa] & ~used[pb] & ~base.reaches_many(pa, pb) & ~base.reaches_many(pb, pa)
    return pa[ok], pb[ok], w[ok]


def _depths(dag: nx.DiGraph, order: list, given: Mapping[str, float] | None) -> dict:
    """Relative depths of a graph's nodes: `given` where known, else `_default_depth`."""
    depth = _default_depth(dag, order)
    if given:
        depth.update({k: float(v) for k, v in given.items() if k in depth})
    return depth


def _tie_break(
    dep: np.ndarray, pa: np.ndarray, pb: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Weights plus the bonus for pairing similar depths (see the docstring of `bnb`, Ties),
    the depth mismatch of each pair, and the weights' grid unit (None when off a grid)."""
    mismatch = np.abs(dep[pa] - dep[pb])
    unit = _grid_unit(w)
    budget = 0.5 * unit if unit is not None else 1e-6 * float(w.min())
    most = min(np.unique(pa).size, np.unique(pb).size) + 1
    wp = w + budget / most * (1.0 - np.minimum(mismatch, 1.0) ** 2)
    return wp, mismatch, unit


def _dp_solve(method, pa, pb, w, fixed_idx, closure, deadline):
    """The DP's matching when `method` allows it and it fits, else None (for the branch and
    bound); with method="dp", too wide a graph is an error."""
    if method not in ("auto", "dp"):
        return None
    limits = DP_LIMITS[method]
    solved = dp_match(pa, pb, w, fixed_idx, closure, limits, deadline)
    if solved is None and method == "dp" and not past(deadline):
        raise MatchingError(
            f"the graphs are too wide for the dynamic programming (more than "
            f"{limits[1]} order ideals or {limits[0]} states): use method='bnb'"
        )
    return solved


def _named_pairs(weights, fixed, chosen, order_a, order_b, index_a) -> list[tuple]:
    """The fixed and chosen pairs as (a, b, weight), in A's topological order."""
    na = len(order_a)
    result = [(a, b, float(weights.get((a, b), 0.0))) for a, b in fixed]
    result += [
        (order_a[u], order_b[v - na], float(weights[(order_a[u], order_b[v - na])]))
        for u, v in chosen
    ]
    result.sort(key=lambda t: index_a[t[0]])
    return result


def match_dags(
    dag_a: nx.DiGraph,
    dag_b: nx.DiGraph,
    weights: Mapping[Pair, float],
    fixed: Sequence[Pair] = (),
    *,
    time_limit: float | None = None,
    depth_a: Mapping[str, float] | None = None,
    depth_b: Mapping[str, float] | None = None,
    method: str = "auto",
) -> MatchResult:
    """Maximum-weight matching of A's and B's nodes whose merge keeps A + B acyclic.

    `weights[(a, b)]` lists the compatible pairs (pairs with weight <= 0 are never worth
    matching and are ignored); `fixed` pairs are always matched, weighted
    `weights.get(pair, 0.0)`. `depth_a` / `depth_b` (relative depths in [0, 1], default:
    longest path from the input) only steer tie-breaking, never the optimum. With
    `time_limit` (seconds) the best valid matching found so far is returned with
    `optimal=False` when time runs out (the root of the search is always completed, so
    the result is a valid matching, possibly found a little after the limit).
    `method`: "dp" (dynamic programming over order ideals), "bnb" (branch and bound) or
    "auto" (the DP when its state space is small, as for real networks, else the branch
    and bound); see the package docstring. Raises MatchingError for cyclic graphs, unknown
    nodes, or fixed pairs that reuse a node or cannot be merged without a cycle.
    """
    if method not in ("auto", "dp", "bnb"):
        raise MatchingError(f"method must be 'auto', 'dp' or 'bnb', not {method!r}")
    start = time.perf_counter()
    deadline = None if time_limit is None else start + time_limit
    order_a, order_b, index_a, index_b, base = _orders(dag_a, dag_b)
    closure = base.copy()  # A + B without any merge, for the decomposition
    fixed = [tuple(p) for p in fixed]  # merged first, always in the result
    fixed_idx, used = _merge_fixed(fixed, index_a, index_b, base)
    pa, pb, w = _candidates(weights, index_a, index_b, base, used)

    chosen: list[tuple[int, int]] = []
    optimal = True
    explored = 0
    if pa.size:
        da = _depths(dag_a, order_a, depth_a)
        db = _depths(dag_b, order_b, depth_b)
        dep = np.array([da[v] for v in order_a] + [db[v] for v in order_b])
        wp, mismatch, unit = _tie_break(dep, pa, pb, w)
        dp_w = wp if unit is not None else w
        solved = _dp_solve(method, pa, pb, dp_w, fixed_idx, closure, deadline)
        if solved is None:  # rare: the branch and bound, and scipy with it, load on use
            from .bnb import bnb_match

            solved = bnb_match(pa, pb, w, wp, mismatch, fixed_idx, base, closure, unit, deadline)
        chosen, optimal, explored = solved

    result = _named_pairs(weights, fixed, chosen, order_a, order_b, index_a)
    return MatchResult(
        pairs=result,
        total=float(sum(t[2] for t in result)),
        optimal=optimal,
        nodes_explored=explored,
        seconds=time.perf_counter() - start,
    )


def _check_similarity(similarity: str, data) -> None:
    if similarity not in ("uniform", "cka"):
        raise MatchingError(f"unknown similarity {similarity!r}: use uniform or cka")
    if similarity == "cka" and data is None:
        raise DataError("CKA weights need data: pass --data (or data=batches)")


def pair_weights(graph_a, graph_b, similarity: str, data, max_ratio: int) -> dict[Pair, float]:
    """The compatible pairs of two traced networks and their weights: "uniform" (every
    pair weighs 1, the paper's setting) or "cka" (linear CKA on `data`, input batches)."""
    _check_similarity(similarity, data)
    pairs = compatible_pairs(graph_a, graph_b, max_ratio)
    if similarity == "uniform":
        return uniform_weights(pairs)
    return cka_weights(graph_a, graph_b, pairs, data)


def match(
    graphs: Sequence,
    *,
    similarity: str = "uniform",
    data=None,
    max_ratio: int = 1,
    method: str = "auto",
    time_limit: float | None = None,
) -> Matching:
    """Match the stitching points of K >= 2 traced networks (`evostitch.trace`) into
    groups without creating cycles (`match_parents`; for two, `match_dags`'s pairs).

    Inputs are grouped with inputs and outputs with outputs. `similarity` chooses the
    weights of each pair of parents: "uniform" (every compatible pair weighs 1, the
    paper's setting) or "cka" (linear CKA on `data`, an iterable of input batches, read
    once). `time_limit` (seconds) bounds a two-parent matching.
    """
    if len(graphs) < 2:
        raise MatchingError(f"need at least two parents, got {len(graphs)}")
    _check_similarity(similarity, data)
    if data is not None:
        data = list(data)  # read once per pair of parents
    start = time.perf_counter()
    weights = {
        (p, q): pair_weights(graphs[p], graphs[q], similarity, data, max_ratio)
        for p in range(len(graphs))
        for q in range(p + 1, len(graphs))
    }
    weight_seconds = time.perf_counter() - start
    result = match_parents(
        [g.dag for g in graphs],
        weights,
        [tuple(g.input for g in graphs), tuple(g.output for g in graphs)],
        depths=[{n: g[n].depth for n in g.nodes} for g in graphs],
        method=method,
        time_limit=time_limit,
    )
    result.weight_seconds = weight_seconds
    result.candidates = tuple(len(g.candidates()) for g in graphs)
    return result

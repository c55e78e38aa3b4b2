"""Cycle-free matching of K >= 2 parents (issue 17, K-parent supernetworks).

**Groups.** A K-parent matching is a list of *groups*: tuples of length K holding, per
parent, a node or None, with at least two members; every node is in at most one group.
A group weighs the sum of its members' pairwise weights w_pq(u_p, u_q), all of which must
be compatible (weight > 0). The merged graph is the disjoint union of the K DAGs with
each group contracted to one vertex; a valid matching leaves it acyclic (a cycle can run
through three parents while every pairwise restriction is acyclic). For K = 2 the groups
are `match_dags`'s pairs.

**Genotype it implies.** At each member of a group of m members a switch with m choices:
0 = the parent's own tensor, 1..m-1 = the tensor stitched from another member (the other
members in parent order); m(m - 1) stitches per group. Output switch: a parent's output,
the ensembles of proper subsets (K >= 3) and of all K (`supernet.plan.output_choices_for`).
For K = 2 this is today's encoding (binary switches; A, B, mean, mean-prob).

**Algorithm** (`match_parents`). Progressive alignment: match two parents exactly with
`match_dags`, contract the pairs into a merged DAG whose vertices are groups or single
nodes, match the next parent against it exactly with `match_dags`, (vertex, v) weighing
the sum of v's weights to the vertex's members (only if v is compatible with all), and
so on; each step is an exact two-DAG matching, so the result is acyclic by construction.
Every pair of parents is tried as the first; each result is refined by taking a parent
out of the groups and aligning it again against the others' merged DAG while that gains;
the best is kept. Guarantees: valid; for K = 2 exactly `match_dags`; at least the best
pairwise matching (itself a K-matching), while the optimum is at most the sum of the
pairwise optima (a K-matching restricted to two parents is valid): so at least
2 / (K (K - 1)) of the optimum, and proven optimal when it reaches that sum. Not optimal
in general (benchmarks/multi_matching.py). Exact (`method="dp"`): `dp` over K-tuples of
order ideals, used by "auto" up to `DP_K_LIMITS["auto"]` states (the product of the
parents' ideal counts; three small ResNet-like graphs: seconds). `brute.brute_force_match_k`,
exhaustive, is the tests' reference.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Hashable, Mapping, Sequence

import networkx as nx
import numpy as np

from ..errors import MatchingError
from .dp import _ideal_lattice, _take_better
from .reach import topological_order
from .result import Group, Matching

PairWeights = Mapping[tuple[int, int], Mapping[tuple[Hashable, Hashable], float]]
# the K-ideal DP: at most this many states, and ideals per parent (as `dp.DP_LIMITS`)
DP_K_LIMITS = {"auto": (3_000_000, 50_000), "dp": (20_000_000, 1_000_000)}


def _members(group: Group) -> list[tuple[int, Hashable]]:
    return [(p, u) for p, u in enumerate(group) if u is not None]


def _pair(weights: PairWeights, p: int, u: Hashable, q: int, v: Hashable) -> float | None:
    """w_pq(u, v) when compatible (finite, > 0), else None; either order of parents."""
    w = weights.get((p, q), {}).get((u, v)) if p < q else weights.get((q, p), {}).get((v, u))
    return float(w) if w is not None and w > 0 and math.isfinite(w) else None


def _put(group: Group, p: int, u: Hashable | None) -> Group:
    return group[:p] + (u,) + group[p + 1 :]


def group_weight(weights: PairWeights, group: Group, fixed: bool = False) -> float | None:
    """Sum of the members' pairwise weights; None if one is incompatible (`fixed`: it adds 0)."""
    total = 0.0
    for (p, u), (q, v) in itertools.combinations(_members(group), 2):
        w = _pair(weights, p, u, q, v)
        if w is None and not fixed:
            return None
        total += w or 0.0
    return total


def _merged_graph(dags: Sequence[nx.DiGraph], groups: Sequence[Group]) -> nx.DiGraph:
    """Disjoint union of the DAGs, group i contracted to ("group", i)."""
    alias = {(p, u): ("group", i) for i, g in enumerate(groups) for p, u in _members(g)}
    merged = nx.DiGraph()
    for p, dag in enumerate(dags):
        merged.add_nodes_from(alias.get((p, v), (p, v)) for v in dag.nodes)
        merged.add_edges_from(
            (alias.get((p, a), (p, a)), alias.get((p, b), (p, b))) for a, b in dag.edges
        )
    return merged


def is_acyclic_merge_k(dags: Sequence[nx.DiGraph], groups: Sequence[Group]) -> bool:
    """True when contracting every group keeps the union acyclic and no node is reused."""
    for g in groups:
        if len(g) != len(dags) or len(_members(g)) < 2:
            raise MatchingError(f"group {g!r}: need {len(dags)} entries, at least two nodes")
        if any(u not in dags[p] for p, u in _members(g)):
            raise MatchingError(f"group {g!r} names a node outside the graphs")
    seen = [(p, u) for g in groups for p, u in _members(g)]
    return len(seen) == len(set(seen)) and nx.is_directed_acyclic_graph(_merged_graph(dags, groups))


def _prepare(dags, weights, fixed) -> tuple[dict, list[Group]]:
    """Checked input: weights kept only where compatible, fixed groups as tuples."""
    k = len(dags)
    if k < 2:
        raise MatchingError(f"need at least two parents, got {k}")
    for p, dag in enumerate(dags):
        topological_order(dag, f"dags[{p}]")  # raises for a cycle
    kept: dict = {}
    for (p, q), table in weights.items():
        if not 0 <= p < q < k:
            raise MatchingError(f"weights key {(p, q)}: need 0 <= p < q < {k}")
        for u, v in table:
            if u not in dags[p] or v not in dags[q]:
                raise MatchingError(f"weighted pair {(u, v)} names a node outside the graphs")
        kept[(p, q)] = {uv: float(w) for uv, w in table.items() if w > 0 and math.isfinite(w)}
    fixed = [tuple(g) for g in fixed]
    if not is_acyclic_merge_k(dags, fixed):
        raise MatchingError(f"fixed groups {fixed} cannot be merged without a cycle")
    return kept, fixed


def _sorted(dags, weights, groups, fixed, method, optimal, start) -> Matching:
    """The result, groups in a topological order of the merged graph."""
    merged = _merged_graph(dags, groups)
    position = {v: i for i, v in enumerate(merged.nodes)}.__getitem__
    order = nx.lexicographical_topological_sort(merged, key=position)
    groups = [groups[v[1]] for v in order if v[0] == "group"]
    ws = [group_weight(weights, g, g in fixed) for g in groups]
    return Matching(groups, ws, sum(ws), optimal, method, time.perf_counter() - start)


def _align(dags, weights, vertices, p, fixed, depths) -> tuple[list[Group], float]:
    """Parent p matched exactly (`match_dags`) against the merged DAG of `vertices` (groups
    and single nodes covering the parents aligned so far, None at p); p's unmatched nodes
    are added as single nodes. Also returns the matching's weight."""
    from . import match_dags

    where = {m: vert for vert in vertices for m in _members(vert)}
    merged = nx.DiGraph()
    merged.add_nodes_from(vertices)
    for q in sorted({q for q, _ in where}):
        merged.add_edges_from((where[(q, a)], where[(q, b)]) for a, b in dags[q].edges)
    fixed_pairs, banned = [], set()
    for g in fixed:  # a fixed group is made whole, never joined by others
        have = [where[m] for m in _members(g) if m in where]
        if g[p] is not None and have:
            fixed_pairs.append((have[0], g[p]))
        else:
            banned.update([g[p]] if g[p] is not None else have[:1])
    near: dict = {}  # (q, u) -> {v of p: w_qp(u, v)}
    for (q, r), pairs in weights.items():
        if p in (q, r):
            for (u, v), w in pairs.items():
                a, b = ((q, u), v) if r == p else ((r, v), u)
                near.setdefault(a, {})[b] = w
    table = {}
    for vert in (vert for vert in vertices if vert not in banned):
        first, *others = [near.get(m, {}) for m in _members(vert)]
        for v, w in first.items():
            more = [o.get(v) for o in others]
            if v not in banned and None not in more:
                table[(vert, v)] = w + sum(more)
    depth_a = {vert: float(np.mean([depths[q][u] for q, u in _members(vert)])) for vert in vertices}
    result = match_dags(merged, dags[p], table, fixed_pairs, depth_a=depth_a, depth_b=depths[p])
    matched = {vert: v for vert, v, _ in result.pairs}
    out = [_put(vert, p, matched[vert]) if vert in matched else vert for vert in vertices]
    taken = set(matched.values())
    singles = [_put((None,) * len(dags), p, v) for v in dags[p] if v not in taken]
    return out + singles, result.total


def _value(weights, vertices, fixed) -> float:
    return sum(group_weight(weights, g, g in fixed) for g in vertices if len(_members(g)) > 1)


def _progressive(dags, weights, fixed, depths, orders, refine) -> tuple[list[Group], bool]:
    """Best progressive alignment over the parent orders, each refined: parents realigned in
    turn until each is aligned as well as it can be against the others (idle = k). Proven
    optimal when every pair came first and it reaches the sum of their optima."""
    k, best, best_value, bound = len(dags), None, -math.inf, 0.0
    for order in orders:
        vertices = [_put((None,) * k, order[0], v) for v in dags[order[0]]]
        for p in order[1:]:
            vertices, weight = _align(dags, weights, vertices, p, fixed, depths)
            bound += weight if p == order[1] else 0.0
        value, idle, p = _value(weights, vertices, fixed), 1, order[-1]
        while refine and idle < k:
            p = (p + 1) % k
            others = [_put(v, p, None) for v in vertices if _members(_put(v, p, None))]
            again, _ = _align(dags, weights, others, p, fixed, depths)
            new = _value(weights, again, fixed)
            gained = new > value + 1e-9 * max(1.0, abs(value))
            vertices, value, idle = (again, new, 1) if gained else (vertices, value, idle + 1)
        if best is None or value > best_value + 1e-9 * max(1.0, abs(best_value)):
            best, best_value = vertices, value
    proven = len(orders) == k * (k - 1) // 2 and best_value >= bound - 1e-9 * max(1.0, bound)
    return [g for g in best if len(_members(g)) > 1], proven


def _lattices_k(dags, weights, mate, cap) -> tuple[list[list], list] | None:
    """Per parent, its matchable nodes (fixed or weighted) in topological order and their
    ideal lattice, each within the state budget the earlier ones leave; None beyond `cap`."""
    keep = mate | {m for (p, q), t in weights.items() for uv in t for m in ((p, uv[0]), (q, uv[1]))}
    nodes, lats, budget = [], [], cap[0]
    for p, dag in enumerate(dags):
        mine = [v for v in topological_order(dag, f"dags[{p}]") if (p, v) in keep]
        pos = {v: i for i, v in enumerate(mine)}
        below = np.zeros((len(mine), len(mine)), dtype=bool)
        for v in mine:
            below[pos[v], [pos[d] for d in nx.descendants(dag, v) if d in pos]] = True
        if (lat := _ideal_lattice(below, max(1, min(budget, cap[1])))) is None:
            return None
        budget, nodes, lats = budget // lat[2].size, [*nodes, mine], [*lats, lat]
    return nodes, lats


def _pair_gains(nodes, idx, weights, mate, depths) -> dict[tuple[int, int], np.ndarray]:
    """Per pair of parents, the weights between their nodes (padding and fixed nodes: -inf);
    on a grid, a bonus for similar depths picks among the optima."""
    from . import _grid_unit

    values = np.array([w for table in weights.values() for w in table.values()])
    unit = _grid_unit(values) if values.size else None
    pairs = list(itertools.combinations(range(len(nodes)), 2))
    most = sum(min(len(nodes[p]), len(nodes[q])) for p, q in pairs) + 1
    gain = {}
    for p, q in pairs:
        g = gain[(p, q)] = np.full((len(nodes[p]) + 1, len(nodes[q]) + 1), -np.inf)
        for (u, v), w in weights.get((p, q), {}).items():
            if (p, u) not in mate and (q, v) not in mate:
                near = 1.0 - min(abs(depths[p][u] - depths[q][v]), 1.0) ** 2
                g[idx[p][u], idx[q][v]] = w + (0.5 * unit / most * near if unit else 0.0)
    return gain


def _fix_groups(nodes, idx, gain, fixed) -> list[np.ndarray]:
    """Fixed groups' pairs weigh 0 in `gain`; returns per parent, per node, 0 or the size of
    its fixed group (placed only with exactly it), and -1 for the padding."""
    size = [np.append(np.zeros(len(mine), dtype=np.int64), -1) for mine in nodes]
    for g in fixed:
        for (p, u), (q, v) in itertools.combinations(_members(g), 2):
            gain[(p, q)][idx[p][u], idx[q][v]] = 0.0
        for p, u in _members(g):
            size[p][idx[p][u]] = len(_members(g))
    return size


def _moves(lats) -> list[tuple[tuple[int, int], ...]]:
    """Every step: a set of parents, each placing the node of one slot of its ideal's row."""
    k = len(lats)
    return [
        tuple(zip(sub, slots, strict=True))
        for m in range(1, k + 1)
        for sub in itertools.combinations(range(k), m)
        for slots in itertools.product(*(range(lats[p][0].shape[1]) for p in sub))
    ]


def _move_gain(put, gain, size, fixed) -> np.ndarray:
    """What placing the nodes `put` (parent -> node indices) in one step adds; -inf where
    not allowed (a fixed node alone, or a fixed group not placed whole)."""
    if len(put) == 1:
        (p, e), *_ = put.items()
        return np.where(size[p][e] == 0, 0.0, -np.inf)
    add = sum(gain[(p, q)][put[p], put[q]] for p, q in itertools.combinations(put, 2))
    for p, e in put.items() if fixed else ():
        fits = (size[p][e] == 0) | (size[p][e] == len(put))
        add = np.where(fits, add, -np.inf)
    return add


def _fill_k(lats, moves, gain, size, fixed):
    """Best total from each K-tuple of ideals and the move taking it (1-based code), one
    vectorised level (nodes placed) at a time; also the final state and the strides."""
    k = len(lats)
    counts = [lat[2].size for lat in lats]
    stride = np.cumprod([1] + [c + 1 for c in counts[:0:-1]])[::-1]
    state = [a.ravel() for a in np.meshgrid(*map(np.arange, counts), indexing="ij")]
    rank = sum(lats[p][2][state[p]] for p in range(k))
    flat = sum(state[p] * stride[p] for p in range(k))
    value = np.full(int(np.prod([c + 1 for c in counts])), -np.inf)
    choice, final = np.zeros(value.size, dtype=np.int32), int(flat[-1])  # all placed
    value[final] = 0.0
    by_rank = np.argsort(-rank, kind="stable")
    for level in np.split(by_rank, np.flatnonzero(np.diff(rank[by_rank])) + 1)[1:]:
        at = [state[p][level] for p in range(k)]
        best, code = np.full(level.size, -np.inf), np.zeros(level.size, dtype=np.int32)
        for c, move in enumerate(moves, start=1):
            to, put = flat[level].copy(), {}
            for p, s in move:
                to += (lats[p][0][at[p], s] - at[p]) * stride[p]
                put[p] = lats[p][1][at[p], s]
            _take_better(best, code, value[to] + _move_gain(put, gain, size, fixed), c)
        value[flat[level]], choice[flat[level]] = best, code
    return choice, final, stride


def _trace_k(nodes, lats, moves, choice, final, stride) -> list[Group]:
    """The groups along the chosen moves from the empty ideals to the final state."""
    groups, at, here = [], [0] * len(nodes), 0
    while here != final:
        move, group = moves[choice[here] - 1], [None] * len(nodes)
        for p, s in move:
            group[p] = nodes[p][lats[p][1][at[p], s]]
            here += int(lats[p][0][at[p], s] - at[p]) * int(stride[p])
            at[p] = int(lats[p][0][at[p], s])
        groups += [tuple(group)] if len(move) > 1 else []
    return groups


def _dp_k(dags, weights, fixed, depths, cap) -> list[Group] | None:
    """Exact optimum over K-tuples of order ideals (`dp` generalised: a step places a node
    alone or a group), one vectorised level (nodes placed) at a time; None beyond `cap`."""
    mate = {m for g in fixed for m in _members(g)}
    found = _lattices_k(dags, weights, mate, cap)
    if found is None:
        return None
    nodes, lats = found
    idx = [{v: i for i, v in enumerate(mine)} for mine in nodes]
    gain = _pair_gains(nodes, idx, weights, mate, depths)
    size = _fix_groups(nodes, idx, gain, fixed)
    moves = _moves(lats)
    choice, final, stride = _fill_k(lats, moves, gain, size, fixed)
    return _trace_k(nodes, lats, moves, choice, final, stride)


def match_parents(
    dags: Sequence[nx.DiGraph],
    weights: PairWeights,
    fixed: Sequence[Group] = (),
    *,
    depths: Sequence[Mapping[Hashable, float]] | None = None,
    method: str = "auto",
    orders: str = "all",
    refine: bool = True,
    time_limit: float | None = None,
) -> Matching:
    """Heavy cycle-free matching of K parents' nodes into groups (module docstring).

    `weights[(p, q)]` (p < q) maps (u_p, u_q) to the weight of a compatible pair (<= 0:
    never matched); `fixed` groups are always in the result, alone (weighing their
    compatible pairs). `depths` (per parent, relative depths in [0, 1]) only break ties.
    `method`: "auto" (the exact DP when small, else progressive), "dp" or "progressive";
    for K = 2 every method returns `match_dags`'s pairs. `orders`: "all" (each pair of
    parents first) or "given" (parents in index order); `refine`: realign each parent
    while it gains; `time_limit` (seconds) bounds a two-parent matching (`match_dags`).
    Deterministic. Raises MatchingError on bad input.
    """
    from . import _default_depth, match_dags

    if method not in ("auto", "dp", "progressive") or orders not in ("all", "given"):
        raise MatchingError("method must be 'auto', 'dp' or 'progressive'; orders 'all', 'given'")
    start = time.perf_counter()
    kept, fixed = _prepare(dags, weights, fixed)
    k = len(dags)
    if k == 2:
        da, db = depths or (None, None)
        how = "dp" if method == "dp" else "auto"
        pair = weights.get((0, 1), {})
        got = match_dags(
            *dags, pair, fixed, time_limit=time_limit, depth_a=da, depth_b=db, method=how
        )
        groups, ws = [(a, b) for a, b, _ in got.pairs], [w for _, _, w in got.pairs]
        t = time.perf_counter() - start
        return Matching(groups, ws, got.total, got.optimal, "match_dags", t, got.nodes_explored)
    full = [_default_depth(d, topological_order(d, f"dags[{p}]")) for p, d in enumerate(dags)]
    for p, given in enumerate(depths or []):
        full[p].update({v: float(x) for v, x in given.items() if v in full[p]})
    if method != "progressive":
        groups = _dp_k(dags, kept, fixed, full, DP_K_LIMITS[method])
        if groups is not None:
            return _sorted(dags, kept, groups, set(fixed), "dp", True, start)
        if method == "dp":
            raise MatchingError("the graphs are too wide for method='dp': use 'progressive'")
    firsts = list(itertools.combinations(range(k), 2)) if orders == "all" else [(0, 1)]
    sequences = [f + tuple(p for p in range(k) if p not in f) for f in firsts]
    groups, proven = _progressive(dags, kept, fixed, full, sequences, refine)
    return _sorted(dags, kept, groups, set(fixed), "progressive", proven, start)

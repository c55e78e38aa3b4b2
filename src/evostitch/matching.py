"""Exact cycle-free matching of the points of two networks (METHOD.md section 2, step 3).

Problem: given DAGs A and B and weights w(a, b) > 0 on compatible pairs, choose pairs,
each node at most once, of maximum total weight such that merging each matched a with
its b leaves the union of A and B acyclic. The merged graph is acyclic iff the *pair
graph* is: one vertex per pair, an arc p -> q when a_p reaches a_q in A or b_p reaches
b_q in B. Cycles can run through several pairs (parallel branches), so every check is on
the whole merged graph, never only on pairwise crossings.

Two exact solvers; `method="auto"` (default) uses the first when it is small enough.

1. Dynamic programming over order ideals (`method="dp"`). A matching is acyclic iff the
   merged graph has a topological order, i.e. iff the matching is order-preserving
   between *some* linear extensions of A and B. Walking such an order, the nodes placed
   so far form an order ideal (down-closed set) of A and one of B; a step places one
   node of A, one of B, or a matched pair. The optimum is a longest path over pairs of
   ideals. Only matchable nodes matter (with the reachability between them), and the
   points of real networks form nearly a chain: ResNet-152 has 581 ideals,
   EfficientNet-B4 504, so ~300k states, processed one vectorised level (number of
   placed nodes) at a time: well under a second for any weights, CKA included. The
   number of ideals grows exponentially with the width of the graphs (many parallel
   branches), so beyond `_DP_LIMITS["auto"]` "auto" switches to branch and bound.
   (This is not the paper's algorithm; it is exact for the same problem, and tested
   against brute force and against the branch and bound.)

2. Branch and bound, as in the paper but exact (`method="bnb"`):

* Reachability: the transitive closure of A + B is kept as packed uint64 bit rows (one
  row per node). Merging a pair updates the rows of the merged node's ancestors, so
  "does adding (a, b) close a cycle?" is two bit tests (a reaches b, or b reaches a,
  in the graph merged so far).
* Relaxation: maximum-weight bipartite matching ignoring order, solved with
  `scipy.optimize.linear_sum_assignment` separately on each *block* (connected
  component of the compatibility graph; in practice one block per spatial size), only
  re-solving the blocks a branching decision touched. A matching that stays optimal
  after removing edges it does not use, or the nodes of a pair it does use, is reused.
* Decomposition: blocks whose pairs can never lie on a common cycle are solved as
  independent problems (strongly connected components of the graph between blocks
  whose nodes reach each other), fixed pairs forced in every one of them.
* Branching: when the relaxation's pair graph has a cycle, pick a pair on a cycle (the
  one crossing most others, then the one whose relative depths differ most) and branch:
  *keep* it (force it, merge it, and delete every pair that would now close a cycle with
  the forced set: shares a node, crosses it, or connects through earlier merges; the
  forced set is therefore always acyclic) or *drop* it. Depth first; a child is pruned
  when its bound cannot beat the best valid matching found. A relaxation without cycle
  is optimal for its subtree.
* Primal heuristic at every node: keep the relaxation's pairs that are on no cycle, add
  the others greedily by weight while the merge stays acyclic, then extend greedily with
  any remaining compatible pair on free nodes.
* Ties: with uniform weights (the paper's setting) there are huge numbers of equally
  good relaxations, almost all crossing each other. Each weight gets a tiny bonus
  delta(a, b) = budget / K * (1 - (depth_a - depth_b)^2) with K = (largest possible
  number of pairs) + 1, so the bonus of any matching is < budget. The relaxation then
  prefers, among maximum-weight assignments, the one pairing similar relative depths;
  for a strictly convex cost of the depth difference the optimal assignment is
  monotone (no two pairs cross in depth), and a depth that increases along every edge
  makes such a matching acyclic: on chain-like networks the root relaxation is already
  feasible. Exactness does not depend on the bonus: it is >= 0, so perturbed bounds are
  still upper bounds on the true weight, and a node is pruned only when its perturbed
  bound cannot exceed the best *true* total found. When all weights are integer
  multiples of a unit u (uniform weights: u = 1) the budget is u/2 and a bound b proves
  at most floor(b / u) units, which prunes every tie. Otherwise the budget is 1e-6 of
  the smallest weight (it then only breaks exact ties) and nodes are pruned when their
  bound is within 1e-12 (relative) of the best total. The LSA bound ignores order, so
  with real-valued weights (CKA) on large graphs it is far from tight and the search
  may not finish: there the DP is the practical exact method.

The DP maximises the bonus-perturbed weights exactly when weights lie on a grid (the
bonus then only chooses among the optima: the one pairing similar depths), the plain
weights otherwise. Both solvers are deterministic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import networkx as nx
import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "MatchResult",
    "Matching",
    "brute_force_match",
    "is_acyclic_merge",
    "match",
    "match_dags",
]

Pair = tuple[str, str]

_BIT = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))


@dataclass
class MatchResult:
    """A cycle-free matching: `pairs` (a, b, weight) in topological order of A."""

    pairs: list[tuple[str, str, float]]
    total: float
    optimal: bool  # False only when the time limit stopped the search
    nodes_explored: int  # branch-and-bound nodes, or dynamic-programming states
    seconds: float


# --------------------------------------------------------------------------- helpers


def _topological_order(dag: nx.DiGraph, name: str) -> list:
    position = {v: i for i, v in enumerate(dag.nodes)}
    try:
        return list(nx.lexicographical_topological_sort(dag, key=position.__getitem__))
    except nx.NetworkXUnfeasible as exc:
        raise ValueError(f"{name} is not acyclic") from exc


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


class _Reach:
    """Transitive closure of a DAG as packed bit rows; nodes can be merged in pairs."""

    def __init__(self, bits: np.ndarray, n: int) -> None:
        self.bits = bits  # (n, words) uint64; bit v of row u: u reaches v (u != v)
        self.n = n

    @classmethod
    def of(cls, graphs: Sequence[tuple[nx.DiGraph, list, dict, int]], n: int) -> _Reach:
        bits = np.zeros((n, max(1, (n + 63) // 64)), dtype=np.uint64)
        for dag, order, index, offset in graphs:
            for v in reversed(order):
                row = bits[index[v] + offset]
                for s in dag.successors(v):
                    j = index[s] + offset
                    row |= bits[j]
                    row[j >> 6] |= _BIT[j & 63]
        return cls(bits, n)

    def copy(self) -> _Reach:
        return _Reach(self.bits.copy(), self.n)

    def reaches(self, u: int, v: int) -> bool:
        return bool(self.bits[u, v >> 6] & _BIT[v & 63])

    def reaches_many(self, us: np.ndarray, vs: np.ndarray) -> np.ndarray:
        return (self.bits[us, vs >> 6] & _BIT[vs & 63]) != 0

    def connected(self, u: int, v: int) -> bool:
        return self.reaches(u, v) or self.reaches(v, u)

    def merge(self, u: int, v: int) -> None:
        """Merge u and v (which must not reach each other) into one node."""
        bits = self.bits
        anc = ((bits[:, u >> 6] & _BIT[u & 63]) | (bits[:, v >> 6] & _BIT[v & 63])) != 0
        desc = bits[u] | bits[v]
        row = desc.copy()
        row[u >> 6] |= _BIT[u & 63]
        row[v >> 6] |= _BIT[v & 63]
        bits[anc] |= row
        bits[u] = desc
        bits[v] = desc

    def unpack(self, rows: np.ndarray) -> np.ndarray:
        packed = np.ascontiguousarray(rows).astype("<u8", copy=False).view(np.uint8)
        return np.unpackbits(packed, axis=1, count=self.n, bitorder="little").astype(bool)


# --------------------------------------------------------------------------- branch and bound


@dataclass
class _Block:
    pids: np.ndarray  # local pair ids in this block
    rows: np.ndarray  # row (A side) of each pair
    cols: np.ndarray  # column (B side) of each pair


@dataclass
class _Node:
    forced: tuple[int, ...]
    forced_w: float  # perturbed weight of the forced pairs
    banned: np.ndarray  # local pairs no longer allowed (forced ones included)
    reach: _Reach  # closure of A + B + base fixed pairs + forced pairs
    sols: list  # per block: (perturbed value, pair ids) of its relaxation
    bound: float


_EMPTY = np.zeros(0, dtype=np.int64)


class _Component:
    """One independent part of the problem, solved exactly by branch and bound."""

    def __init__(self, pa, pb, w, wp, mismatch, blocks, base, unit, deadline) -> None:
        self.pa, self.pb, self.w, self.wp, self.mismatch = pa, pb, w, wp, mismatch
        self.blocks: list[_Block] = blocks
        self.block_of = np.empty(len(pa), dtype=np.int64)
        for k, blk in enumerate(blocks):
            self.block_of[blk.pids] = k
        self.base = base
        self.unit = unit
        self.deadline = deadline
        self.best_value = 0.0
        self.best_pairs: np.ndarray = _EMPTY
        self.best_units = 0
        self.tol = 1e-12 * max(1.0, float(np.sum(np.sort(w)[-min(len(w), 10_000) :])))
        self.nodes = 0

    # ---- bounds and incumbent
    def _prunable(self, bound: float) -> bool:
        if self.unit is not None:
            return math.floor(bound / self.unit + 1e-7) <= self.best_units
        return bound <= self.best_value + self.tol

    def _offer(self, pairs: np.ndarray) -> None:
        value = float(self.w[pairs].sum())
        if self.unit is not None:
            units = round(value / self.unit)
            if units > self.best_units:
                self.best_units, self.best_value, self.best_pairs = units, value, pairs
        elif value > self.best_value + self.tol:
            self.best_value, self.best_pairs = value, pairs

    # ---- relaxation
    def _solve_block(self, k: int, banned: np.ndarray) -> tuple[float, np.ndarray]:
        blk = self.blocks[k]
        keep = ~banned[blk.pids]
        pids = blk.pids[keep]
        if pids.size == 0:
            return 0.0, _EMPTY
        ur, ri = np.unique(blk.rows[keep], return_inverse=True)
        uc, ci = np.unique(blk.cols[keep], return_inverse=True)
        weight = np.zeros((ur.size, uc.size))
        weight[ri, ci] = self.wp[pids]
        ids = np.full((ur.size, uc.size), -1, dtype=np.int64)
        ids[ri, ci] = pids
        r, c = linear_sum_assignment(weight, maximize=True)
        chosen = ids[r, c]
        chosen = np.sort(chosen[chosen >= 0])
        return float(self.wp[chosen].sum()), chosen

    def _evaluate(self, node: _Node) -> None:
        for k, sol in enumerate(node.sols):
            if sol is None:
                node.sols[k] = self._solve_block(k, node.banned)
        node.bound = node.forced_w + sum(v for v, _ in node.sols)
        self.nodes += 1

    def _root(self) -> _Node:
        node = _Node(
            forced=(),
            forced_w=0.0,
            banned=np.zeros(len(self.pa), dtype=bool),
            reach=self.base,
            sols=[None] * len(self.blocks),
            bound=0.0,
        )
        self._evaluate(node)
        return node

    def _drop(self, node: _Node, p: int) -> _Node:
        banned = node.banned.copy()
        banned[p] = True
        sols = list(node.sols)
        sols[self.block_of[p]] = None
        child = _Node(node.forced, node.forced_w, banned, node.reach, sols, 0.0)
        self._evaluate(child)
        return child

    def _keep(self, node: _Node, p: int) -> _Node:
        reach = node.reach.copy()
        a, b = int(self.pa[p]), int(self.pb[p])
        reach.merge(a, b)
        pa, pb = self.pa, self.pb
        newly = (pa == a) | (pb == b) | reach.reaches_many(pa, pb) | reach.reaches_many(pb, pa)
        newly &= ~node.banned
        newly[p] = False
        banned = node.banned | newly
        banned[p] = True
        sols = list(node.sols)
        k = self.block_of[p]
        value, chosen = sols[k]
        sols[k] = (value - self.wp[p], chosen[chosen != p])
        for j, sol in enumerate(sols):
            if sol is not None and sol[1].size and newly[sol[1]].any():
                sols[j] = None
        child = _Node(node.forced + (p,), node.forced_w + self.wp[p], banned, reach, sols, 0.0)
        self._evaluate(child)
        return child

    # ---- cycles and repair
    def _pair_graph(self, reach: _Reach, rel: np.ndarray) -> np.ndarray:
        """arc i -> j when pair rel[i] reaches pair rel[j] in the current merged graph."""
        a, b = self.pa[rel], self.pb[rel]
        rows = reach.unpack(reach.bits[a] | reach.bits[b])
        return rows[:, a] | rows[:, b]

    def _repair(self, node: _Node, rel: np.ndarray, on_cycle: np.ndarray) -> None:
        reach = node.reach.copy()
        pa, pb = self.pa, self.pb
        order = np.lexsort((np.arange(rel.size), -self.wp[rel], on_cycle))
        accepted = list(node.forced)
        used = np.zeros(reach.n, dtype=bool)
        for p in rel[order]:
            a, b = int(pa[p]), int(pb[p])
            if not reach.connected(a, b):
                reach.merge(a, b)
                accepted.append(int(p))
                used[a] = used[b] = True
        for p in node.forced:
            used[pa[p]] = used[pb[p]] = True
        cand = np.flatnonzero(~node.banned & ~used[pa] & ~used[pb])
        cand = cand[np.lexsort((cand, -self.wp[cand]))]
        for p in cand:
            a, b = int(pa[p]), int(pb[p])
            if used[a] or used[b] or reach.connected(a, b):
                continue
            reach.merge(a, b)
            accepted.append(int(p))
            used[a] = used[b] = True
        self._offer(np.sort(np.asarray(accepted, dtype=np.int64)))

    def _timed_out(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    def solve(self) -> bool:
        """Run the search; True when the best matching found is proven optimal."""
        stack = [self._root()]
        first = True
        while stack:
            # the root is always processed (relaxation + repair), even past the deadline
            if not first and self._timed_out():
                return False
            first = False
            node = stack.pop()
            if self._prunable(node.bound):
                continue
            rel = np.concatenate([sol[1] for sol in node.sols] + [_EMPTY])
            if rel.size == 0:
                self._offer(np.asarray(node.forced, dtype=np.int64))
                continue
            arcs = self._pair_graph(node.reach, rel)
            ncomp, labels = connected_components(
                csr_matrix(arcs), directed=True, connection="strong"
            )
            whole = np.concatenate([np.asarray(node.forced, dtype=np.int64), rel])
            if ncomp == rel.size:  # the relaxation is acyclic: optimal in this subtree
                self._offer(np.sort(whole))
                continue
            on_cycle = np.bincount(labels, minlength=ncomp)[labels] > 1
            self._repair(node, rel, on_cycle)
            if self._prunable(node.bound):
                continue
            crossings = (arcs & arcs.T).sum(axis=1)
            cyc = np.flatnonzero(on_cycle)
            pick = cyc[np.lexsort((rel[cyc], -self.mismatch[rel[cyc]], -crossings[cyc]))[0]]
            p = int(rel[pick])
            children = [self._keep(node, p), self._drop(node, p)]
            children = [c for c in children if not self._prunable(c.bound)]
            # the child with the larger bound is explored first (popped last pushed)
            children.sort(key=lambda c: c.bound)
            stack.extend(children)
        return True


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() > deadline


def _bnb_match(pa, pb, w, wp, mismatch, fixed_idx, base, closure, unit, deadline):
    """Branch and bound on each independent part. Returns (pairs, optimal, nodes)."""
    n = closure.n
    chosen: list[tuple[int, int]] = []
    optimal, explored = True, 0
    # blocks: connected components of the compatibility graph
    adj = csr_matrix((np.ones(pa.size), (pa, pb)), shape=(n, n))
    _, node_block = connected_components(adj, directed=False)
    pair_block = node_block[pa]
    block_ids = list(dict.fromkeys(pair_block.tolist()))  # first-appearance order
    nblk = len(block_ids)
    # decomposition: blocks (and fixed pairs) whose nodes reach each other, both ways
    member = np.zeros((nblk + len(fixed_idx), n), dtype=np.float32)
    for k, lab in enumerate(block_ids):
        sel = pair_block == lab
        member[k, pa[sel]] = 1.0
        member[k, pb[sel]] = 1.0
    for k, (u, v) in enumerate(fixed_idx):
        member[nblk + k, u] = member[nblk + k, v] = 1.0
    dense = closure.unpack(closure.bits).astype(np.float32)
    between = (member @ dense @ member.T) > 0
    _, part = connected_components(csr_matrix(between), directed=True, connection="strong")
    parts: dict[int, list[int]] = {}
    for k in range(nblk):
        parts.setdefault(int(part[k]), []).append(k)
    for blocks_in_part in parts.values():
        glob = np.flatnonzero(np.isin(pair_block, [block_ids[k] for k in blocks_in_part]))
        blocks = []
        for k in blocks_in_part:
            pids = np.flatnonzero(pair_block[glob] == block_ids[k])
            blocks.append(_Block(pids, pa[glob][pids], pb[glob][pids]))
        comp = _Component(
            pa[glob], pb[glob], w[glob], wp[glob], mismatch[glob], blocks, base, unit, deadline
        )
        optimal &= comp.solve()
        explored += comp.nodes
        chosen.extend((int(pa[glob][p]), int(pb[glob][p])) for p in comp.best_pairs)
    return chosen, optimal, explored


# --------------------------------------------------------------------------- dynamic programming

# method="auto" uses the DP up to this many states, and ideals per graph (enumerating them
# is pure Python: ~0.5 s for 50k); method="dp" refuses only beyond the larger limits
_DP_LIMITS = {"auto": (3_000_000, 50_000), "dp": (10_000_000, 1_000_000)}


def _masks(matrix: np.ndarray) -> list[int]:
    """Row i of a bool matrix as a Python int bit mask."""
    packed = np.packbits(matrix, axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


def _ideal_lattice(order: np.ndarray, cap: int):
    """Order ideals (down-closed subsets) of the poset `order[x, y]` (x < y), by size.

    Returns (succ, elem, size) with succ[i, k] the ideal obtained by adding elem[i, k], a
    minimal element of the complement of ideal i (padded with len(ideals) / n), or None
    when there are more than `cap` ideals. Ideal 0 is empty, the last one is everything.
    """
    n = order.shape[0]
    pred = _masks(order.T)  # pred[y]: elements below y
    f = order.astype(np.float32)
    cover = order & ~((f @ f) > 0)
    kids = [np.flatnonzero(cover[x]).tolist() for x in range(n)]
    masks, frontiers, sizes, rows = [0], [tuple(x for x in range(n) if pred[x] == 0)], [0], []
    index = {0: 0}
    i = 0
    while i < len(masks):  # breadth first: ideals come out sorted by size
        mask, frontier = masks[i], frontiers[i]
        row = []
        for x in frontier:
            new = mask | (1 << x)
            j = index.get(new)
            if j is None:
                j = index[new] = len(masks)
                if j >= cap:
                    return None
                grown = [y for y in kids[x] if pred[y] & ~new == 0]
                masks.append(new)
                frontiers.append(tuple(sorted([y for y in frontier if y != x] + grown)))
                sizes.append(sizes[i] + 1)
            row.append((j, x))
        rows.append(row)
        i += 1
    count = len(masks)
    width = max(1, max(len(r) for r in rows))
    succ = np.full((count + 1, width), count, dtype=np.int64)
    elem = np.full((count + 1, width), n, dtype=np.int64)
    for i, row in enumerate(rows):
        for k, (j, x) in enumerate(row):
            succ[i, k], elem[i, k] = j, x
    return succ, elem, np.asarray(sizes, dtype=np.int64)


def _dp_match(pa, pb, w, fixed_idx, closure, limits, deadline):
    """Exact optimum by dynamic programming over pairs of order ideals, or None.

    A matching is acyclic iff some common topological order of the merged graph exists,
    i.e. iff it is order-preserving between some linear extensions of A and B. Walking
    such an order, the nodes placed so far form an order ideal of A and one of B; each
    step places a node of A alone, one of B alone, or a matched pair. The best total from
    each pair of ideals is a longest path in this state graph. Only nodes that can be
    matched matter (with reachability between them), so real networks, whose points form
    nearly a chain, have a few hundred ideals each. States are processed by decreasing
    number of placed nodes, one vectorised level at a time. Returns None beyond `limits`
    (states, ideals per graph) or past the deadline; otherwise (pairs, True, states).
    """
    fixed_a = [u for u, _ in fixed_idx]
    fixed_b = [v for _, v in fixed_idx]
    ra = np.unique(np.concatenate([pa, np.asarray(fixed_a, dtype=np.int64)]))
    rb = np.unique(np.concatenate([pb, np.asarray(fixed_b, dtype=np.int64)]))
    order_a = closure.unpack(closure.bits[ra])[:, ra]
    order_b = closure.unpack(closure.bits[rb])[:, rb]
    cap, cap_ideals = limits
    lat_a = _ideal_lattice(order_a, min(cap, cap_ideals))
    if lat_a is None:
        return None
    lat_b = _ideal_lattice(order_b, min(max(1, cap // len(lat_a[2])), cap_ideals))
    if lat_b is None:
        return None
    succ_a, elem_a, size_a = lat_a
    succ_b, elem_b, size_b = lat_b
    nia, nib = size_a.size, size_b.size
    wa, wb = succ_a.shape[1], succ_b.shape[1]
    # pair weights between relevant nodes; padded row/column = impossible
    gain = np.full((ra.size + 1, rb.size + 1), -np.inf)
    gain[np.searchsorted(ra, pa), np.searchsorted(rb, pb)] = w
    skip_a = np.ones(ra.size + 1, dtype=bool)
    skip_b = np.ones(rb.size + 1, dtype=bool)
    skip_a[-1] = skip_b[-1] = False
    for u, v in fixed_idx:  # a fixed node is placed only together with its partner
        i, j = np.searchsorted(ra, u), np.searchsorted(rb, v)
        gain[i, :] = -np.inf
        gain[:, j] = -np.inf
        gain[i, j] = 0.0
        skip_a[i] = skip_b[j] = False
    value = np.full((nia + 1, nib + 1), -np.inf)
    value[nia - 1, nib - 1] = 0.0
    choice = np.zeros((nia, nib), dtype=np.int32)
    rank = (size_a[:, None] + size_b[None, :]).ravel()
    by_rank = np.argsort(-rank, kind="stable")
    # states with rank.max() - t placed nodes: by_rank[bounds[t] : bounds[t + 1]]
    bounds = np.append(np.searchsorted(-rank[by_rank], np.arange(-rank.max(), 1)), rank.size)
    for t in range(1, len(bounds) - 1):  # t = 0 is the final state
        if t % 64 == 0 and _past(deadline):
            return None
        flat = by_rank[bounds[t] : bounds[t + 1]]
        i, j = flat // nib, flat % nib
        best = np.full(flat.size, -np.inf)
        code = np.zeros(flat.size, dtype=np.int32)
        options = []
        for k in range(wa):
            options.append(np.where(skip_a[elem_a[i, k]], value[succ_a[i, k], j], -np.inf))
        for m in range(wb):
            options.append(np.where(skip_b[elem_b[j, m]], value[i, succ_b[j, m]], -np.inf))
        for k in range(wa):
            for m in range(wb):
                options.append(value[succ_a[i, k], succ_b[j, m]] + gain[elem_a[i, k], elem_b[j, m]])
        for c, option in enumerate(options, start=1):
            better = option > best
            best[better] = option[better]
            code[better] = c
        value[i, j] = best
        choice[i, j] = code
    if not np.isfinite(value[0, 0]):
        return None
    pairs = []
    i = j = 0
    while (i, j) != (nia - 1, nib - 1):
        c = int(choice[i, j]) - 1
        if c < wa:
            i = succ_a[i, c]
        elif c < wa + wb:
            j = succ_b[j, c - wa]
        else:
            k, m = divmod(c - wa - wb, wb)
            x, y = elem_a[i, k], elem_b[j, m]
            if (int(ra[x]), int(rb[y])) not in fixed_idx:
                pairs.append((int(ra[x]), int(rb[y])))
            i, j = succ_a[i, k], succ_b[j, m]
    return pairs, True, nia * nib


# --------------------------------------------------------------------------- public API


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
    and bound); see the module docstring. Raises ValueError for cyclic graphs, unknown
    nodes, or fixed pairs that reuse a node or cannot be merged without a cycle.
    """
    if method not in ("auto", "dp", "bnb"):
        raise ValueError(f"method must be 'auto', 'dp' or 'bnb', not {method!r}")
    start = time.perf_counter()
    deadline = None if time_limit is None else start + time_limit
    order_a = _topological_order(dag_a, "dag_a")
    order_b = _topological_order(dag_b, "dag_b")
    index_a = {v: i for i, v in enumerate(order_a)}
    index_b = {v: i for i, v in enumerate(order_b)}
    na, nb = len(order_a), len(order_b)
    base = _Reach.of([(dag_a, order_a, index_a, 0), (dag_b, order_b, index_b, na)], na + nb)
    closure = base.copy()  # A + B without any merge, for the decomposition

    # fixed pairs: merged first, always in the result
    fixed = [tuple(p) for p in fixed]
    used = np.zeros(na + nb, dtype=bool)
    for a, b in fixed:
        if a not in index_a or b not in index_b:
            raise ValueError(f"fixed pair {(a, b)} names a node outside the graphs")
        u, v = index_a[a], na + index_b[b]
        if used[u] or used[v]:
            raise ValueError(f"fixed pair {(a, b)} reuses a node of another fixed pair")
        if base.connected(u, v):
            raise ValueError(f"fixed pairs {fixed} cannot be merged without a cycle")
        base.merge(u, v)
        used[u] = used[v] = True

    # candidate pairs, in (topological index of a, of b) order
    items = []
    for (a, b), weight in weights.items():
        if a not in index_a or b not in index_b:
            raise ValueError(f"weighted pair {(a, b)} names a node outside the graphs")
        if not weight > 0 or not math.isfinite(weight):
            continue
        items.append((index_a[a], na + index_b[b], float(weight)))
    items.sort()
    pa = np.array([i[0] for i in items], dtype=np.int64)
    pb = np.array([i[1] for i in items], dtype=np.int64)
    w = np.array([i[2] for i in items], dtype=float)
    ok = ~used[pa] & ~used[pb] & ~base.reaches_many(pa, pb) & ~base.reaches_many(pb, pa)
    pa, pb, w = pa[ok], pb[ok], w[ok]

    chosen: list[tuple[int, int]] = []
    optimal = True
    explored = 0
    if pa.size:
        # tie-breaking bonus (see the module docstring)
        da = _default_depth(dag_a, order_a)
        db = _default_depth(dag_b, order_b)
        if depth_a:
            da.update({k: float(v) for k, v in depth_a.items() if k in da})
        if depth_b:
            db.update({k: float(v) for k, v in depth_b.items() if k in db})
        dep = np.array([da[v] for v in order_a] + [db[v] for v in order_b])
        mismatch = np.abs(dep[pa] - dep[pb])
        unit = _grid_unit(w)
        budget = 0.5 * unit if unit is not None else 1e-6 * float(w.min())
        most = min(np.unique(pa).size, np.unique(pb).size) + 1
        wp = w + budget / most * (1.0 - np.minimum(mismatch, 1.0) ** 2)

        fixed_idx = [(index_a[a], na + index_b[b]) for a, b in fixed]
        solved = None
        if method in ("auto", "dp"):
            limits = _DP_LIMITS[method]
            solved = _dp_match(
                pa, pb, wp if unit is not None else w, fixed_idx, closure, limits, deadline
            )
            if solved is None and method == "dp" and not _past(deadline):
                raise ValueError(
                    f"the graphs are too wide for the dynamic programming (more than "
                    f"{limits[1]} order ideals or {limits[0]} states): use method='bnb'"
                )
        if solved is None:
            solved = _bnb_match(pa, pb, w, wp, mismatch, fixed_idx, base, closure, unit, deadline)
        chosen, optimal, explored = solved

    result = [(a, b, float(weights.get((a, b), 0.0))) for a, b in fixed]
    result += [
        (order_a[u], order_b[v - na], float(weights[(order_a[u], order_b[v - na])]))
        for u, v in chosen
    ]
    result.sort(key=lambda t: index_a[t[0]])
    return MatchResult(
        pairs=result,
        total=float(sum(t[2] for t in result)),
        optimal=optimal,
        nodes_explored=explored,
        seconds=time.perf_counter() - start,
    )


def is_acyclic_merge(
    dag_a: nx.DiGraph, dag_b: nx.DiGraph, pairs: Sequence[tuple[str, str] | tuple[str, str, float]]
) -> bool:
    """True when merging each pair's a with its b keeps A + B acyclic and no node is reused."""
    merged = {}
    for pair in pairs:
        a, b = pair[0], pair[1]
        if ("A", a) in merged or ("B", b) in merged:
            return False
        merged[("A", a)] = merged[("B", b)] = ("M", a, b)
    union = nx.DiGraph()
    for side, dag in (("A", dag_a), ("B", dag_b)):
        for v in dag.nodes:
            union.add_node(merged.get((side, v), (side, v)))
        for u, v in dag.edges:
            union.add_edge(merged.get((side, u), (side, u)), merged.get((side, v), (side, v)))
    return nx.is_directed_acyclic_graph(union)


def brute_force_match(
    dag_a: nx.DiGraph,
    dag_b: nx.DiGraph,
    weights: Mapping[Pair, float],
    fixed: Sequence[Pair] = (),
) -> MatchResult:
    """Reference optimum by exhaustive enumeration (exponential: tiny graphs only).

    Enumerates matchings node by node of A, discarding a partial matching as soon as its
    pair graph (p -> q when a_p reaches a_q or b_p reaches b_q) has a cycle, and skipping
    branches that cannot beat the best total even if every remaining A node got its
    heaviest pair.
    """
    start = time.perf_counter()
    desc_a = {v: nx.descendants(dag_a, v) for v in dag_a.nodes}
    desc_b = {v: nx.descendants(dag_b, v) for v in dag_b.nodes}

    def cyclic(pairs: list[Pair]) -> bool:
        succ = {
            i: [j for j, q in enumerate(pairs) if q[0] in desc_a[p[0]] or q[1] in desc_b[p[1]]]
            for i, p in enumerate(pairs)
        }
        state = dict.fromkeys(range(len(pairs)), 0)

        def visit(i: int) -> bool:
            state[i] = 1
            for j in succ[i]:
                if state[j] == 1 or (state[j] == 0 and visit(j)):
                    return True
            state[i] = 2
            return False

        return any(state[i] == 0 and visit(i) for i in range(len(pairs)))

    fixed = [tuple(p) for p in fixed]
    if cyclic(fixed):
        raise ValueError("fixed pairs cannot be merged without a cycle")
    used_a = {a for a, _ in fixed}
    used_b = {b for _, b in fixed}
    options: dict[str, list[tuple[str, float]]] = {}
    for (a, b), weight in weights.items():
        if weight > 0 and a not in used_a and b not in used_b:
            options.setdefault(a, []).append((b, weight))
    a_nodes = [v for v in dag_a.nodes if v in options]
    best_rest = [0.0] * (len(a_nodes) + 1)
    for i in range(len(a_nodes) - 1, -1, -1):
        best_rest[i] = best_rest[i + 1] + max(wt for _, wt in options[a_nodes[i]])
    best: dict = {"value": -1.0, "pairs": []}
    explored = 0

    def extend(i: int, pairs: list[Pair], value: float, taken: set) -> None:
        nonlocal explored
        explored += 1
        if value > best["value"]:
            best["value"], best["pairs"] = value, list(pairs)
        if i == len(a_nodes) or value + best_rest[i] <= best["value"]:
            return
        a = a_nodes[i]
        for b, weight in options[a]:
            if b in taken:
                continue
            pairs.append((a, b))
            if not cyclic(fixed + pairs):
                taken.add(b)
                extend(i + 1, pairs, value + weight, taken)
                taken.discard(b)
            pairs.pop()
        extend(i + 1, pairs, value, taken)

    extend(0, [], 0.0, set())
    result = [(a, b, float(weights.get((a, b), 0.0))) for a, b in fixed + best["pairs"]]
    order = {v: i for i, v in enumerate(_topological_order(dag_a, "dag_a"))}
    result.sort(key=lambda t: order[t[0]])
    return MatchResult(
        result, float(sum(t[2] for t in result)), True, explored, time.perf_counter() - start
    )


# --------------------------------------------------------------------------- networks


@dataclass
class Matching(MatchResult):
    """A matching of two traced networks; `weight_seconds` is the time spent on weights."""

    weight_seconds: float = 0.0
    candidates: tuple[int, int] = (0, 0)


def match(
    graph_a,
    graph_b,
    *,
    similarity: str = "uniform",
    data=None,
    max_ratio: int = 1,
    weights: Mapping[Pair, float] | None = None,
    time_limit: float | None = None,
) -> Matching:
    """Match the stitching points of two traced networks (`evostitch.trace`).

    Inputs are matched with inputs and outputs with outputs. `similarity` chooses the
    pair weights: "uniform" (every compatible pair weighs 1, the paper's setting) or
    "cka" (linear CKA on `data`, an iterable of input batches); `weights` overrides both.
    """
    from .errors import EvostitchError
    from .similarity import cka_weights, compatible_pairs, uniform_weights

    start = time.perf_counter()
    pairs = compatible_pairs(graph_a, graph_b, max_ratio)
    if weights is None:
        if similarity == "uniform":
            weights = uniform_weights(pairs)
        elif similarity == "cka":
            if data is None:
                raise EvostitchError("CKA weights need data: pass --data (or data=batches)")
            weights = cka_weights(graph_a, graph_b, pairs, data)
        else:
            raise EvostitchError(f"unknown similarity {similarity!r}: use uniform or cka")
    weight_seconds = time.perf_counter() - start
    fixed = [(graph_a.input, graph_b.input), (graph_a.output, graph_b.output)]
    result = match_dags(
        graph_a.dag,
        graph_b.dag,
        weights,
        fixed,
        time_limit=time_limit,
        depth_a={n: graph_a[n].depth for n in graph_a.nodes},
        depth_b={n: graph_b[n].depth for n in graph_b.nodes},
    )
    return Matching(
        **vars(result),
        weight_seconds=weight_seconds,
        candidates=(len(graph_a.candidates()), len(graph_b.candidates())),
    )

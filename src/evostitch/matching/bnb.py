"""Branch and bound, as in the paper but exact (`method="bnb"`).

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
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from .reach import Reach


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
    reach: Reach  # closure of A + B + base fixed pairs + forced pairs
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
    def _pair_graph(self, reach: Reach, rel: np.ndarray) -> np.ndarray:
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


def bnb_match(pa, pb, w, wp, mismatch, fixed_idx, base, closure, unit, deadline):
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

"""Dynamic programming over order ideals (`method="dp"`).

A matching is acyclic iff the merged graph has a topological order, i.e. iff the
matching is order-preserving between *some* linear extensions of A and B. Walking such
an order, the nodes placed so far form an order ideal (down-closed set) of A and one of
B; a step places one node of A, one of B, or a matched pair. The optimum is a longest
path over pairs of ideals. Only matchable nodes matter (with the reachability between
them), and the points of real networks form nearly a chain: ResNet-152 has 581 ideals,
EfficientNet-B4 504, so ~300k states, processed one vectorised level (number of placed
nodes) at a time: well under a second for any weights, CKA included. The number of
ideals grows exponentially with the width of the graphs (many parallel branches), so
beyond `DP_LIMITS["auto"]` "auto" switches to branch and bound. (This is not the
paper's algorithm; it is exact for the same problem, and tested against brute force and
against the branch and bound.)

With weights on a grid, `match_dags` passes the bonus-perturbed weights (see `bnb`,
Ties), so the DP picks among the optima the one pairing similar depths.
"""

from __future__ import annotations

import time

import numpy as np

# method="auto" uses the DP up to this many states, and ideals per graph (enumerating them
# is pure Python: ~0.5 s for 50k); method="dp" refuses only beyond the larger limits
DP_LIMITS = {"auto": (3_000_000, 50_000), "dp": (10_000_000, 1_000_000)}


def past(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() > deadline


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


def _take_better(best: np.ndarray, code: np.ndarray, option: np.ndarray, c: int) -> None:
    """Where `option` beats `best`, take it and record its code `c` (the first best wins ties)."""
    better = option > best
    best[better] = option[better]
    code[better] = c


def _lattices(pa, pb, fixed_idx, closure, limits):
    """The relevant nodes of A and B (candidate or fixed) and their ideal lattices, or None.

    None when a lattice exceeds `limits` (states, ideals per graph); B gets the state
    budget left by A's ideal count.
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
    return ra, rb, lat_a, lat_b


def _gains(ra, rb, pa, pb, w, fixed_idx):
    """Pair weights between relevant nodes (padded row/column: impossible) and which nodes
    may be placed alone (not fixed ones: they go only together with their partner)."""
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
    return gain, skip_a, skip_b


def _options(i, j, value, lat_a, lat_b, gain, skip_a, skip_b) -> list[np.ndarray]:
    """Totals of every step from the states (i, j): A alone, B alone, then pairs (codes 1..)."""
    succ_a, elem_a, _ = lat_a
    succ_b, elem_b, _ = lat_b
    wa, wb = succ_a.shape[1], succ_b.shape[1]
    options = []
    for k in range(wa):
        options.append(np.where(skip_a[elem_a[i, k]], value[succ_a[i, k], j], -np.inf))
    for m in range(wb):
        options.append(np.where(skip_b[elem_b[j, m]], value[i, succ_b[j, m]], -np.inf))
    for k in range(wa):
        for m in range(wb):
            options.append(value[succ_a[i, k], succ_b[j, m]] + gain[elem_a[i, k], elem_b[j, m]])
    return options


def _fill(lat_a, lat_b, gain, skip_a, skip_b, deadline):
    """Best total from each pair of ideals and the step taking it (1-based code), by
    decreasing number of placed nodes, one vectorised level at a time; None past deadline."""
    nia, nib = lat_a[2].size, lat_b[2].size
    value = np.full((nia + 1, nib + 1), -np.inf)
    value[nia - 1, nib - 1] = 0.0
    choice = np.zeros((nia, nib), dtype=np.int32)
    rank = (lat_a[2][:, None] + lat_b[2][None, :]).ravel()
    by_rank = np.argsort(-rank, kind="stable")
    # states with rank.max() - t placed nodes: by_rank[bounds[t] : bounds[t + 1]]
    bounds = np.append(np.searchsorted(-rank[by_rank], np.arange(-rank.max(), 1)), rank.size)
    for t in range(1, len(bounds) - 1):  # t = 0 is the final state
        if t % 64 == 0 and past(deadline):
            return None
        flat = by_rank[bounds[t] : bounds[t + 1]]
        i, j = flat // nib, flat % nib
        best = np.full(flat.size, -np.inf)
        code = np.zeros(flat.size, dtype=np.int32)
        options = _options(i, j, value, lat_a, lat_b, gain, skip_a, skip_b)
        for c, option in enumerate(options, start=1):
            _take_better(best, code, option, c)
        value[i, j] = best
        choice[i, j] = code
    return value, choice


def _trace(choice, lat_a, lat_b, ra, rb, fixed_idx) -> list[tuple[int, int]]:
    """The matched (non-fixed) pairs along the chosen steps from the empty ideals."""
    succ_a, elem_a, size_a = lat_a
    succ_b, elem_b, size_b = lat_b
    nia, nib = size_a.size, size_b.size
    wa, wb = succ_a.shape[1], succ_b.shape[1]
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
    return pairs


def dp_match(pa, pb, w, fixed_idx, closure, limits, deadline):
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
    found = _lattices(pa, pb, fixed_idx, closure, limits)
    if found is None:
        return None
    ra, rb, lat_a, lat_b = found
    gain, skip_a, skip_b = _gains(ra, rb, pa, pb, w, fixed_idx)
    filled = _fill(lat_a, lat_b, gain, skip_a, skip_b, deadline)
    if filled is None:
        return None
    value, choice = filled
    if not np.isfinite(value[0, 0]):
        return None
    pairs = _trace(choice, lat_a, lat_b, ra, rb, fixed_idx)
    return pairs, True, lat_a[2].size * lat_b[2].size

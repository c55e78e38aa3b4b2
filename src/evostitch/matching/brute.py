"""Reference results for the tests: is a merge acyclic, and the optimum by brute force."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import networkx as nx

from ..errors import MatchingError
from .reach import topological_order
from .result import MatchResult
from .similarity import Pair


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
        raise MatchingError("fixed pairs cannot be merged without a cycle")
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
    order = {v: i for i, v in enumerate(topological_order(dag_a, "dag_a"))}
    result.sort(key=lambda t: order[t[0]])
    return MatchResult(
        result, float(sum(t[2] for t in result)), True, explored, time.perf_counter() - start
    )

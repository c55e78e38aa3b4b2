"""Reference results for the tests: is a merge acyclic, and the optimum by brute force."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import networkx as nx

from ..errors import MatchingError
from .multi import PairWeights, _members, _prepare, _sorted, group_weight
from .reach import topological_order
from .result import Group, Matching, MatchResult
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


def _cyclic(pairs: list[Pair], desc_a: dict, desc_b: dict) -> bool:
    """True when the pair graph (p -> q when a_p reaches a_q or b_p reaches b_q) has a cycle."""
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


def _options(weights: Mapping[Pair, float], fixed: list) -> dict[str, list[tuple[str, float]]]:
    """Per node of A, its positively weighted partners (b, weight), fixed nodes left out."""
    used_a = {a for a, _ in fixed}
    used_b = {b for _, b in fixed}
    options: dict[str, list[tuple[str, float]]] = {}
    for (a, b), weight in weights.items():
        if weight > 0 and a not in used_a and b not in used_b:
            options.setdefault(a, []).append((b, weight))
    return options


def _best_rest(a_nodes: list, options: dict) -> list[float]:
    """best_rest[i]: the most a_nodes[i:] can add, each with its heaviest pair (a bound)."""
    best_rest = [0.0] * (len(a_nodes) + 1)
    for i in range(len(a_nodes) - 1, -1, -1):
        best_rest[i] = best_rest[i + 1] + max(wt for _, wt in options[a_nodes[i]])
    return best_rest


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
    fixed = [tuple(p) for p in fixed]
    if _cyclic(fixed, desc_a, desc_b):
        raise MatchingError("fixed pairs cannot be merged without a cycle")
    options = _options(weights, fixed)
    a_nodes = [v for v in dag_a.nodes if v in options]
    best_rest = _best_rest(a_nodes, options)
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
            if not _cyclic(fixed + pairs, desc_a, desc_b):
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


def _near(weights: dict) -> dict:
    """(p, v) -> {(q, u): w_pq(v, u)}: every node's compatible partners in other parents."""
    near: dict = {}
    for (p, q), table in weights.items():
        for (u, v), w in table.items():
            near.setdefault((p, u), {})[(q, v)] = near.setdefault((q, v), {})[(p, u)] = w
    return near


def _rest_bounds(items: list, weights: dict) -> list[float]:
    """rest[i]: the most items[i:] can add: w_pq(u, v), p < q, v left; u and v pair once."""
    rest = []
    for i in range(len(items) + 1):
        left, bound = set(items[i:]), 0.0
        for (_, q), table in weights.items():
            most_p, most_q = {}, {}
            for (u, v), w in table.items():
                if (q, v) in left:
                    most_p[u], most_q[v] = max(most_p.get(u, 0.0), w), max(most_q.get(v, 0.0), w)
            bound += min(sum(most_p.values()), sum(most_q.values()))
        rest.append(bound)
    return rest


def _reaches_itself(groups: list[dict], desc: list[dict], i: int) -> bool:
    """True when group i reaches itself in the group graph (its merge makes a cycle)."""
    todo, seen = [i], set()
    multi = [(j, o) for j, o in enumerate(groups) if len(o) > 1]
    while todo:
        h = groups[todo.pop()]
        for j, o in multi:
            if any(q in h and o[q] in desc[q][h[q]] for q in o):
                if j == i:
                    return True
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
    return False


def brute_force_match_k(
    dags: Sequence[nx.DiGraph], weights: PairWeights, fixed: Sequence[Group] = ()
) -> Matching:
    """Reference optimum by exhaustive enumeration (exponential: tiny graphs only).

    Nodes are taken parent by parent; each starts a group or joins a compatible earlier one.
    A partial matching with a cycle is dropped (adding members never removes a cycle); a
    branch is cut when even the heaviest pairs left cannot beat the best.
    """
    start = time.perf_counter()
    weights, fixed = _prepare(dags, weights, fixed)
    desc = [{v: nx.descendants(dag, v) for v in dag} for dag in dags]
    near = _near(weights)  # (p, v) -> {(q, u): w_pq(v, u)}
    free = near.keys() - {m for g in fixed for m in _members(g)}
    items = [(p, v) for p, dag in enumerate(dags) for v in dag if (p, v) in free]
    rest = _rest_bounds(items, weights)
    groups = [dict(_members(g)) for g in fixed]
    best = {"value": -math.inf, "groups": []}

    def extend(i: int, value: float) -> None:
        if value > best["value"]:
            best["value"] = value
            best["groups"] = [tuple(map(g.get, range(len(dags)))) for g in groups if len(g) > 1]
        if i == len(items) or value + rest[i] <= best["value"]:
            return
        p, v = items[i]
        joins = []  # (gain, group) for the groups v may join, heaviest first
        for j, g in enumerate(groups[len(fixed) :], start=len(fixed)):
            add = [near[(p, v)].get(m) for m in g.items()]
            if p not in g and None not in add:
                joins.append((-sum(add), j))
        for add, j in sorted(joins):
            if value - add + rest[i + 1] <= best["value"]:
                break
            groups[j][p] = v
            if not _reaches_itself(groups, desc, j):
                extend(i + 1, value - add)
            del groups[j][p]
        groups.append({p: v})
        extend(i + 1, value)
        groups.pop()

    extend(0, sum(group_weight(weights, g, True) for g in fixed))
    return _sorted(dags, weights, best["groups"], fixed, "brute", True, start)

"""K-parent matching: valid, `match_dags` for K = 2, against brute force for K = 3 and 4."""

import itertools
import math
import random

import networkx as nx
import pytest

from evostitch.errors import MatchingError
from evostitch.matching import match_dags
from evostitch.matching.brute import brute_force_match_k
from evostitch.matching.multi import (
    group_weight,
    is_acyclic_merge_k,
    match_parents,
)


def random_dag(rng: random.Random, n: int, prefix: str, shape: str) -> nx.DiGraph:
    """n nodes: a chain, random forward edges, or chains in parallel between shared nodes."""
    names = [f"{prefix}{i}" for i in range(n)]
    g = nx.DiGraph()
    g.add_nodes_from(names)
    if shape == "chain":
        nx.add_path(g, names)
    elif shape == "random":
        p = rng.choice([0.1, 0.25, 0.4, 0.6])
        pairs = itertools.combinations(names, 2)
        g.add_edges_from((a, b) for a, b in pairs if rng.random() < p)
    else:  # branches of 1-2 nodes between shared nodes
        prev, i = names[0], 1
        while i < n:
            ends = []
            for _ in range(rng.randint(1, 2)):
                chain = names[i : i + rng.randint(1, 2)]
                i += len(chain)
                if chain:
                    nx.add_path(g, [prev, *chain])
                    ends.append(chain[-1])
            if i < n:
                g.add_edges_from((e, names[i]) for e in ends)
                prev, i = names[i], i + 1
    return g


def random_weights(rng: random.Random, dags: list[nx.DiGraph]) -> dict:
    """Random compatibility (a density per instance) and weights of one kind."""
    density = rng.uniform(0.2, 0.8)
    kind = rng.choice(["uniform", "real", "small-int"])
    draw = {"uniform": lambda: 1.0, "real": lambda: rng.uniform(0.05, 1.0)}
    draw["small-int"] = lambda: float(rng.randint(1, 3))
    return {
        (p, q): {(u, v): draw[kind]() for u in dags[p] for v in dags[q] if rng.random() < density}
        for p, q in itertools.combinations(range(len(dags)), 2)
    }


def random_instance(seed: int, k: int = 3, sizes: tuple[int, int] = (4, 6), shape: str = ""):
    rng = random.Random(seed)
    shapes = [shape or rng.choice(["chain", "random", "branches"]) for _ in range(k)]
    dags = [random_dag(rng, rng.randint(*sizes), "abcdef"[p], s) for p, s in enumerate(shapes)]
    return dags, random_weights(rng, dags)


def check(result, dags, weights, fixed=()):
    """Valid: acyclic merge, each node once, members compatible, weights summed."""
    assert is_acyclic_merge_k(dags, result.groups)
    for g, w in zip(result.groups, result.weights, strict=True):
        if g not in fixed:
            assert group_weight(weights, g) == pytest.approx(w)
    assert all(f in result.groups for f in fixed)
    assert result.total == pytest.approx(sum(result.weights))


def pairwise(dags, weights) -> list[float]:
    """The optimum of each pair of parents: the heaviest is a valid K-parent matching, the
    sum bounds every K-parent matching (restricted to two parents it stays valid)."""
    return [
        match_dags(dags[p], dags[q], weights.get((p, q), {})).total
        for p, q in itertools.combinations(range(len(dags)), 2)
    ]


def test_two_parents_are_match_dags():
    for seed in range(60):
        (dag_a, dag_b), weights = random_instance(seed, k=2, sizes=(1, 8))
        fixed = []
        if seed % 3 == 0:  # an input and an output, fixed together
            for dag in (dag_a, dag_b):
                p = next(iter(dag))[0]
                inner = list(dag)
                dag.add_edges_from((f"{p}_in", v) for v in inner)
                dag.add_edges_from((v, f"{p}_out") for v in inner)
            fixed = [("a_in", "b_in"), ("a_out", "b_out")]
        want = match_dags(dag_a, dag_b, weights[(0, 1)], fixed)
        for method in ("auto", "dp", "progressive"):
            got = match_parents([dag_a, dag_b], weights, fixed, method=method)
            assert got.groups == [(a, b) for a, b, _ in want.pairs], seed
            assert got.weights == [w for _, _, w in want.pairs] and got.total == want.total


def test_three_parents_against_brute_force():
    for seed in range(200):
        shape = "chain" if seed % 2 else ""
        dags, weights = random_instance(seed, shape=shape)
        best = brute_force_match_k(dags, weights)
        check(best, dags, weights)
        exact = match_parents(dags, weights)  # small: the exact DP
        assert exact.method == "dp" and exact.optimal
        assert exact.total == pytest.approx(best.total), seed
        check(exact, dags, weights)
        fast = match_parents(dags, weights, method="progressive")
        check(fast, dags, weights)
        assert fast.optimal == (fast.total >= sum(pairwise(dags, weights)) - 1e-9), seed
        # so at least a third of the optimum; the distribution: benchmarks/multi_matching.py
        pairs = pairwise(dags, weights)
        assert max(pairs) - 1e-9 <= fast.total <= best.total + 1e-9 <= sum(pairs) + 2e-9, seed


def test_four_parents_against_brute_force():
    for seed in range(15):
        dags, weights = random_instance(1000 + seed, k=4, sizes=(2, 3))
        best = brute_force_match_k(dags, weights)
        for method in ("dp", "progressive"):
            got = match_parents(dags, weights, method=method)
            check(got, dags, weights)
            assert got.total <= best.total + 1e-9
            assert (got.total == pytest.approx(best.total)) or method == "progressive"


def test_cycle_through_three_parents():
    # every pairwise restriction is acyclic, the three groups together are not
    dags = [nx.DiGraph([(f"{p}0", f"{p}1")]) for p in "abc"]
    groups = [("a0", "b1", None), (None, "b0", "c1"), ("a1", None, "c0")]
    weights = {(0, 1): {("a0", "b1"): 1.0}, (1, 2): {("b0", "c1"): 1.0}}
    weights[(0, 2)] = {("a1", "c0"): 1.0}
    assert not is_acyclic_merge_k(dags, groups)
    for two in itertools.combinations(groups, 2):
        assert is_acyclic_merge_k(dags, list(two))
    assert not is_acyclic_merge_k(dags, [("a0", "b0", None), ("a0", None, "c0")])  # reuse
    for method in ("dp", "progressive"):
        got = match_parents(dags, weights, method=method)
        assert got.total == 2.0 and is_acyclic_merge_k(dags, got.groups)
    assert brute_force_match_k(dags, weights).total == 2.0


def test_progressive_order_and_refinement_help():
    # a0 -> a1; b0; c0. (a0, b0) alone is the heaviest pair, but the group (a1, b0, c0)
    # beats it: only starting from another pair of parents (or refining) finds it
    a = nx.DiGraph([("a0", "a1")])
    b, c = nx.DiGraph(), nx.DiGraph()
    b.add_node("b0")
    c.add_node("c0")
    weights = {(0, 1): {("a0", "b0"): 1.0, ("a1", "b0"): 0.9}, (0, 2): {("a1", "c0"): 1.0}}
    weights[(1, 2)] = {("b0", "c0"): 1.0}
    plain = match_parents([a, b, c], weights, method="progressive", orders="given", refine=False)
    assert plain.groups == [("a0", "b0", None), ("a1", None, "c0")] and plain.total == 2.0
    for orders, refine in (("all", False), ("given", True)):
        got = match_parents([a, b, c], weights, method="progressive", orders=orders, refine=refine)
        assert got.groups == [("a1", "b0", "c0")] and math.isclose(got.total, 2.9)


def test_fixed_groups():
    for seed in range(30):
        dags, weights = random_instance(2000 + seed, sizes=(2, 5))
        for dag in dags:
            p = next(iter(dag))[0]
            inner = list(dag)
            dag.add_edges_from((f"{p}_in", v) for v in inner)
            dag.add_edges_from((v, f"{p}_out") for v in inner)
        fixed = [("a_in", "b_in", "c_in"), ("a_out", None, "c_out")]
        best = brute_force_match_k(dags, weights, fixed)
        for method in ("dp", "progressive"):
            got = match_parents(dags, weights, fixed, method=method)
            check(got, dags, weights, fixed)
            assert "b_out" not in {g[1] for g in got.groups}  # a fixed group stays alone
            assert got.total <= best.total + 1e-9
            assert (got.total == pytest.approx(best.total)) or method == "progressive"


def test_deterministic_and_tie_breaking():
    # three chains of 4, 8 and 12 with uniform weights: all of the shortest is matched,
    # ties go to similar relative depths
    dags = [
        nx.path_graph([f"{p}{i}" for i in range(n)], nx.DiGraph)
        for p, n in zip("abc", (4, 8, 12), strict=True)
    ]
    weights = {
        (p, q): {(u, v): 1.0 for u in dags[p] for v in dags[q]}
        for p, q in itertools.combinations(range(3), 2)
    }
    want = [("a0", "b0", "c0"), ("a1", "b2", "c3"), ("a2", "b5", "c8"), ("a3", "b7", "c11")]
    for method in ("dp", "progressive"):
        first = match_parents(dags, weights, method=method)
        again = match_parents(dags, weights, method=method)
        assert first.groups == again.groups and first.total == again.total
        assert first.total == 4 * 3 + 4  # 4 groups of 3 and 4 more pairs b-c
        assert first.optimal  # for the progressive: it reaches the sum of the pairwise optima
        assert [g for g in first.groups if None not in g] == want, method


def test_bad_input():
    dags = [nx.DiGraph([("a0", "a1")]), nx.DiGraph([("b0", "b1")]), nx.DiGraph([("c0", "c1")])]
    weights = {(0, 1): {("a0", "b0"): 1.0}}
    with pytest.raises(MatchingError, match="at least two parents"):
        match_parents(dags[:1], {})
    with pytest.raises(MatchingError, match="need 0 <= p < q"):
        match_parents(dags, {(1, 0): {("b0", "a0"): 1.0}})
    with pytest.raises(MatchingError, match="outside the graphs"):
        match_parents(dags, {(0, 1): {("a0", "zz"): 1.0}})
    with pytest.raises(MatchingError, match="not acyclic"):
        match_parents([*dags[:2], nx.DiGraph([("c0", "c1"), ("c1", "c0")])], weights)
    with pytest.raises(MatchingError, match="without a cycle"):
        match_parents(dags, weights, [("a0", "b1", None), ("a1", "b0", None)])
    with pytest.raises(MatchingError, match="at least two nodes"):
        match_parents(dags, weights, [("a0", None, None)])
    with pytest.raises(MatchingError, match="method must be"):
        match_parents(dags, weights, method="greedy")

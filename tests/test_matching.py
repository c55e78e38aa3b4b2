"""Cycle-free matching: both exact solvers against brute force, and at ResNet scale."""

import math
import random
import time

import networkx as nx
import pytest

from evostitch.errors import MatchingError
from evostitch.matching import brute_force_match, is_acyclic_merge, match_dags

METHODS = ["bnb", "dp", "auto"]


# --------------------------------------------------------------------------- small instances


def _random_dag(rng: random.Random, n: int, prefix: str) -> nx.DiGraph:
    """n nodes, either random forward edges or series-parallel chains (parallel branches)."""
    g = nx.DiGraph()
    names = [f"{prefix}{i}" for i in range(n)]
    g.add_nodes_from(names)
    if rng.random() < 0.5:
        p = rng.choice([0.1, 0.25, 0.4, 0.6])
        g.add_edges_from(
            (names[i], names[j]) for i in range(n) for j in range(i + 1, n) if rng.random() < p
        )
    else:  # a few chains from a shared node into a shared node, possibly in series
        i = 0
        prev = None
        while i < n:
            k = rng.randint(1, 3)
            ends = []
            for _ in range(k):
                length = rng.randint(1, 3)
                chain = names[i : i + length]
                i += len(chain)
                if not chain:
                    break
                nx.add_path(g, chain)
                if prev is not None:
                    g.add_edge(prev, chain[0])
                ends.append(chain[-1])
            if i < n and ends:
                prev = names[i]
                g.add_edges_from((e, prev) for e in ends)
                i += 1
    assert nx.is_directed_acyclic_graph(g)
    return g


def _random_instance(seed: int):
    rng = random.Random(seed)
    na, nb = rng.randint(1, 8), rng.randint(1, 8)
    dag_a = _random_dag(rng, na, "a")
    dag_b = _random_dag(rng, nb, "b")
    fixed = []
    if rng.random() < 0.6:  # an input and an output, fixed together
        for dag, p in ((dag_a, "a"), (dag_b, "b")):
            inner = list(dag.nodes)
            dag.add_edges_from((f"{p}_in", v) for v in inner)
            dag.add_edges_from((v, f"{p}_out") for v in inner)
        fixed = [("a_in", "b_in"), ("a_out", "b_out")]
    density = rng.uniform(0.2, 0.8)
    kind = rng.choice(["uniform", "real", "small-int"])
    weights = {}
    for a in range(na):
        for b in range(nb):
            if rng.random() < density:
                weights[(f"a{a}", f"b{b}")] = {
                    "uniform": 1.0,
                    "real": rng.uniform(0.05, 1.0),
                    "small-int": float(rng.randint(1, 3)),
                }[kind]
    return dag_a, dag_b, weights, fixed


def _check(result, dag_a, dag_b, weights, fixed):
    pairs = [(a, b) for a, b, _ in result.pairs]
    assert is_acyclic_merge(dag_a, dag_b, result.pairs)
    assert all(f in pairs for f in fixed)
    assert all(p in weights for p in pairs if p not in fixed)
    assert math.isclose(result.total, sum(w for _, _, w in result.pairs), abs_tol=1e-12)
    matched_a = [a for a, _ in pairs]  # listed in a topological order of A
    for i, a in enumerate(matched_a):
        assert not nx.descendants(dag_a, a) & set(matched_a[:i])


@pytest.mark.parametrize("method", METHODS)
def test_matches_brute_force_on_random_small_dags(method):
    for seed in range(400):
        dag_a, dag_b, weights, fixed = _random_instance(seed)
        got = match_dags(dag_a, dag_b, weights, fixed, method=method)
        want = brute_force_match(dag_a, dag_b, weights, fixed)
        assert got.optimal, seed
        assert abs(got.total - want.total) <= 1e-9, (seed, got.pairs, want.pairs)
        _check(got, dag_a, dag_b, weights, fixed)


def _cross_dags():
    """a1 < a2 and a3 < a4 in A; b2 < b3 and b4 < b1 in B: no crossing pair, one 4-cycle."""
    dag_a = nx.DiGraph([("a1", "a2"), ("a3", "a4")])
    dag_b = nx.DiGraph([("b2", "b3"), ("b4", "b1")])
    weights = {(f"a{i}", f"b{i}"): 1.0 for i in range(1, 5)}
    return dag_a, dag_b, weights


def test_cycle_through_parallel_branches_is_rejected():
    dag_a, dag_b, weights = _cross_dags()
    everything = list(weights)
    assert not is_acyclic_merge(dag_a, dag_b, everything)
    for leave_out in everything:  # any three of the four pairs are fine
        assert is_acyclic_merge(dag_a, dag_b, [p for p in everything if p != leave_out])
    assert brute_force_match(dag_a, dag_b, weights).total == 3.0
    for method in METHODS:
        result = match_dags(dag_a, dag_b, weights, method=method)
        assert result.total == 3.0 and result.optimal
        assert is_acyclic_merge(dag_a, dag_b, result.pairs)


def test_is_acyclic_merge_rejects_reused_nodes_and_crossings():
    dag_a = nx.DiGraph([("a1", "a2")])
    dag_b = nx.DiGraph([("b1", "b2")])
    assert is_acyclic_merge(dag_a, dag_b, [("a1", "b1"), ("a2", "b2")])
    assert not is_acyclic_merge(dag_a, dag_b, [("a1", "b2"), ("a2", "b1")])
    assert not is_acyclic_merge(dag_a, dag_b, [("a1", "b1"), ("a1", "b2")])


@pytest.mark.parametrize("method", METHODS)
def test_chains_match_in_order(method):
    dag_a = nx.path_graph([f"a{i}" for i in range(6)], create_using=nx.DiGraph)
    dag_b = nx.path_graph([f"b{i}" for i in range(6)], create_using=nx.DiGraph)
    weights = {(f"a{i}", f"b{j}"): 1.0 for i in range(1, 5) for j in range(1, 5)}
    result = match_dags(dag_a, dag_b, weights, [("a0", "b0"), ("a5", "b5")], method=method)
    assert [(a, b) for a, b, _ in result.pairs] == [(f"a{i}", f"b{i}") for i in range(6)]
    assert result.total == 4.0 and result.optimal
    # a shorter chain: every point of it is matched, in order
    dag_c = nx.path_graph(["c0", "c1", "c2"], create_using=nx.DiGraph)
    weights = {(f"a{i}", f"c{j}"): 1.0 for i in range(6) for j in range(3)}
    result = match_dags(dag_a, dag_c, weights, method=method)
    assert result.total == 3.0
    matched = [int(a[1:]) for a, _, _ in result.pairs]
    assert [c for _, c, _ in result.pairs] == ["c0", "c1", "c2"] and matched == sorted(matched)


def test_uniform_ties_prefer_similar_depths():
    # B is a chain twice as long as A: the optimum matches all of A; ties go to pairs at
    # similar relative depth, i.e. a_i with b_2i
    dag_a = nx.path_graph([f"a{i}" for i in range(6)], create_using=nx.DiGraph)
    dag_b = nx.path_graph([f"b{i}" for i in range(11)], create_using=nx.DiGraph)
    weights = {(f"a{i}", f"b{j}"): 1.0 for i in range(6) for j in range(11)}
    for method in METHODS:
        result = match_dags(dag_a, dag_b, weights, method=method)
        assert [(a, b) for a, b, _ in result.pairs] == [(f"a{i}", f"b{2 * i}") for i in range(6)]


@pytest.mark.parametrize("method", METHODS)
def test_deterministic(method):
    dag_a, _ = _resnet_like("a", [(2, 1), (3, 2), (3, 2)], with_se=False)
    dag_b, _ = _resnet_like("b", [(1, 1), (2, 2), (4, 2)], with_se=True)
    weights = _uniform_compatible(dag_a, dag_b)
    first = match_dags(dag_a, dag_b, weights, [("a_in", "b_in"), ("a_out", "b_out")], method=method)
    again = match_dags(dag_a, dag_b, weights, [("a_in", "b_in"), ("a_out", "b_out")], method=method)
    assert first.pairs == again.pairs and first.total == again.total


def test_methods_agree_on_medium_random_weights():
    rng = random.Random(7)
    for _ in range(5):
        dag_a, _ = _resnet_like("a", [(1, 1), (2, 2)], with_se=False)
        dag_b, _ = _resnet_like("b", [(1, 1), (1, 2)], with_se=True)
        weights = {p: rng.uniform(0.1, 1.0) for p in _uniform_compatible(dag_a, dag_b)}
        fixed = [("a_in", "b_in"), ("a_out", "b_out")]
        dp = match_dags(dag_a, dag_b, weights, fixed, method="dp")
        bnb = match_dags(dag_a, dag_b, weights, fixed, method="bnb", time_limit=60)
        assert dp.optimal and bnb.optimal
        assert abs(dp.total - bnb.total) <= 1e-9
        assert is_acyclic_merge(dag_a, dag_b, dp.pairs) and is_acyclic_merge(
            dag_a, dag_b, bnb.pairs
        )


def test_fixed_pairs_and_bad_input():
    dag_a = nx.DiGraph([("a1", "a2")])
    dag_b = nx.DiGraph([("b1", "b2")])
    weights = {("a1", "b2"): 5.0, ("a2", "b1"): 1.0, ("a2", "b2"): 0.0}
    result = match_dags(dag_a, dag_b, weights, [("a1", "b1")])
    # the other pairs reuse a fixed node, and pairs weighing 0 are never matched
    assert result.pairs == [("a1", "b1", 0.0)]
    with pytest.raises(MatchingError, match="cannot be merged without a cycle"):
        match_dags(dag_a, dag_b, weights, [("a1", "b2"), ("a2", "b1")])
    with pytest.raises(MatchingError, match="outside the graphs"):
        match_dags(dag_a, dag_b, {("a1", "zz"): 1.0})
    with pytest.raises(MatchingError, match="method must be"):
        match_dags(dag_a, dag_b, weights, method="greedy")
    with pytest.raises(MatchingError, match="not acyclic"):
        match_dags(nx.DiGraph([("a1", "a2"), ("a2", "a1")]), dag_b, {})
    with pytest.raises(MatchingError, match="cannot be merged without a cycle"):
        brute_force_match(dag_a, dag_b, weights, [("a1", "b2"), ("a2", "b1")])


def test_time_limit_returns_a_valid_matching():
    # wide graphs with real weights: the search cannot finish at once
    rng = random.Random(3)
    dag_a, dag_b = _parallel_chains("a", 8, 6), _parallel_chains("b", 7, 7)
    weights = {
        (a, b): rng.random()
        for a in dag_a
        for b in dag_b
        if a[1].isdigit() and b[1].isdigit() and rng.random() < 0.5
    }
    start = time.perf_counter()
    result = match_dags(
        dag_a, dag_b, weights, [("a_in", "b_in"), ("a_out", "b_out")], time_limit=0.5
    )
    assert time.perf_counter() - start < 10
    assert not result.optimal
    assert result.total > 0 and is_acyclic_merge(dag_a, dag_b, result.pairs)


def _parallel_chains(prefix: str, branches: int, length: int) -> nx.DiGraph:
    g = nx.DiGraph()
    for k in range(branches):
        nx.add_path(g, [f"{prefix}_in"] + [f"{prefix}{k}_{i}" for i in range(length)])
        g.add_edge(f"{prefix}{k}_{length - 1}", f"{prefix}_out")
    return g


# --------------------------------------------------------------------------- ResNet scale


def _resnet_like(prefix: str, stages: list[tuple[int, int]], with_se: bool):
    """A ResNet-like (or, with squeeze-excitation side branches, EfficientNet-like) DAG.

    `stages`: (blocks, stride) for each stage. Returns the DAG and each node's
    compatibility group (its spatial size, for a 224 input), also kept in
    `dag.graph["size"]`. Blocks are chains of conv/bn/act nodes with a residual add; a
    block that changes the size (its first conv still at the incoming size) has a
    parallel two-node projection shortcut. SE branches are 1x1 maps (the group of the
    final pooling) feeding a multiplication. Without SE the stem ends with a max pool.
    """
    g = nx.DiGraph()
    size: dict[str, str] = {}
    counter = iter(range(10**6))

    def node(group: int | str, *inputs: str) -> str:
        name = f"{prefix}{next(counter)}"
        g.add_node(name)
        g.add_edges_from((i, name) for i in inputs)
        size[name] = str(group)
        return name

    x = f"{prefix}_in"
    g.add_node(x)
    size[x] = "input"
    spatial = 112
    for _ in range(3):  # stem conv, bn, act
        x = node(spatial, x)
    if not with_se:
        spatial = 56
        x = node(spatial, x)  # max pool
    for blocks, stride in stages:
        for blk in range(blocks):
            new = spatial // stride if blk == 0 else spatial
            y = node(spatial, x)  # conv1 / expansion at the incoming size
            for _ in range(5):  # bn, act, conv2 (strided), bn, act
                y = node(spatial if _ < 2 else new, y)
            if with_se:
                z = node(1, y)  # pool, fc, act, fc, gate
                for _ in range(4):
                    z = node(1, z)
                y = node(new, y, z)  # y * gate
            for _ in range(2):  # project conv, bn
                y = node(new, y)
            if blk == 0:
                shortcut = node(new, node(new, x))  # projection conv, bn
                x = node(new, y, shortcut)
            else:
                x = node(new, y, x)
            x = node(new, x)
            spatial = new
    pool = node(1, x)
    flat = node("vector", pool)
    out = f"{prefix}_out"
    g.add_edge(flat, out)
    size[out] = "output"
    g.graph["size"] = size
    return g, size


RESNET152 = [(3, 1), (8, 2), (36, 2), (3, 2)]
EFFICIENTNET = [(2, 1), (4, 2), (4, 2), (6, 2), (6, 1), (6, 2), (2, 1)]


def _uniform_compatible(dag_a: nx.DiGraph, dag_b: nx.DiGraph) -> dict:
    size_a = _sizes(dag_a)
    size_b = _sizes(dag_b)
    by_size: dict[str, list[str]] = {}
    for b, s in size_b.items():
        by_size.setdefault(s, []).append(b)
    return {
        (a, b): 1.0
        for a, s in size_a.items()
        if s not in ("input", "output")
        for b in by_size.get(s, [])
    }


def _sizes(dag: nx.DiGraph) -> dict[str, str]:
    return dag.graph["size"]


@pytest.mark.parametrize("method", ["auto", "bnb"])
def test_resnet_scale_uniform(method):
    dag_a, _ = _resnet_like("a", RESNET152, with_se=False)  # ResNet-152-like
    dag_b, _ = _resnet_like("b", EFFICIENTNET, with_se=True)  # EfficientNet-like
    assert 450 <= dag_a.number_of_nodes() <= 600 and 450 <= dag_b.number_of_nodes() <= 600
    weights = _uniform_compatible(dag_a, dag_b)
    fixed = [("a_in", "b_in"), ("a_out", "b_out")]
    start = time.perf_counter()
    result = match_dags(dag_a, dag_b, weights, fixed, method=method, time_limit=120)
    elapsed = time.perf_counter() - start
    assert result.optimal
    assert elapsed < 20
    assert is_acyclic_merge(dag_a, dag_b, result.pairs)
    # the order-free bound, one pair per point of each group's smaller side, is reached:
    # within a group one side is (nearly) a chain, and sizes only shrink along paths
    size_a, size_b = _sizes(dag_a), _sizes(dag_b)
    groups = set(size_a.values()) - {"input", "output"}
    bound = sum(
        min(list(size_a.values()).count(grp), list(size_b.values()).count(grp)) for grp in groups
    )
    assert result.total == bound


def test_resnet_scale_real_weights():
    rng = random.Random(0)
    dag_a, _ = _resnet_like("a", RESNET152, with_se=False)
    dag_b, _ = _resnet_like("b", EFFICIENTNET, with_se=True)
    weights = {p: rng.uniform(0.1, 1.0) for p in _uniform_compatible(dag_a, dag_b)}
    fixed = [("a_in", "b_in"), ("a_out", "b_out")]
    start = time.perf_counter()
    result = match_dags(dag_a, dag_b, weights, fixed)  # the DP: exact for any weights
    assert result.optimal and time.perf_counter() - start < 20
    assert is_acyclic_merge(dag_a, dag_b, result.pairs)

"""Search algorithms on classic problems, asynchronous tells, checkpoints, steering."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable

import numpy as np
import pytest

from evostitch.errors import SearchError
from evostitch.evolution import problems
from evostitch.evolution.algorithms import (
    ALGORITHMS,
    BUILTIN,
    initial_genotypes,
    make_algorithm,
    restore_algorithm,
    weight_vectors,
)
from evostitch.evolution.algorithms.linkage import (
    linkage_tree,
    nmi_key,
    normalised_mutual_information,
    tree_from_nmi,
)
from evostitch.evolution.base import Algorithm, Candidate, Problem

Done = Callable[[Algorithm], bool]


def drive(alg: Algorithm, problem: Problem, budget: int, done: Done | None = None) -> int | None:
    """Synchronous ask-evaluate-tell; evaluations used when `done` first holds, else None."""
    for n in range(1, budget + 1):
        c = alg.ask()
        assert c is not None, "a synchronous driver has nothing in flight to wait for"
        alg.tell(c.ticket, problem.evaluate(c.genotype))
        if done is not None and done(alg):
            return n
    return None


def drive_pool(
    alg: Algorithm, problem: Problem, budget: int, workers: int = 4, seed: int = 0
) -> list[Candidate]:
    """Simulated pool: keep up to `workers` evaluations in flight and finish them in random
    order until `budget` are told; return the candidates left in flight."""
    rng = np.random.default_rng(seed)
    flight: list = []
    told = 0
    while told < budget:
        while len(flight) < workers:
            c = alg.ask()
            if c is None:
                break
            flight.append(c)
        assert flight, "the algorithm waits although nothing is in flight"
        c = flight.pop(int(rng.integers(len(flight))))
        alg.tell(c.ticket, problem.evaluate(c.genotype))
        told += 1
    return flight


def reached(target: tuple[float, ...]) -> Done:
    return lambda alg: any(s.objectives == target for s in alg.archive)


def covers(front: set) -> Done:
    return lambda alg: {s.objectives for s in alg.archive} >= front


def toy_stitch(n_bits: int = 20, canonical: bool = False) -> Problem:
    """Stitching-shaped toy: a ternary output variable, bits, (-metric, cost), references.

    `canonical`: like a supernetwork, the output variable decides which bits are active
    (0: the first half, 1: the second half, 2: all); inactive bits do not matter.
    """
    half = n_bits // 2

    def active(g):
        on = (g[0] != 1,) * half + (g[0] != 0,) * (n_bits - half)
        return (g[0],) + tuple(v if a else 0 for v, a in zip(g[1:], on, strict=True))

    def evaluate(g):
        g = active(g) if canonical else g
        good = sum(g[1 : 1 + half]) / half
        bad = sum(g[1 + half :]) / half
        metric = 0.4 + 0.5 * good - 0.4 * bad + 0.05 * (g[0] == 2)
        return (-metric, float(sum(g[1:]) + 2 * (g[0] == 2)))

    refs = [(o,) + (0,) * n_bits for o in range(3)]
    return Problem(
        [3] + [2] * n_bits,
        evaluate,
        references=refs,
        metric_index=0,
        canonical=active if canonical else None,
    )


# --------------------------------------------------------------------- shared parts
def test_registry() -> None:
    assert set(BUILTIN) == {"rs", "ga", "gomea", "lk-gomea", "nsga2"} <= set(ALGORITHMS)
    with pytest.raises(SearchError, match="unknown algorithm"):
        make_algorithm("sa", problems.onemax(5))
    with pytest.raises(SearchError, match="crossover"):
        make_algorithm("ga", problems.onemax(5), crossover="3point")
    with pytest.raises(SearchError, match="pop_size"):
        make_algorithm("gomea", problems.onemax(5), pop_size=1)
    state = make_algorithm("ga", problems.onemax(5)).state_dict()
    with pytest.raises(SearchError, match="state of 'ga' given to 'rs'"):
        make_algorithm("rs", problems.onemax(5)).load_state_dict(state)


def test_initialiser_is_stratified_and_starts_with_references() -> None:
    problem = toy_stitch(12)
    rng = np.random.default_rng(0)
    pop = initial_genotypes(problem, 103, 0.1, rng)
    assert pop[:3] == [tuple(r) for r in problem.references]
    x = np.array(pop[3:])
    assert np.all(x[:, 1:].sum(axis=0) == 10)  # exactly p * 100 ones per binary variable
    assert set(np.unique(x[:, 0])) == {0, 1, 2}  # the ternary variable is uniform
    odd = initial_genotypes(problem, 13, 0.25, rng)  # 10 random: 2 or 3 ones each
    assert set(np.array(odd[3:])[:, 1:].sum(axis=0)) <= {2, 3}
    uniform = np.array(initial_genotypes(problems.onemax(50), 200, None, rng))
    assert 0.4 < uniform.mean() < 0.6


def test_initialiser_switches_with_more_values_are_on_at_rate_p() -> None:
    """K parents: a switch of 3 values (own, stitched from either other parent) is on
    (non-zero) in p of the random genotypes, each stitched value about equally often;
    without `switches` those variables would be uniform (two thirds stitched)."""
    cards = [5] + [3, 2] * 20
    problem = Problem(cards, lambda g: (0.0, 0.0), switches=range(1, len(cards)))
    x = np.array(initial_genotypes(problem, 1000, 0.1, np.random.default_rng(1), False))
    assert np.all((x[:, 1:] != 0).sum(axis=0) == 100)  # stratified: exactly p * m per switch
    wide = x[:, 1::2]
    assert np.all(wide < 3) and set(np.unique(x[:, 2::2])) == {0, 1}
    ones, twos = (wide == 1).sum(), (wide == 2).sum()
    assert ones + twos == 2000 and 0.4 < ones / 2000 < 0.6
    assert set(np.unique(x[:, 0])) == set(range(5))  # not a switch: uniform
    pairwise = Problem([5] + [2] * 40, lambda g: (0.0, 0.0), switches=range(1, 41))
    default = Problem([5] + [2] * 40, lambda g: (0.0, 0.0))
    a = initial_genotypes(pairwise, 50, 0.1, np.random.default_rng(3))
    assert a == initial_genotypes(default, 50, 0.1, np.random.default_rng(3))  # K = 2 as before


def test_weight_vectors_span_the_simplex() -> None:
    rng = np.random.default_rng(0)
    w = weight_vectors(9, 2, rng)
    assert np.allclose(w.sum(axis=1), 1) and np.all(w >= 0)
    assert {(0.0, 1.0), (1.0, 0.0)} <= {tuple(r) for r in w}
    w3 = weight_vectors(10, 3, rng)
    assert np.allclose(w3.sum(axis=1), 1)
    assert {tuple(r) for r in np.eye(3)} <= {tuple(r) for r in w3}


def test_linkage_tree_finds_blocks() -> None:
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 2, size=(200, 4))
    x = np.repeat(blocks, 5, axis=1)  # 4 blocks of 5 identical variables
    x[:, 5:10] ^= rng.integers(0, 2, size=(200, 1))  # still perfectly linked
    fos = linkage_tree(x, [2] * 20, rng)
    assert len(fos) == 2 * 20 - 2
    assert sorted(sorted(s) for s in fos if len(s) == 1) == [[v] for v in range(20)]
    subsets = {frozenset(s) for s in fos}
    for b in range(4):
        assert frozenset(range(5 * b, 5 * b + 5)) in subsets


def test_linkage_tree_depends_only_on_the_rows_as_a_multiset() -> None:
    """What lets kernel GOMEA share one tree between jobs with the same genotypes: with
    the tie-break order fixed, the rows' order does not matter."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, size=(12, 30))
    x[:, 0] = rng.integers(0, 3, size=12)
    x[:, 5:12] = 0  # constant variables: ties everywhere
    cards, order = [3] + [2] * 29, rng.permutation(30)
    tree = linkage_tree(x, cards, order=order)
    assert linkage_tree(x[rng.permutation(12)], cards, order=order) == tree
    assert sorted(map(sorted, tree)) != sorted(map(sorted, linkage_tree(x, cards, rng)))
    assert linkage_tree(x, cards, np.random.default_rng(5)) == linkage_tree(
        x, cards, order=np.random.default_rng(5).permutation(30)
    )


def _nmi_by_hand(x: np.ndarray) -> np.ndarray:
    """MI(i, j) / H(i, j) from joint counts, pair by pair (0 where H(i, j) is 0)."""

    def entropy(counts: np.ndarray) -> float:
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log(p)).sum())

    n, length = x.shape
    out = np.zeros((length, length))
    for i in range(length):
        for j in range(length):
            joint = np.unique(x[:, [i, j]], axis=0, return_counts=True)[1]
            h_ij = entropy(joint)
            if h_ij > 1e-12:
                h_i = entropy(np.unique(x[:, i], return_counts=True)[1])
                h_j = entropy(np.unique(x[:, j], return_counts=True)[1])
                out[i, j] = (h_i + h_j - h_ij) / h_ij
    return out


@pytest.mark.parametrize("varying", [0, 1, 6])
def test_normalised_mutual_information_matches_joint_counts(varying: int) -> None:
    rng = np.random.default_rng(varying)
    x = np.zeros((40, 8), dtype=np.int64)
    x[:, :varying] = rng.integers(0, 3, size=(40, varying))
    if varying > 2:
        x[:, 2] = x[:, 1]  # a perfectly linked pair
    got = normalised_mutual_information(x, [3] * 8)
    np.testing.assert_allclose(got, _nmi_by_hand(x), atol=1e-12)


def test_trees_depend_on_nmi_only_through_its_key() -> None:
    """Kernel GOMEA keeps trees by `nmi_key`: neighbourhoods varying in one variable (any
    one, in any proportion) give one tree; linked variables give their own."""
    rng = np.random.default_rng(0)
    order = rng.permutation(10)
    cards = [2] * 10
    one_a, one_b = np.zeros((9, 10), dtype=np.int64), np.zeros((5, 10), dtype=np.int64)
    one_a[:4, 3] = 1
    one_b[:1, 7] = 1
    trees = []
    for x in (one_a, one_b, np.zeros((3, 10), dtype=np.int64)):
        nmi = normalised_mutual_information(x[:, order], [cards[i] for i in order])
        assert nmi_key(nmi) == ((), b"")
        trees.append(tree_from_nmi(nmi, order))
        assert trees[-1] == linkage_tree(x, cards, order=order)
    assert trees[0] == trees[1] == trees[2]
    linked = one_a.copy()
    linked[:, 5] = linked[:, 3]
    nmi = normalised_mutual_information(linked[:, order], [cards[i] for i in order])
    assert nmi_key(nmi) != ((), b"")
    assert frozenset({3, 5}) in set(map(frozenset, tree_from_nmi(nmi, order)))


def test_kernel_gomea_learns_one_tree_for_jobs_with_the_same_genotypes(monkeypatch) -> None:
    from evostitch.evolution.algorithms import kernel_gomea

    problem = problems.onemax(24)
    alg = make_algorithm("lk-gomea", problem, 0, pop_size=16, p_stitch=None)
    drive(alg, problem, 16)  # the initial population
    alg.pop_g = [alg.pop_g[0]] * 8 + [alg.pop_g[1]] * 8  # two genotypes, eight copies each
    learned = []

    def counting(nmi, order):
        learned.append(1)
        return tree_from_nmi(nmi, order)

    monkeypatch.setattr(kernel_gomea, "tree_from_nmi", counting)
    for slot in range(16):
        alg._start(slot)
    assert 1 <= len(learned) <= 4  # per distinct (genotype, neighbours) at most
    g, near = alg.pop_g[3], alg._start(3)["neighbours"]
    fresh = linkage_tree(
        np.array([g] + [alg.parents[i] for i in near]), alg.cards, order=np.array(alg._tie_order)
    )
    assert alg._tree(g, np.array(g), near)[0] == fresh
    alg.pop_g = [alg.pop_g[0]] * 5 + [alg.pop_g[0][:-1] + (1 - alg.pop_g[0][-1],)] * 11
    alg._finished = alg.pop_size  # a new generation: two genotypes one variable apart
    learned.clear()
    for slot in range(16):
        alg._start(slot)
    assert len(learned) == 1  # whatever the proportions in a neighbourhood: one tree


def test_checkpoints_write_a_linkage_tree_as_runs_of_one_order() -> None:
    from evostitch.evolution.algorithms.linkage import pack_fos, unpack_fos

    rng = np.random.default_rng(3)
    x = rng.integers(0, 2, size=(20, 113))
    x[:, 4:] = 0  # ties: a chain-like tree, as near convergence
    fos = linkage_tree(x, [2] * 113, rng)
    shuffled = [fos[i] for i in rng.permutation(len(fos))]  # as a job holds it
    packed = pack_fos(shuffled)
    assert isinstance(packed, dict) and len(packed["order"]) == 113
    assert unpack_fos(json.loads(json.dumps(packed))) == shuffled
    assert len(json.dumps(packed)) < len(json.dumps(shuffled)) / 5
    other = [[0, 2], [1, 2], [0], [1], [2], [3]]  # overlapping: not a tree, kept as it is
    assert pack_fos(other) == other and unpack_fos(other) == other


def test_cached_acceptance_keys_follow_the_population_and_the_floor() -> None:
    """`_slot_key` remembers keys; it must give what `key` computes as members and the
    steering floor change."""
    problem = problems.lotz(12)
    problem.metric_index = 0
    alg = make_algorithm("gomea", problem, 0, pop_size=8, p_stitch=None, budget=400)
    rng = np.random.default_rng(0)

    def check() -> None:
        for _ in range(20):
            slot = int(rng.integers(8))
            f = (-float(rng.integers(13)), -float(rng.integers(13)))
            assert alg._slot_key(slot, f) == alg.key(f, alg.weights[slot])

    drive(alg, problem, 40)
    check()
    alg.set_member(2, alg.pop_g[2], (-12.0, 0.0))  # the population's range changes
    check()
    drive(alg, problem, 40)  # `told` moves the floor
    check()


def test_unknown_ticket_is_refused() -> None:
    alg = make_algorithm("ga", problems.onemax(8), p_stitch=None)
    c = alg.ask()
    alg.tell(c.ticket, (0.0,))
    with pytest.raises(SearchError, match="unknown or was told already"):
        alg.tell(c.ticket, (0.0,))
    with pytest.raises(SearchError, match="objectives"):
        alg.tell(alg.ask().ticket, (0.0, 1.0))


# ------------------------------------------------------------------ classic problems
@pytest.mark.parametrize("name", ["ga", "gomea", "lk-gomea"])
def test_onemax_is_solved(name: str) -> None:
    problem = problems.onemax(40)
    for seed in (0, 1):
        alg = make_algorithm(name, problem, seed, pop_size=32, p_stitch=None)
        assert drive(alg, problem, 5000, reached(problems.optimum(40))) is not None


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gomea", "lk-gomea"])
def test_trap5_is_solved_by_gomea(name: str) -> None:
    problem = problems.trap(50)
    for seed in (0, 1):
        alg = make_algorithm(name, problem, seed, pop_size=96, p_stitch=None)
        assert drive(alg, problem, 30000, reached(problems.optimum(50))) is not None


@pytest.mark.slow
def test_trap5_defeats_uniform_crossover_ga() -> None:
    # 10,000 evaluations: the GOMEAs solve it in about 5,000 (benchmarks/search_algorithms.py)
    problem = problems.trap(50)
    alg = make_algorithm("ga", problem, 0, pop_size=96, p_stitch=None, crossover="uniform")
    assert drive(alg, problem, 10000, reached(problems.optimum(50))) is None


@pytest.mark.parametrize("name", ["ga", "nsga2"])
def test_lotz_front_is_covered(name: str) -> None:
    problem = problems.lotz(14)
    for seed in (0, 1):
        alg = make_algorithm(name, problem, seed, pop_size=32, p_stitch=None)
        assert drive(alg, problem, 20000, covers(problems.lotz_front(14))) is not None


@pytest.mark.parametrize("name", ["gomea", "lk-gomea"])
def test_lotz_front_between_parents_is_covered(name: str) -> None:
    """The stitching setting: the extremes (1^n, 0^n) are reference solutions and the
    search fills the front between them. (Without them GOMEA, which has no mutation,
    loses the values that the front's ends need from its population and stalls.)"""
    problem = problems.lotz(14)
    problem.references = [(1,) * 14, (0,) * 14]
    for seed in (0, 1):
        alg = make_algorithm(name, problem, seed, pop_size=32, p_stitch=None)
        assert drive(alg, problem, 5000, covers(problems.lotz_front(14))) is not None


@pytest.mark.parametrize("name", ["gomea", "lk-gomea"])
def test_converged_gomea_restarts_instead_of_stalling(name: str) -> None:
    problem = problems.trap(10)
    alg = make_algorithm(name, problem, 0, pop_size=4, p_stitch=None)
    assert drive(alg, problem, 3000) is None  # never waits with nothing in flight
    assert alg.restarts > 0
    assert alg.archive.solutions[0].objectives == problems.optimum(10)


def test_gomea_knows_when_no_pass_could_ask_anything() -> None:
    """Converged: every genotype built from the values of members, frozen parents and
    archived solutions is known, and nothing is in flight."""
    problem = problems.onemax(3)
    alg = make_algorithm("gomea", problem, 0, pop_size=4, p_stitch=None)
    alg.pop_g, alg.parents = [(0, 0, 1), (0, 1, 1)] * 2, []
    for g in [(0, 0, 1), (0, 1, 1)]:
        alg.remember(g, problem.evaluate(g))
    assert alg._converged()  # variable 1 is all that varies: both values known
    alg.pop_g[0] = (1, 0, 1)  # variable 0 varies too: (1, 1, 1) and (1, 0, 1) unknown
    assert not alg._converged()
    for g in [(1, 0, 1), (1, 1, 1)]:
        alg.remember(g, problem.evaluate(g))
    assert alg._converged()
    alg._pending[0] = ((0, 0, 0), {})  # an evaluation in flight may change the population
    assert not alg._converged()


@pytest.mark.parametrize("name", ["gomea", "lk-gomea"])
def test_a_converged_gomea_restarts_without_two_idle_passes(name: str) -> None:
    problem = problems.onemax(3)
    alg = make_algorithm(name, problem, 0, pop_size=8, p_stitch=None)
    for g in itertools.product([0, 1], repeat=3):  # every network known
        alg.remember(g, problem.evaluate(g))
    finished = []  # restarts so far, for every job that finished
    advance = alg._advance

    def counting(slot, job):
        trial = advance(slot, job)
        if trial is None:
            finished.append(alg.restarts)
        return trial

    alg._advance = counting
    alg.ask()  # the memo answers everything; asked once its answers run out
    assert alg.restarts > 1
    assert finished.count(0) == 8 // 4  # not 2 * 8


@pytest.mark.parametrize("name", ["gomea", "lk-gomea"])
def test_a_gomea_restart_keeps_archived_solutions(name: str) -> None:
    """Up to `restart_elites` (default half) of a restarted population are archived
    solutions, distinct (known: no evaluation), the rest random."""
    problem = problems.lotz(8)
    alg = make_algorithm(name, problem, 0, pop_size=8, p_stitch=None)
    drive(alg, problem, 60)
    archived = {s.genotype for s in alg.archive}
    alg._restart()
    kept = [g for g in alg.pop_g if g in archived]
    assert len(kept) == min(4, len(archived)) and len(set(kept)) == len(kept)
    assert alg.state_dict()["params"]["restart_elites"] == 0.5
    with pytest.raises(SearchError):
        make_algorithm(name, problem, 0, restart_elites=1.5)


# ------------------------------------------------------------------- asynchronous use
@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_out_of_order_tells(name: str) -> None:
    problem = toy_stitch()
    alg = make_algorithm(name, problem, 3, pop_size=16, budget=600)
    flight = drive_pool(alg, problem, 600)
    assert alg.told == 600 and alg.in_flight == len(flight) <= 4
    assert len(alg.archive) > 0


@pytest.mark.parametrize("name", ["ga", "gomea", "lk-gomea"])
def test_out_of_order_tells_still_optimise(name: str) -> None:
    problem = problems.onemax(30)
    alg = make_algorithm(name, problem, 0, pop_size=24, p_stitch=None)
    drive_pool(alg, problem, 3000, workers=4, seed=1)
    assert any(s.objectives == problems.optimum(30) for s in alg.archive)


def _asks(alg: Algorithm, problem: Problem, n: int) -> list:
    seen = []
    for _ in range(n):
        c = alg.ask()
        seen.append((c.ticket, c.genotype))
        alg.tell(c.ticket, problem.evaluate(c.genotype))
    return seen


def restore(problem: Problem, state: dict, evaluated: list) -> Algorithm:
    """Restore from a JSON round trip of `state` and hand over the evaluations made so far
    (the memo is not checkpointed: the loop hands over the stored rows the same way)."""
    algorithm = restore_algorithm(problem, json.loads(json.dumps(state)))
    for genotype in evaluated:
        algorithm.remember(problem.canonicalise(genotype), problem.evaluate(genotype))
    return algorithm


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_checkpoint_resumes_the_same_run(name: str) -> None:
    problem = toy_stitch()
    params = {"pop_size": 16, "budget": 500}
    straight = make_algorithm(name, problem, 7, **params)
    expected = _asks(straight, problem, 400)

    first = make_algorithm(name, problem, 7, **params)
    head = _asks(first, problem, 150)
    in_flight = first.ask()  # checkpoint while one evaluation is out
    resumed = restore(problem, first.state_dict(), [g for _, g in head])
    again = resumed.ask()
    assert (again.ticket, again.genotype) == (in_flight.ticket, in_flight.genotype)
    resumed.tell(again.ticket, problem.evaluate(again.genotype))
    tail = _asks(resumed, problem, 400 - 151)
    assert head + [(again.ticket, again.genotype)] + tail == expected
    assert resumed.archive.solutions == straight.archive.solutions


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_checkpoint_reasks_everything_in_flight(name: str) -> None:
    problem = toy_stitch()
    alg = make_algorithm(name, problem, 1, pop_size=16, budget=400)
    flight = drive_pool(alg, problem, 100)
    while not flight:  # e.g. NSGA-II at a generation's end: go on to the next one
        flight = drive_pool(alg, problem, 1)
    resumed = restore_algorithm(problem, json.loads(json.dumps(alg.state_dict())))
    reasked = [resumed.ask() for _ in flight]
    assert sorted(reasked, key=lambda c: c.ticket) == sorted(flight, key=lambda c: c.ticket)
    for c in reversed(reasked):  # finish them in another order; the run goes on
        resumed.tell(c.ticket, problem.evaluate(c.genotype))
    drive_pool(resumed, problem, 200)
    assert resumed.told == alg.told + len(flight) + 200


# -------------------------------------------------------------- known networks, failures
@pytest.mark.parametrize("name", ["rs", "gomea", "lk-gomea", "nsga2"])
def test_a_known_network_is_never_asked_again(name: str) -> None:
    """Inactive bits make many genotypes one network: the memo answers those, so every
    asked genotype is a new network and a budget buys that many networks."""
    problem = toy_stitch(canonical=True)
    alg = make_algorithm(name, problem, 0, pop_size=16, budget=400)
    asked = []
    for _ in range(400):
        c = alg.ask()
        asked.append(problem.canonicalise(c.genotype))
        alg.tell(c.ticket, problem.evaluate(c.genotype))
    assert len(set(asked)) == len(asked)
    assert alg.memo_hits > 0 and len(alg.memo) == 400


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_failed_evaluations_rank_last(name: str) -> None:
    """The loop tells a failed evaluation as +inf objectives: worst for every weight
    vector, never archived, and no trouble for the normalisation or a checkpoint."""
    base = toy_stitch()

    def evaluate(g):  # every genotype with an odd number of ones fails
        return (math.inf, math.inf) if sum(g[1:]) % 2 else base.evaluate(g)

    problem = Problem(base.cardinalities, evaluate, references=base.references, metric_index=0)
    alg = make_algorithm(name, problem, 0, pop_size=16, budget=300)
    drive_pool(alg, problem, 300)
    assert len(alg.archive) > 0
    assert np.isfinite(alg.archive.objectives_array()).all()
    lo, span = alg._normalisation()
    assert np.isfinite(lo).all() and np.isfinite(span).all()
    for w in weight_vectors(5, 2, np.random.default_rng(0)):
        for s in alg.archive:
            assert alg.better(s.objectives, (math.inf, math.inf), w)
            assert not alg.not_worse((math.inf, math.inf), s.objectives, w)
    restored = restore_algorithm(problem, json.loads(json.dumps(alg.state_dict())))
    drive_pool(restored, problem, 50)


# ------------------------------------------------------------------------- steering
def test_floor_rises_and_steers_acceptance() -> None:
    problem = toy_stitch()
    alg = make_algorithm("gomea", problem, 0, pop_size=16, budget=100, steer_to=0.5)
    assert alg.floor == 0.0
    drive(alg, problem, 50)
    assert alg.floor == pytest.approx(0.25)
    assert all(-s.objectives[0] >= 0.25 for s in alg.archive)
    below, above = (-0.2, 0.0), (-0.3, 50.0)  # cheap but under the floor vs costly above
    for w in alg.weights:
        assert alg.better(above, below, w) and not alg.not_worse(below, above, w)
    drive(alg, problem, 20)  # under the cap (0.36, next test)
    assert alg.floor == pytest.approx(0.35)
    assert all(-s.objectives[0] >= 0.35 for s in alg.archive)
    no_budget = make_algorithm("gomea", problem, 0)
    assert no_budget.floor is None


@pytest.mark.parametrize("name", ["rs", "gomea", "nsga2"])
def test_floor_stops_at_the_hypervolume_reference_point(name: str) -> None:
    """Weak parents (metric 0.4 here) under a high `steer_to`: the floor rises to 90% of
    the weakest reference's metric and no further, so the archive keeps the front."""
    problem = toy_stitch()  # references: metric 0.4, 0.4 and 0.45
    alg = make_algorithm(name, problem, 0, pop_size=16, budget=100, steer_to=0.8)
    assert alg.floor == 0.0 and alg.floor_cap() is None  # no reference told yet
    drive(alg, problem, 50)
    assert alg.floor_cap() == pytest.approx(0.36)
    assert alg.floor == pytest.approx(0.36)  # 0.8 * 0.5 = 0.4, capped
    drive(alg, problem, 50)
    assert alg.floor == pytest.approx(0.36)
    assert len(alg.archive) > 0 and all(-s.objectives[0] >= 0.36 for s in alg.archive)
    restored = restore(problem, alg.state_dict(), [r for r in problem.references])
    assert restored.floor == pytest.approx(0.36)


def test_nsga2_duplicate_test_is_pymoos_for_integer_genotypes() -> None:
    from pymoo.core.duplicate import DefaultDuplicateElimination
    from pymoo.core.population import Population

    from evostitch.evolution.algorithms.nsga2 import _SameGenotype

    rng = np.random.default_rng(0)
    pop = Population.new(X=rng.integers(0, 2, size=(40, 5)))  # 32 genotypes: repeats
    other = Population.new(X=rng.integers(0, 2, size=(10, 5)))
    for theirs, ours in [
        (DefaultDuplicateElimination().do(pop), _SameGenotype().do(pop)),
        (DefaultDuplicateElimination().do(pop, other), _SameGenotype().do(pop, other)),
    ]:
        assert 0 < len(ours) < len(pop)
        np.testing.assert_array_equal(ours.get("X"), theirs.get("X"))


def test_nsga2_is_seeded() -> None:
    problem = problems.lotz(10)
    runs = [
        _asks(make_algorithm("nsga2", problem, s, pop_size=12, p_stitch=None), problem, 100)
        for s in (5, 5, 6)
    ]
    assert runs[0] == runs[1] != runs[2]


@pytest.mark.parametrize("used", [0, 1, 5, 12])
def test_donors_drawn_ahead_leave_the_stream_of_single_draws(used: int) -> None:
    from evostitch.evolution.algorithms.mixing import Donors, membership_matrix

    rng, reference = np.random.default_rng(7), np.random.default_rng(7)
    rng.random(), reference.random()  # a half-used 32-bit buffer must be kept as well
    parents = np.zeros((9, 4), dtype=np.uint8)
    subsets = membership_matrix([[i % 4] for i in range(12)], 4)
    donors = Donors(rng, 8, lambda draws: draws + 1, parents, subsets, [0, 1, 2, 3])
    donors.used = used  # as if `used` subsets were passed or taken
    donors.settle()
    assert donors.donors[:used] == [int(reference.integers(8)) + 1 for _ in range(used)]
    assert rng.bit_generator.state == reference.bit_generator.state


def _trials(subsets: list[list[int]], donors: list[tuple[int, ...]]):
    from evostitch.evolution.algorithms.mixing import Trials, membership_matrix

    length = len(donors[0])
    rows = np.array(donors, dtype=np.uint8)
    return Trials(rows, membership_matrix(subsets, length), list(range(length)))


def test_trials_pass_over_subsets_that_change_nothing() -> None:
    trials = _trials([[0], [2], [1], [0, 2]], [(0, 1, 0)] * 4)
    g = (0, 0, 0)  # the donor differs only on variable 1: subsets 0, 1 and 3 change nothing
    assert trials.next(g) == (0, 1, 0) and trials.used == 3
    assert trials.next(g) is None and trials.used == 4 and trials.left == 0


def test_trials_made_before_are_not_made_again_until_the_objectives_change() -> None:
    """Nested subsets make the same trial again (for a known network: the same verdict)."""
    g = (0, 0, 0)
    trials = _trials([[1], [1, 2], [0, 1]], [(1, 1, 0)] * 3)
    assert trials.next(g) == (0, 1, 0) and trials.used == 1
    assert trials.next(g) == (1, 1, 0) and trials.used == 3  # [1, 2] made (0, 1, 0) again
    for forget in (False, True):
        trials = _trials([[1], [1, 2]], [(1, 1, 0)] * 2)
        assert trials.next(g) == (0, 1, 0)
        if forget:  # the slot's objectives changed: the verdict may change too
            trials.forget()
        moved = (0, 0, 1)  # with the same objectives: (0, 1, 0) would be judged the same
        assert trials.next(moved) == ((0, 1, 0) if forget else None)


def test_trials_do_not_lead_back_to_a_genotype_held_with_the_same_objectives() -> None:
    trials = _trials([[0], [0], [1]], [(1, 0, 0), (0, 0, 0), (0, 1, 0)])
    assert trials.next((0, 0, 0)) == (1, 0, 0)
    assert trials.next((1, 0, 0)) == (1, 1, 0)  # subset 1 would go back to (0, 0, 0)

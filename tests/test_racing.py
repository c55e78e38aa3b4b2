"""Racing evaluation (issue 16): the bounds, the stopping rule, stopped rows in the run
store, the loop's context and told values, reproduction, kill and resume, and a real
supernetwork raced through the API and the CLI."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evostitch.evaluation.racing import (
    Outcome,
    accuracy_upper,
    boundaries,
    look_alpha,
    miou_of,
    miou_upper,
    should_stop,
)
from evostitch.evolution.algorithms import BUILTIN, make_algorithm
from evostitch.evolution.archive import nondominated
from evostitch.evolution.backend import RacingEvaluate, races
from evostitch.evolution.base import Genotype, Problem, Steered, steering_floor
from evostitch.evolution.cache import EvaluationCache
from evostitch.evolution.loop import resume_search, run_search
from evostitch.evolution.store import EvaluationRecord, RunConfig, RunStore
from evostitch.execution import InProcessBackend

TESTS = Path(__file__).resolve().parent
N_BITS = 12
SPLIT = 1000  # the toy's "validation images"


# -- bounds and the rule ------------------------------------------------------------------
def test_chunks_double_from_64_and_end_with_the_rest():
    assert boundaries(1000) == [64, 128, 256, 512, 1000]
    assert boundaries(256) == [64, 128, 256]
    # small splits start at a quarter (at least 16 images), so they are raced too
    assert boundaries(64) == [16, 32, 64] and boundaries(30) == [16, 30]
    assert boundaries(20) == [16, 20] and boundaries(12) == [12]
    assert boundaries(1000, first=100) == [100, 200, 400, 800, 1000]
    assert look_alpha(0.99, 1000) == pytest.approx(0.01 / 4)


def test_accuracy_bound_is_exact_at_the_whole_split_and_covers_the_truth():
    assert accuracy_upper(700, 750, 750, 0.01) == 700 / 750
    assert accuracy_upper(40, 64, 750, 0.01) < accuracy_upper(50, 64, 750, 0.01)
    assert accuracy_upper(40, 64, 750, 0.001) > accuracy_upper(40, 64, 750, 0.01)
    rng = np.random.default_rng(0)
    total, correct, alpha = 750, 690, 0.05
    draws = rng.hypergeometric(correct, total - correct, 64, size=400)
    misses = sum(accuracy_upper(int(k), 64, total, alpha) < correct / total for k in draws)
    assert misses <= 2 * alpha * len(draws)


def test_miou_bound_is_exact_at_the_whole_split_and_above_the_estimate():
    rng = np.random.default_rng(1)
    per_image = rng.integers(0, 50, size=(40, 4))  # 2 classes: tp0, fp, fn, tp1 per image
    per_image[:, [0, 3]] += 200
    exact = miou_of(per_image.sum(0).reshape(2, 2))
    assert miou_upper(per_image, 40, 0.01) == exact
    assert miou_upper(per_image[:10], 40, 0.01) >= miou_of(per_image[:10].sum(0).reshape(2, 2))


def test_per_image_counts_sum_to_the_metrics_own():
    import torch

    from evostitch.evaluation.metrics import SegmentationMetric
    from evostitch.evaluation.racing import PerImage

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, 5, 4, generator=gen)
    masks = torch.randint(0, 3, (6, 5, 4), generator=gen)
    masks[0, 0] = 255  # ignored pixels
    own, per = SegmentationMetric(3), PerImage("segmentation", 3)
    for part in (slice(0, 4), slice(4, 6)):
        own.update(logits[part], masks[part])
        per.update(logits[part], masks[part])
    stats = per.compute()["per_image"]
    assert stats.shape == (6, 9) and miou_of(stats.sum(0).reshape(3, 3)) == own.compute()["miou"]
    cls = PerImage("classification", 3)
    cls.update(torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]]), torch.tensor([1, 2]))
    assert cls.compute()["per_image"].tolist() == [1, 0]


def test_stop_only_when_the_front_dominates_every_metric_under_the_bound():
    ctx = {"front": [[-0.9, 10.0]], "floor": None, "metric_index": 0}
    assert should_stop(0.85, (-0.85, 12.0), ctx)  # worse and dearer
    assert should_stop(0.9, (-0.9, 12.0), ctx)  # as good at best, dearer: dominated
    assert should_stop(0.89, (-0.89, 10.0), ctx)  # same cost, worse
    assert not should_stop(0.9, (-0.9, 10.0), ctx)  # a tie is not dominated
    assert not should_stop(0.5, (-0.5, 8.0), ctx)  # cheaper: may enter the front
    assert should_stop(0.5, (-0.5, 8.0), {**ctx, "floor": 0.6})  # under the floor
    assert not should_stop(0.5, (-0.5, 8.0), {"front": [], "floor": 0.0})


# -- stopped rows in the store ------------------------------------------------------------
STOPPED = EvaluationRecord((1, 1), (1, 1), (-0.5, 20.0), images=64, bound=0.6)
FULL = EvaluationRecord((0, 1), (0, 1), (-0.7, 10.0), images=1000)


def test_a_stopped_row_keeps_its_images_and_bound_and_is_never_on_the_front(tmp_path):
    with RunStore.create(tmp_path / "run", RunConfig("rs", 2)) as store:
        store.add(FULL)
        store.add(STOPPED)
        rows = list(store.records())
    assert [(r.images, r.bound, r.stopped) for r in rows] == [(1000, None, False), (64, 0.6, True)]
    cheap_stopped = EvaluationRecord((1, 0), (1, 0), (-0.99, 1.0), images=64, bound=0.99)
    assert nondominated([*rows, cheap_stopped]) == [rows[0]]
    problem = Problem([2, 2], lambda g: (0.0, 0.0), metric_index=0)
    cache = EvaluationCache(problem)
    assert cache.told(rows[1]) == (-0.5, 20.0)  # its estimate, at most the bound
    capped = EvaluationRecord((1, 1), (1, 1), (-0.7, 20.0), images=64, bound=0.6)
    assert cache.told(capped) == (-0.6, 20.0)
    assert cache.told(rows[0]) == (-0.7, 10.0)


def test_a_run_folder_from_before_racing_reads_and_resumes(tmp_path):
    run = tmp_path / "old"
    with RunStore.create(run, RunConfig("rs", 3)) as store:
        store.add(FULL)
    conn = sqlite3.connect(run / "evaluations.sqlite")  # the schema before racing
    conn.executescript(
        "ALTER TABLE evaluations DROP COLUMN images; ALTER TABLE evaluations DROP COLUMN bound;"
    )
    conn.close()
    with RunStore.open(run, readonly=True) as store:
        assert [(r.objectives, r.images, r.bound) for r in store.records()] == [
            ((-0.7, 10.0), None, None)
        ]
    with RunStore.open(run) as store:  # a writer adds the columns
        store.add(STOPPED)
        assert [r.stopped for r in store.records()] == [False, True]


# -- the loop, on a toy problem whose "racing" is exact -------------------------------------
def toy_objectives(genotype: Genotype) -> tuple[float, float]:
    g = tuple(int(v) for v in genotype)
    return (-sum(g) / N_BITS, float(sum((i + 1) * v for i, v in enumerate(g))))


class ToyRacer:
    """Races exactly: the bound is the metric itself, known after 100 "images"."""

    races = True

    def __init__(self, sleep: float = 0.0, references=()) -> None:
        self.sleep, self.references = sleep, {tuple(r) for r in references}
        self.raced: list[Genotype] = []
        self.contexts: list = []

    def __call__(self, genotype):
        return toy_objectives(genotype)

    def race_many(self, genotypes, context):
        import time

        self.contexts.append(context)
        out = []
        for g in genotypes:
            self.raced.append(tuple(g))
            if self.sleep:
                time.sleep(self.sleep)
            f = toy_objectives(g)
            if tuple(g) not in self.references and should_stop(-f[0], f, context):
                out.append(Outcome(f, 100, -f[0]))
            else:
                out.append(Outcome(f, SPLIT))
        return out


def toy_problem(evaluate) -> Problem:
    refs = [(0,) * N_BITS, (1,) * N_BITS]
    return Problem([2] * N_BITS, evaluate, references=refs, metric_index=0)


def raced_run(path: Path, seed: int = 0, budget: int = 60, sleep: float = 0.0, steer_to=0.5):
    racer = ToyRacer(sleep, [(0,) * N_BITS, (1,) * N_BITS])
    problem = toy_problem(racer)
    params = {"pop_size": 8, "budget": budget, "steer_to": steer_to}
    config = RunConfig("ga", budget, seed, params)
    algorithm = make_algorithm("ga", problem, seed, **params)
    backend = InProcessBackend(lambda: racer, 4, pipeline=True)
    with RunStore.create(path, config) as store:
        result = run_search(problem, algorithm, store, backend, progress=False)
    backend.close()
    return result, racer, algorithm


def test_the_loop_reaches_racers_and_floors_through_declared_protocols():
    """Issue 38: a racer is a `RacingEvaluate`, every built-in algorithm is `Steered`."""
    problem = toy_problem(ToyRacer())
    assert isinstance(problem.evaluate, RacingEvaluate) and races(problem.evaluate)
    assert not isinstance(toy_objectives, RacingEvaluate) and not races(toy_objectives)
    for name in BUILTIN:
        steered = make_algorithm(name, problem, 0, pop_size=8, budget=10, steer_to=0.5)
        assert isinstance(steered, Steered) and steering_floor(steered) == steered.floor == 0.0
        plain = make_algorithm(name, problem, 0, pop_size=8, budget=10, steer_to=None)
        assert isinstance(plain, Steered) and steering_floor(plain) is None


def rows(path: Path) -> list[tuple]:
    with RunStore.open(path, readonly=True) as store:
        return [(r.canonical, r.objectives, r.images, r.bound, r.error) for r in store.records()]


def test_a_front_member_is_never_partially_evaluated(tmp_path):
    result, racer, algorithm = raced_run(tmp_path / "run", steer_to=None)  # no floor stops
    with RunStore.open(tmp_path / "run", readonly=True) as store:
        records = list(store.records())
    stopped = [r for r in records if r.stopped]
    assert stopped and result.raced_stopped == len(stopped) and result.raced == len(records)
    assert result.images_saved == sum(SPLIT - r.images for r in stopped)
    assert all(not r.stopped and r.images == SPLIT for r in nondominated(records))
    assert all(not r.stopped for r in records if r.canonical in racer.references)
    full = [r for r in records if not r.stopped]
    for r in stopped:  # each was dominated by a full evaluation stored before it
        told = (-r.bound, r.objectives[1])
        assert any(q.id < r.id and q.objectives[0] <= told[0] and q.objectives[1] <= told[1]
                   for q in full)  # fmt: skip
    archived = {s.genotype for s in algorithm.archive}
    assert not archived & {r.canonical for r in stopped}
    assert racer.contexts[0]["front"] == [] and all(c is not None for c in racer.contexts)


def test_a_seeded_raced_run_reproduces(tmp_path):
    raced_run(tmp_path / "a", seed=3)
    raced_run(tmp_path / "b", seed=3)
    assert rows(tmp_path / "a") == rows(tmp_path / "b")
    assert any(r[3] is not None for r in rows(tmp_path / "a"))


def child_main(path: str, budget: int, sleep: float) -> None:
    """Run in a subprocess by the kill test: a slow raced search that gets SIGKILLed."""
    raced_run(Path(path), budget=budget, sleep=sleep)


@pytest.mark.slow
def test_kill_mid_race_then_resume_loses_and_repeats_nothing(tmp_path, sigkill_when):
    run, budget = tmp_path / "run", 80
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_racing; "
        f"test_racing.child_main({str(run)!r}, {budget}, 0.05)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)

    def stored() -> int:
        try:
            return len(rows(run))
        except Exception:
            return 0

    sigkill_when(child, lambda: stored() >= 30, 120, "the child stored nothing")
    before = rows(run)
    assert 30 <= len(before) < budget and any(r[3] is not None for r in before)
    racer = ToyRacer(references=[(0,) * N_BITS, (1,) * N_BITS])
    problem = toy_problem(racer)
    result = resume_search(
        run,
        problem,
        lambda c: make_algorithm(c.algorithm, problem, c.seed, **c.params),
        InProcessBackend(lambda: racer, 4, pipeline=True),
        progress=False,
    )
    after = rows(run)
    assert after[: len(before)] == before  # every stored row kept, stopped ones too
    assert len(after) == len({r[0] for r in after}) == budget == result.performed
    assert len(racer.raced) == budget - len(before)  # nothing stored was raced again
    assert not {tuple(g) for g in racer.raced} & {r[0] for r in before}
    assert all(r.images == SPLIT for r in result.front)


@pytest.mark.slow
def test_a_race_on_ray_equals_one_in_process(tmp_path, request):
    """Ray hands its actors the context as the batch leaves, as the in-process backend."""
    import functools

    request.getfixturevalue("ray_cluster")
    from evostitch.execution import RayBackend

    refs = [(0,) * N_BITS, (1,) * N_BITS]
    factory = functools.partial(ToyRacer, 0.0, refs)
    out = []
    for name, backend in {
        "inprocess": InProcessBackend(factory, 4),
        "ray": RayBackend(factory, num_workers=1, deterministic=True, batch_size=4, per_worker=4),
    }.items():
        problem = toy_problem(factory())
        params = {"pop_size": 8, "budget": 40}
        algorithm = make_algorithm("ga", problem, 5, **params)
        with RunStore.create(tmp_path / name, RunConfig("ga", 40, 5, params)) as store, backend:
            run_search(problem, algorithm, store, backend, progress=False)
        out.append([r[:4] for r in rows(tmp_path / name)])
    assert out[0] == out[1] and any(r[3] is not None for r in out[0])


# -- a real supernetwork: the racing evaluator, the API and the CLI ------------------------
@pytest.fixture(scope="module")
def supernet(tmp_path_factory):
    from evostitch.data import load_dataset
    from evostitch.supernet import Supernet
    from evostitch.training import train_stitches

    net = Supernet.build(["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8))
    net.data = "digits"
    train_stitches(net, load_dataset("digits", "train"), samples=64, downstream=0, progress=False)
    folder = tmp_path_factory.mktemp("racing") / "sn"
    net.save(folder)
    return folder, net


def test_a_race_that_is_not_stopped_equals_the_full_evaluation(supernet, one_thread):
    from evostitch.evaluation.racing import RacingEvaluator
    from evostitch.evolution.stitching import make_evaluator

    _, net = supernet
    evaluator = make_evaluator(net, "digits")
    racer = RacingEvaluator(evaluator)
    assert isinstance(racer, RacingEvaluate) and races(racer)  # what the loop asks of a racer
    rng = np.random.default_rng(0)
    genotypes = [net.reference_genotypes[0]] + [
        [int(rng.integers(3))] + [int(v) for v in rng.random(len(net.genotype_spec) - 1) < 0.1]
        for _ in range(5)
    ]
    full = evaluator.objectives_many(genotypes)
    never = racer.race_many(genotypes, {"front": [], "floor": None, "metric_index": 0})
    assert [o.objectives for o in never] == [tuple(f) for f in full]
    assert {o.images for o in never} == {racer.total} and {o.bound for o in never} == {None}
    always = racer.race_many(genotypes, {"front": [[-1.0, 0.0]], "floor": 1.0})
    assert always[0].images == racer.total and always[0].bound is None  # a reference: full
    assert all(o.images == 64 and o.bound is not None for o in always[1:])
    assert racer.race_many(genotypes[:2], None) == [Outcome(tuple(f)) for f in full[:2]]


@pytest.mark.slow
def test_search_fidelity_race_through_the_cli(supernet, tmp_path, one_thread, capsys):
    from conftest import run_cli

    def cli(*args):
        return run_cli(args, capsys)[0]

    folder, _ = supernet
    run = tmp_path / "run"
    args = ["--budget", "24", "--population", "8", "--fidelity", "race", "--steer-to", "0.9"]
    assert cli("search", folder, "--out", run, *args) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["problem"]["fidelity"] == "race" and config["problem"]["confidence"] == 0.99
    with RunStore.open(run, readonly=True) as store:
        records = list(store.records())
    assert all(r.images is not None for r in records)
    assert all(not r.stopped for r in nondominated(records))
    counts = json.loads((run / "racing.json").read_text())
    assert counts["raced"] == len(records) and counts["stopped"] == sum(r.stopped for r in records)
    assert cli("report", run) == 0  # the findings and the report count them too
    racing = json.loads((run / "findings.json").read_text())["racing"]
    assert {k: racing[k] for k in counts} == counts
    assert f"{counts['stopped']} of {counts['raced']} raced" in (run / "report.html").read_text()
    assert cli("search", "--resume", run, "--fidelity", "race") == 2  # the run's own
    assert cli("search", "--resume", run) == 0

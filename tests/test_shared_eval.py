"""Shared population evaluation: same metrics as each offspring alone, bounded memory."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

from evostitch import Supernet
from evostitch.data import load_dataset
from evostitch.errors import EvostitchError
from evostitch.evaluation import Evaluator
from evostitch.evaluation.metrics import make_metric
from evostitch.evaluation.shared import SharedEvaluator
from evostitch.execution import InProcessBackend


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()  # the machine is shared: avoid oversubscription
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    net = Supernet.build(["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8))
    return net, *tensors(load_dataset("digits", "val")), 10  # 270 images


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(1)
    net = Supernet.build(["demo:unet_like", "demo:fcn_like"], (1, 32, 32))
    try:
        x, y = tensors(load_dataset("nuclei?crop=32", "val"))
        x, y = x[::2], y[::2]
    except EvostitchError:  # no stardist: synthetic crops
        x = torch.randn(64, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        y = (x[:, 0] > 0.5).long()
    return net, x, y, 2


def population(net: Supernet, n_near: int, n_uniform: int, seed: int = 0) -> list[list[int]]:
    """Near the parents (each switch on with p = 0.05) and uniform, plus the references."""
    rng = random.Random(seed)
    spec = net.genotype_spec
    near = [
        [rng.randrange(spec[0])] + [int(rng.random() < 0.05) for _ in spec[1:]]
        for _ in range(n_near)
    ]
    uniform = [[rng.randrange(c) for c in spec] for _ in range(n_uniform)]
    return near + uniform + [list(g) for g in net.reference_genotypes]


def alone(net, genotype, x, y, num_classes, batch_size) -> dict[str, float]:
    """Metrics of the extracted offspring, run on its own."""
    model = net.extract(genotype).eval()
    metric = make_metric(net.task, num_classes)
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            metric.update(model(x[s : s + batch_size]), y[s : s + batch_size])
    return metric.compute()


def assert_same(shared: dict, reference: dict) -> None:
    for k, v in reference.items():
        assert shared[k] == pytest.approx(v, abs=1e-5), k


@pytest.mark.parametrize("task", ["classifier", "segmenter"])
def test_metrics_equal_each_offspring_alone(task, request):
    net, x, y, classes = request.getfixturevalue(task)
    genotypes = population(net, 10, 5)
    shared = SharedEvaluator(net, (x, y), classes, batch_size=64, budget_bytes=None)
    results = shared.metrics(genotypes)
    for g, m in zip(genotypes, results, strict=True):
        assert_same(m, alone(net, g, x, y, classes, 64))
        assert m["macs"] == net.cost(g)["macs"] and m["params"] == net.cost(g)["params"]
    naive = sum(net.cost(g)["macs"] for g in genotypes)
    assert 0 < shared.computed_macs < naive  # parents and near offspring share work
    assert all(getattr(m, "inplace", True) for m in net.modules() if hasattr(m, "inplace"))


def test_budget_is_respected_by_recomputing(classifier):
    net, x, y, classes = classifier
    genotypes = population(net, 12, 4, seed=1)
    free = SharedEvaluator(net, (x, y), classes, batch_size=128, budget_bytes=None)
    expected = free.metrics(genotypes)
    budget = free.peak_cached_bytes // 8
    tight = SharedEvaluator(net, (x, y), classes, batch_size=128, budget_bytes=budget)
    assert tight.metrics(genotypes) == expected
    assert 0 < tight.peak_cached_bytes <= budget
    assert sum(tight.runs.values()) > sum(free.runs.values())  # it recomputed
    none = SharedEvaluator(net, (x, y), classes, batch_size=128, budget_bytes=0)
    assert none.metrics(genotypes) == expected and none.peak_cached_bytes == 0
    assert tight.computed_macs < none.computed_macs


def test_parent_and_late_stitch_share_the_prefix(classifier):
    net, x, y, classes = classifier
    order = list(net.graphs["b"].nodes)
    last = max((sw for sw in net.switches if sw.side == "b"), key=lambda s: order.index(s.node))
    parent = [0] + [0] * len(net.switches)  # parent A
    late = list(parent)  # A's network, and B's tail fed by A through the last stitch
    late[0], late[last.index] = net.output_choices.index("mean"), 1
    shared = SharedEvaluator(net, (x, y), classes, batch_size=len(x))  # one data batch
    shared.metrics([parent, late])
    a_nodes = net.plan(parent).raw
    assert a_nodes < net.plan(late).raw
    assert all(shared.runs[("node", key)] == 1 for key in a_nodes)  # A's nodes run once
    b_nodes = net.plan(late).raw - a_nodes
    assert b_nodes and all(shared.runs[("node", key)] == 1 for key in b_nodes)
    assert shared.runs[("stitch", last.stitch)] == 1
    assert sum(shared.runs.values()) == len(net.plan(late).raw) + 1
    apart = SharedEvaluator(net, (x, y), classes, batch_size=len(x), budget_bytes=0)
    apart.metrics([parent, late])
    stem = list(net.graphs["a"].nodes)[1]  # the first layer (the input itself costs nothing)
    assert apart.runs[("node", ("a", stem))] == 2


def test_evaluator_and_backend_use_the_shared_path(classifier):
    net, x, y, classes = classifier
    dataset = torch.utils.data.TensorDataset(x[:100], y[:100])
    evaluator = Evaluator(net, dataset, classes, batch_size=50, device="cpu")
    genotypes = [tuple(g) for g in population(net, 3, 2, seed=2)]
    many = evaluator.objectives_many(genotypes)
    one_by_one = [evaluator.objectives(g) for g in genotypes]
    assert [v for o in many for v in o] == pytest.approx([v for o in one_by_one for v in o])
    assert evaluator(genotypes[0]) == evaluator.objectives(genotypes[0])
    calls = []

    class Spy:
        def __call__(self, g):
            calls.append(1)
            return evaluator(g)

        def evaluate_many(self, gs):
            calls.append(len(gs))
            if any(g[0] == 99 for g in gs):
                raise ValueError("bad genotype")
            return evaluator.evaluate_many(gs)

    backend = InProcessBackend(Spy, batch_size=len(genotypes))
    for ticket, g in enumerate(genotypes):
        backend.submit(ticket, g)
    results = backend.results()
    assert calls == [len(genotypes)] and [r.objectives for r in results] == many
    calls.clear()
    backend.submit(0, genotypes[0])
    backend.submit(1, (99,) + genotypes[0][1:])  # the batch fails: one at a time
    first, bad = backend.results()
    assert calls == [2, 1, 1] and first.objectives == many[0]
    assert bad.objectives is None and bad.error


class BatchToy:
    """A toy evaluator: objectives (sum of the genotype, how many it was evaluated with).
    A genotype starting with 99 kills the worker."""

    def __call__(self, genotype):
        return self.evaluate_many([genotype])[0]

    def evaluate_many(self, genotypes):
        if any(g[0] == 99 for g in genotypes):
            os._exit(3)
        return [(float(sum(g)), float(len(genotypes))) for g in genotypes]


@pytest.mark.slow
def test_ray_workers_evaluate_what_they_hold_at_once():
    ray = pytest.importorskip("ray")
    from evostitch.execution import RayBackend

    tests = str(Path(__file__).resolve().parent)
    ray.init(
        num_cpus=1,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": tests}},  # workers import this module
        logging_level="ERROR",
    )
    try:
        with RayBackend(BatchToy, num_workers=1, per_worker=3) as backend:
            assert backend.capacity == 3
            for ticket in range(4):
                backend.submit(ticket, (ticket, 1))
            results = []
            while len(results) < 4:
                results += backend.results(timeout=30)
        got = sorted((r.ticket, r.objectives) for r in results)
        assert got == [(0, (1.0, 3.0)), (1, (2.0, 3.0)), (2, (3.0, 3.0)), (3, (4.0, 1.0))]
        with RayBackend(BatchToy, num_workers=1, per_worker=3, max_retries=1) as backend:
            for ticket, genotype in enumerate([(1, 1), (99, 0), (2, 1)]):
                backend.submit(ticket, genotype)
            results = []
            while len(results) < 3:
                results += backend.results(timeout=60)
        got = sorted((r.ticket, r.objectives) for r in results)
        assert got == [(0, (2.0, 1.0)), (1, None), (2, (3.0, 1.0))]  # retried one by one
        assert backend.replaced == 2
    finally:
        ray.shutdown()

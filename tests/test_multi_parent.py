"""K-parent supernetworks (issue 17): three demo classifiers in one supernetwork."""

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from evostitch import Supernet
from evostitch.errors import SupernetError
from evostitch.evaluation.holding import sample_offspring
from evostitch.evaluation.metrics import make_metric
from evostitch.evaluation.shared import SharedEvaluator
from evostitch.training import least_squares_init
from evostitch.training.fit import held_out_losses
from evostitch.training.walks import forward_random

PARENTS = [
    "demo:resnet_like",
    "demo:mobilenet_like",
    "demo:vit_like?image_size=16&patch_size=4&depth=2&width=32",
]
SHAPE = (1, 16, 16)
CHOICES = ("a", "b", "c", "mean-ab", "mean-ac", "mean-bc", "mean",
           "mean-prob-ab", "mean-prob-ac", "mean-prob-bc", "mean-prob")  # fmt: skip


@pytest.fixture(scope="module")
def net() -> Supernet:
    torch.manual_seed(0)
    return Supernet.build(PARENTS, SHAPE)


def inputs(n: int = 2) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(1))


def zeros(net: Supernet, choice: int) -> list[int]:
    return [choice] + [0] * (len(net.genotype_spec) - 1)


def random_genotypes(net: Supernet, n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(c) for c in net.genotype_spec] for _ in range(n)]


def test_structure_has_three_parents_and_groups_of_two_and_three(net):
    assert net.sides == ("a", "b", "c")
    assert net.output_choices == CHOICES
    sizes = {sum(n is not None for n in m[:-1]) for m in net.matches}
    assert sizes == {2, 3}  # pairs and full groups
    members = sum(sum(n is not None for n in m[:-1]) for m in net.matches)
    assert len(net.genotype_spec) == 1 + members
    assert set(net.genotype_spec[1:]) == {2, 3}
    assert len(net.stitches) == sum(c - 1 for c in net.genotype_spec[1:]) == len(net.switches)
    for sw in net.switches:  # stitch names: source side, own side, group
        assert sw.stitch.startswith(sw.src[0] + sw.side)
        assert 1 <= sw.value < net.genotype_spec[sw.index]


def test_reference_genotypes_are_the_parents_and_their_mean(net):
    x = inputs()
    with torch.no_grad():
        ys = [net.graphs[s].module(x) for s in net.sides]
        for p, y in enumerate(ys):
            assert torch.equal(net(x, zeros(net, p)), y)  # bit for bit
        for k, (p, q) in enumerate(((0, 1), (0, 2), (1, 2)), start=3):  # sub-ensembles
            assert torch.equal(net(x, zeros(net, k)), (ys[p] + ys[q]) / 2)
            torch.testing.assert_close(net.extract(zeros(net, k))(x), (ys[p] + ys[q]) / 2)
        for k, (p, q) in enumerate(((0, 1), (0, 2), (1, 2)), start=7):
            probs = (ys[p].softmax(1) + ys[q].softmax(1)) / 2
            torch.testing.assert_close(net(x, zeros(net, k)).softmax(1), probs)
            torch.testing.assert_close(net.extract(zeros(net, k))(x).softmax(1), probs)
        assert torch.equal(net(x, zeros(net, 6)), (ys[0] + ys[1] + ys[2]) / 3)
        probs = sum(y.softmax(1) for y in ys) / 3
        torch.testing.assert_close(net(x, zeros(net, 10)).softmax(1), probs)
    macs = [net.cost(zeros(net, k))["macs"] for k in range(len(CHOICES))]
    assert macs[3] == macs[0] + macs[1] and macs[5] == macs[1] + macs[2]  # only what they read
    assert macs[7] == macs[3] and macs[9] == macs[5]
    assert macs[6] == macs[10] == sum(macs[:3])
    for p, side in enumerate(net.sides):
        active = net.active_variables(zeros(net, p))
        assert active == [True] + [key[0] == side for key in net.structure.variables]
    assert net.reference_genotypes == [tuple(zeros(net, k)) for k in range(len(CHOICES))]


def test_every_single_variable_value_runs_and_is_canonical(net):
    x = inputs(1)
    classes = net.graphs["a"][net.graphs["a"].output].shape[1:]
    with torch.no_grad():
        for i, c in enumerate(net.genotype_spec[1:], start=1):
            for v in range(1, c):
                side = net.structure.variables[i - 1][0]
                own = net.sides.index(side)  # active: its member's parent is the output
                g = zeros(net, own if i % 3 else (own + 1) % 3)
                g[i] = v
                y = net(x, g)
                assert tuple(y.shape[1:]) == tuple(classes)
                plan = net.plan(g)
                canon = net.canonical(g)
                assert plan.active[i] == (g[0] == own)
                assert canon[i] == (v if plan.active[i] else 0)
                assert net.canonical(canon) == canon
                if canon != tuple(g):
                    assert torch.equal(net(x, canon), y)
                taken = [sw for sw in net.structure.options[i - 1] if sw.value == v]
                assert list(plan.stitched) == (taken if plan.active[i] else [])


def test_random_genotypes_extract_cost_and_canonical(net):
    x = inputs(1)
    with torch.no_grad():
        for g in random_genotypes(net, 12):
            y = net(x, g)
            torch.testing.assert_close(net.extract(g)(x), y)
            assert torch.equal(net(x, net.canonical(g)), y)
            assert net.cost(g)["macs"] == net.cost(net.canonical(g))["macs"]
            assert "output: " in net.describe(g)


def macs_of(module, x) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() / 2 / x.shape[0]


def test_reference_costs_are_the_parents(net):
    x = inputs(1)
    for p, side in enumerate(net.sides):
        module = net.graphs[side].module
        cost = net.cost(zeros(net, p))
        assert cost["macs"] == pytest.approx(macs_of(module, x), rel=1e-6)
        assert cost["params"] == sum(q.numel() for q in module.parameters())


def test_save_load_round_trip(net, tmp_path):
    loaded = Supernet.load(net.save(tmp_path / "net"))
    assert loaded.matches == net.matches and loaded.genotype_spec == net.genotype_spec
    assert list(loaded.stitches) == list(net.stitches)
    x = inputs()
    with torch.no_grad():
        for g in [zeros(net, 2), *random_genotypes(net, 6, seed=1)]:
            assert torch.equal(loaded(x, g), net(x, g))
            assert loaded.cost(g) == net.cost(g)


def test_stitch_fit_and_training_walk_cover_every_stitch(net):
    fresh = Supernet(list(net.graphs.values()), matches=net.matches, specs=net.specs)
    images = torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(2))
    least_squares_init(fresh, images, batch_size=8)
    losses = held_out_losses(fresh, [images[:8]])
    assert set(losses) == set(fresh.stitches)
    assert all(0 <= v < 1 for v in losses.values())  # fitted on these very images
    walk = forward_random(fresh, images[:4], generator=torch.Generator().manual_seed(0))
    assert set(walk) == set(fresh.stitches)
    walk = forward_random(fresh, images[:4], clean_targets=True)
    assert set(walk) == set(fresh.stitches)


def test_shared_evaluator_equals_each_offspring_alone(net):
    x = inputs(24)
    y = torch.randint(0, 10, (24,), generator=torch.Generator().manual_seed(3))
    genotypes = [list(g) for g in net.reference_genotypes] + random_genotypes(net, 6, 4)
    genotypes += [list(g) for g in sample_offspring(net, 4, 0.1, seed=0)]
    results = SharedEvaluator(net, (x, y), 10, batch_size=12).metrics(genotypes)
    for g, m in zip(genotypes, results, strict=True):
        metric = make_metric(net.task, 10)
        with torch.no_grad():
            metric.update(net(x, g), y)
        for k, v in metric.compute().items():
            assert m[k] == pytest.approx(v, abs=1e-5), k


def test_genotype_errors_name_the_position(net):
    g = zeros(net, 0)
    i = net.genotype_spec.index(3)
    g[i] = 3
    with pytest.raises(SupernetError, match=f"position {i} is 3"):
        net.plan(g)

"""Random offspring scored as a fraction of the parents: the "stitches hold" figure."""

import statistics

import pytest
import torch

from evostitch import Supernet
from evostitch.data import load_dataset
from evostitch.evaluation import Evaluator
from evostitch.evaluation.holding import (
    HoldCheck,
    hold_evaluator,
    hold_figure,
    load_hold_figure,
    measured,
    sample_offspring,
    save_hold_figure,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def small_supernet() -> Supernet:
    torch.manual_seed(0)
    return Supernet.build(["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8))


def test_offspring_are_drawn_as_a_search_starts_them():
    net = small_supernet()
    none = sample_offspring(net, 20, 0.0, seed=1)
    assert all(not any(g[1:]) for g in none)  # only the output choice varies
    assert {g[0] for g in none} <= set(range(net.genotype_spec[0]))
    some = sample_offspring(net, 20, 0.5, seed=1)
    assert some == sample_offspring(net, 20, 0.5, seed=1) != sample_offspring(net, 20, 0.5, 2)
    assert all(g == net.canonical(g) for g in some) and any(any(g[1:]) for g in some)


def test_fractions_are_of_the_parents_mean_and_follow_the_stitches():
    net = small_supernet()
    val = load_dataset("digits", "val")
    check = HoldCheck(hold_evaluator(net, val, 10, images=64), samples=4, seed=0)
    before = check.measure()
    assert len(check.evaluator.dataset) == 64  # a seeded subset of the split
    alone = Evaluator(net, check.evaluator.dataset, 10)
    parents = [alone.metrics(g)["accuracy"] for g in net.reference_genotypes[:2]]
    assert before["parents"] == parents
    genotype = check.genotypes[0.1][0]
    expected = alone.metrics(genotype)["accuracy"] / statistics.fmean(parents)
    assert before[0.1][0] == pytest.approx(expected)
    with torch.no_grad():
        for p in net.stitches.parameters():
            p.zero_()
    after = check.measure()
    assert after["parents"] == before["parents"]  # the parents do not use stitches
    assert after[0.1] != before[0.1]  # nothing stale: the stitches' change shows


def test_measured_scores_before_and_after_training():
    net = small_supernet()
    evaluator = hold_evaluator(net, load_dataset("digits", "val"), 10, images=64)
    events, score = [], evaluator.metrics_many
    evaluator.metrics_many = lambda genotypes: events.append("score") or score(genotypes)

    def train() -> str:
        events.append("train")
        return "trained"

    result, figure = measured(train, evaluator, samples=6, seed=3)
    assert result == "trained" and events == ["score", "train", "score"]
    assert figure["samples"] == 6 and figure["images"] == 64
    assert [row["p"] for row in figure["p"]] == [0.02, 0.1]
    assert all({"trained", "untrained"} <= set(row) for row in figure["p"])
    assert measured(lambda: "no check", evaluator, samples=0) == ("no check", None)
    assert events == ["score", "train", "score"]


def test_the_figure_holds_hand_computed_quartiles(tmp_path):
    trained = {"parents": [0.9, 0.8], 0.02: [1.0, 0.5, 0.75, 0.25, 0.0], 0.1: [0.4]}
    untrained = {"parents": [0.9, 0.8], 0.02: [0.1, 0.2, 0.3, 0.4, 0.5], 0.1: [0.2]}
    figure = hold_figure(trained, untrained, metric="accuracy", images=10, samples=5)
    first, second = figure["p"]
    assert first["p"] == 0.02
    assert first["trained"] == {"median": 0.5, "q1": 0.25, "q3": 0.75}
    assert first["untrained"] == {"median": 0.3, "q1": 0.2, "q3": 0.4}
    assert second["trained"] == {"median": 0.4, "q1": 0.4, "q3": 0.4}
    assert "p=0.02: 0.500 [0.250, 0.750] (untrained 0.300)" in figure["text"]
    save_hold_figure(figure, tmp_path)
    assert load_hold_figure(tmp_path) == figure
    assert load_hold_figure(tmp_path / "nowhere") is None


def test_untrained_stitches_are_seeded_so_the_untrained_figure_reproduces():
    from evostitch import api

    def built(seed: int, noise: int) -> dict:
        torch.manual_seed(noise)  # the global random state must not matter
        net = api.stitch(["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8), seed=seed,
                         progress=False)  # fmt: skip
        return net.stitches.state_dict()

    state = torch.random.get_rng_state()
    first, again, other = built(0, noise=1), built(0, noise=2), built(1, noise=1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    api.stitch(["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8), seed=0, progress=False)
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream is left alone
    torch.random.set_rng_state(state)


def test_the_demo_build_is_seeded_too():
    """The demo builds through Supernet.build, not api.stitch: the seed lives there."""
    nets = []
    for noise in (1, 2):
        torch.manual_seed(noise)
        nets.append(Supernet.build(["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8)))
    first, again = (n.stitches.state_dict() for n in nets)
    assert all(torch.equal(first[k], again[k]) for k in first)

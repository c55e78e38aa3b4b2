"""Stitches left out of every offspring (`Supernet.leave_out`): those whose single
crossing broke the network. A left-out switch reads as 0 everywhere a genotype is used
(plan, canonical key, cost, forward, export), so a search never spends an evaluation on
it and a front member exports as it was scored; the choice is saved with the folder."""

from __future__ import annotations

import statistics

import pytest
import torch

from evostitch import Supernet
from evostitch.errors import SupernetError
from evostitch.evaluation.transitions import POOR
from evostitch.fitting import leave_out_poor


@pytest.fixture
def net() -> Supernet:
    torch.manual_seed(0)
    return Supernet.build(["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8))


def crossing(net: Supernet, stitch: str) -> tuple[int, ...]:
    """A genotype taking `stitch` (and nothing else) into its side's output."""
    sw = next(s for s in net.switches if s.stitch == stitch)
    g = [net.output_choices.index(sw.side)] + [0] * (len(net.genotype_spec) - 1)
    g[sw.index] = sw.value
    return tuple(g)


def test_a_left_out_switch_reads_as_off_everywhere(net):
    sw = next(s for s in net.switches if s.side in net.output_choices)
    g = crossing(net, sw.stitch)
    parent = net.reference_genotypes[net.output_choices.index(sw.side)]
    x = torch.randn(4, 1, 8, 8)
    assert [s.stitch for s in net.plan(g).stitched] == [sw.stitch]
    net.leave_out([sw.stitch])
    assert net.plan(g).stitched == ()
    assert net.canonical(g) == parent  # one key: never evaluated twice
    assert net.cost(g) == net.cost(parent)
    assert torch.equal(net(x, g), net(x, parent))
    assert torch.equal(net.extract(g)(x), net(x, parent))
    net.leave_out([])
    assert [s.stitch for s in net.plan(g).stitched] == [sw.stitch]  # back on


def test_left_out_stitches_are_saved_and_an_unknown_one_refused(net, tmp_path):
    keys = sorted(net.stitches)[:3]
    net.leave_out(keys)
    net.save(tmp_path / "net")
    again = Supernet.load(tmp_path / "net")
    assert again.left_out == frozenset(keys)
    g = crossing(again, keys[0])
    assert again.plan(g).stitched == ()
    with pytest.raises(SupernetError, match="cannot leave out nope: no such stitch"):
        net.leave_out(["nope"])


def test_poor_crossings_are_left_out_in_one_line(net):
    stitches = sorted(net.stitches)
    points = [
        {"from": f"a:n{i}", "to": f"b:m{i}", "stitch": s, "fraction": f}
        for i, (s, f) in enumerate(zip(stitches, [0.42, POOR, POOR - 0.01, 1.01], strict=False))
    ]
    line = leave_out_poor(net, {"points": points, "metric": "accuracy"})
    assert net.left_out == {stitches[0], stitches[2]}
    assert line.startswith("Left out 2 of 4 stitches")
    assert f"a:n0 -> b:m0 0.42, a:n2 -> b:m2 {POOR - 0.01:.2f}" in line
    assert "--keep-poor-stitches" in line
    line = leave_out_poor(net, {"points": points[1:2], "metric": "accuracy"})
    assert net.left_out == frozenset() and line.startswith("No stitch left out")
    line = leave_out_poor(net, {"points": points, "metric": "accuracy"}, threshold=0.5)
    assert net.left_out == {stitches[0]} and "less than 0.5 of" in line


def test_inspect_names_the_left_out_stitches(net, tmp_path, capsys):
    from conftest import run_cli

    keys = sorted(net.stitches)[:2]
    net.leave_out(keys)
    net.save(tmp_path / "net")
    code, out, err = run_cli(["inspect", tmp_path / "net", "--samples", "0"], capsys)
    assert code == 0, err
    assert "2 stitches left out (no offspring takes them" in " ".join(out.split())
    assert ", ".join(keys) in out


def test_a_switch_whose_every_stitch_is_left_out_changes_no_offspring(net):
    single = next(s for s in net.switches if net.genotype_spec[s.index] == 2)
    g = crossing(net, single.stitch)
    assert net.active_variables(g)[single.index]
    net.leave_out([single.stitch])
    assert not net.active_variables(g)[single.index]  # any value: the same offspring
    several = [s for s in net.switches if net.genotype_spec[s.index] > 2]
    if several:  # one of its stitches left out: the others still change the offspring
        first, other = several[0], next(s for s in several[1:] if s.index == several[0].index)
        net.leave_out([first.stitch])
        assert net.active_variables(crossing(net, other.stitch))[other.index]


def test_the_hold_line_describes_the_offspring_left_after_leaving_out(net, monkeypatch):
    from evostitch import fitting
    from evostitch.data import load_dataset
    from evostitch.evaluation.holding import HoldCheck, hold_evaluator
    from evostitch.training import TrainResult

    val = hold_evaluator(net, load_dataset("digits", "val"), 10, images=64)
    poor = sorted(net.stitches)[:2]
    events = []

    def fake_map(_net, _val):
        events.append("map")
        points = [
            {"from": f"a:{s}", "to": f"b:{s}", "stitch": s, "fraction": 0.5 if s in poor else 1}
            for s in net.stitches
        ]
        return {"points": points, "metric": "accuracy", "text": "the map"}

    monkeypatch.setattr(fitting, "transition_map", fake_map)
    fitted = fitting.fit_and_map(
        net, lambda: events.append("train") or TrainResult({}, 0), val, samples=6, seed=3
    )
    assert events == ["train", "map"] and net.left_out == set(poor)
    assert fitted.hold["left_out"] == [2, len(net.stitches)]
    assert f"with the 2 of {len(net.stitches)} poor stitches left out" in fitted.hold["text"]
    assert fitted.lines[-1].startswith("Left out 2 of") and "the map" in fitted.lines
    again = HoldCheck(val, samples=6, seed=3).measure()  # scored with them left out
    trained = {row["p"]: row["trained"]["median"] for row in fitted.hold["p"]}
    assert trained == {p: statistics.median(again[p]) for p in trained}
    net.leave_out([])
    kept = fitting.fit_and_map(net, lambda: TrainResult({}, 0), val, samples=6, keep_poor=True)
    assert not net.left_out and "left_out" not in kept.hold and kept.transitions["text"]

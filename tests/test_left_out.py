"""Stitches left out of every offspring (`Supernet.leave_out`): those whose single
crossing broke the network. A left-out switch reads as 0 everywhere a genotype is used
(plan, canonical key, cost, forward, export), so a search never spends an evaluation on
it and a front member exports as it was scored; the choice is saved with the folder."""

from __future__ import annotations

import pytest
import torch

from evostitch import Supernet
from evostitch.errors import SupernetError
from evostitch.evaluation.transitions import POOR
from evostitch.fitting import leave_out_poor


@pytest.fixture
def net() -> Supernet:
    torch.manual_seed(0)
    return Supernet.build("demo:resnet_like", "demo:mobilenet_like", (1, 8, 8))


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

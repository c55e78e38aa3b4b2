"""The transition map (evaluation.transitions): every matched point and direction crossed
once, scored against the lower parent, stored beside the supernetwork and shown by
`inspect`."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_cli
from evostitch import api
from evostitch.data import load_dataset
from evostitch.evaluation.holding import hold_evaluator
from evostitch.evaluation.transitions import (
    TRANSITIONS_FILE,
    crossings,
    load_transitions,
    save_transitions,
    transition_map,
)
from evostitch.supernet import Supernet


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    torch.manual_seed(0)
    net = Supernet.build(["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8))
    ev = hold_evaluator(net, load_dataset("digits", "val"), 10, images=64)
    folder = tmp_path_factory.mktemp("net")
    net.save(folder)
    return net, transition_map(net, ev), folder


def test_every_switch_is_crossed_once_into_the_side_it_writes(mapped):
    net, figure, _ = mapped
    points = figure["points"]
    assert len(points) == len(crossings(net)) == len(net.switches)  # two parents: all reach
    for point in points:
        stitched = net.plan(point["genotype"]).stitched
        assert [sw.stitch for sw in stitched] == [point["stitch"]]
        side = point["to"].split(":")[0]
        assert net.output_choices[point["genotype"][0]] == side
        assert point["from"].split(":")[0] != side
        lower = min(figure["parents"].values())
        assert point["fraction"] == pytest.approx(point["score"] / lower)
    assert f"of {len(points)} single crossings" in figure["text"]


def test_the_map_is_stored_read_back_and_shown_by_inspect(mapped, capsys):
    _, figure, folder = mapped
    save_transitions(figure, folder)
    loaded = load_transitions(folder)
    assert loaded == figure
    assert api.inspect(folder, 0)["transitions"] == figure
    code, out, err = run_cli(["inspect", folder, "--samples", "0"], capsys)
    assert code == 0, err
    assert "Transition map:" in " ".join(out.split())


@pytest.mark.parametrize(
    "damage",
    [
        lambda f: f.update(points="many"),
        lambda f: f["points"][0].update(fraction=float("nan")),
        lambda f: f["points"][0].update(genotype=[True]),
        lambda f: f.update(parents={"a": "0.9"}),
        lambda f: f.pop("metric"),
    ],
)
def test_a_damaged_map_is_ignored_not_trusted(mapped, tmp_path, damage):
    _, figure, _ = mapped
    broken = json.loads(json.dumps(figure))
    damage(broken)
    (tmp_path / TRANSITIONS_FILE).write_text(json.dumps(broken))
    assert load_transitions(tmp_path) is None
    (tmp_path / TRANSITIONS_FILE).write_text("{not json")
    assert load_transitions(tmp_path) is None

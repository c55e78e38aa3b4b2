"""K parents through the CLI and the API (issue 17): `--parent` repeated, keeping --a/--b;
three demo classifiers on 8x8 digits matched, stitched, searched and inspected."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import evostitch
from conftest import run_cli as run
from evostitch import Supernet, api, cli
from evostitch.evolution.store import RunStore
from evostitch.matching import is_acyclic_merge_k

VIT = "demo:vit_like?image_size=8&patch_size=2&depth=2&width=32"
PARENTS = ["demo:resnet_like", "demo:mobilenet_like", VIT]


@pytest.fixture(scope="module")
def stitched(tmp_path_factory) -> Path:
    """`evostitch stitch --a A --b B --parent C` on digits, from a folder given relatively."""
    root = tmp_path_factory.mktemp("k3")
    argv = ["evostitch", "stitch", "--a", PARENTS[0], "--b", PARENTS[1], "--parent", VIT]
    argv += ["--input-shape", "1,8,8", "--data", "digits", "--out", "sn"]
    argv += ["--fit-samples", "128", "--hold-samples", "0"]
    old, here, sys.argv = sys.argv, os.getcwd(), argv
    os.chdir(root)  # the folder given relatively, as a user types it
    try:
        cli.main()
    except SystemExit as exc:
        assert exc.code == 0
    finally:
        sys.argv = old
        os.chdir(here)
    return root / "sn"


def test_match_json_names_three_parents_and_acyclic_groups(capsys):
    args = [f"--parent={p}" for p in PARENTS]
    code, out, _ = run(["match", *args, "--input-shape", "1,8,8", "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert [report[s] for s in "abc"] == PARENTS
    assert set(report["candidates"]) == {"a", "b", "c"}
    groups = [tuple(m[s] for s in "abc") for m in report["matches"]]
    assert all(sum(n is not None for n in g) >= 2 for g in groups)
    assert any(None not in g for g in groups)  # some points join all three parents
    graphs = [Supernet.build(PARENTS, (1, 8, 8)).graphs[s] for s in "abc"]
    assert is_acyclic_merge_k([g.dag for g in graphs], groups)
    same = api.match(parents=PARENTS, input_shape=(1, 8, 8), progress=False)
    assert [tuple(g) for g in same.groups] == groups  # the API and the CLI agree


def test_two_parents_by_parent_equal_a_and_b(capsys):
    shape = ["--input-shape", "1,8,8", "--json"]
    code, by_ab, _ = run(["match", "--a", PARENTS[0], "--b", PARENTS[1], *shape], capsys)
    assert code == 0
    code, by_parent, _ = run(
        ["match", "--parent", PARENTS[0], "--parent", PARENTS[1], *shape], capsys
    )
    assert code == 0
    drop = lambda r: {k: v for k, v in json.loads(r).items() if k != "seconds"}  # noqa: E731
    assert drop(by_ab) == drop(by_parent)
    assert "c" not in json.loads(by_ab)["candidates"]


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--a", PARENTS[0]], "at least two parents"),
        (["--parent", PARENTS[0], "--parent", PARENTS[1], "--parent-weights", "w.safetensors"],
         "1 --parent-weights for 2 --parent"),
        (["--b", PARENTS[0], "--parent", PARENTS[1], "--a-weights", "w.safetensors"],
         "--a-weights without --a"),
    ],
)  # fmt: skip
def test_bad_parent_lists_are_one_line_exit_2(argv, needle, capsys):
    code, out, err = run(["match", *argv, "--input-shape", "1,8,8"], capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err + out


def test_stitch_saves_three_parents_with_trained_stitches(stitched):
    net = Supernet.load(stitched)
    assert net.sides == ("a", "b", "c")
    assert [s["spec"] for s in net.specs] == PARENTS
    assert net.data == "digits"
    assert max(net.genotype_spec[1:]) == 3  # switches choosing between two other parents
    losses = json.loads((stitched / "stitch_losses.json").read_text())
    assert losses  # the least-squares fit ran on the data
    fresh = Supernet.build(PARENTS, (1, 8, 8))
    name = next(iter(net.stitches))
    trained = dict(net.stitches[name].named_parameters())
    untrained = dict(fresh.stitches[name].named_parameters())
    assert any(not torch.equal(trained[k], untrained[k]) for k in trained)


def test_inspect_lists_three_parents_and_group_members(stitched, capsys):
    code, out, _ = run(["inspect", stitched, "--json", "--samples", "40"], capsys)
    assert code == 0
    report = json.loads(out)
    assert [p["side"] for p in report["parents"]] == ["a", "b", "c"]
    assert report["parents"][2]["spec"] == VIT
    assert all({"a", "b", "c", "score"} == set(m) for m in report["matches"])
    values = {v for row in report["offspring_sample"] for v in row["genotype"][1:]}
    assert 2 in values  # stitched from the second other parent: sampled too


def test_search_turns_k_valued_switches_on_at_rate_p(stitched, tmp_path, capsys):
    """The first population's switches are on at about p_stitch, at either stitched
    value: a 3-valued switch is not uniform (two thirds stitched) any more."""
    out = tmp_path / "run"
    code, _, err = run(
        ["search", stitched, "--out", out, "--budget", "40", "--population", "32",
         "--algorithm", "rs", "--p-stitch", "0.1"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    with RunStore.open(out, readonly=True) as store:
        records = [r for r in store.records() if r.ok]
    net = Supernet.load(stitched)
    raw = np.array([r.genotype for r in records if any(r.genotype[1:])])
    on = (raw[:, 1:] != 0).mean()
    assert 0.04 < on < 0.2, on  # p = 0.1 (canonical forms drop inactive ones: raw here)
    wide = np.array(net.genotype_spec[1:]) == 3
    assert {1, 2} <= set(np.unique(raw[:, 1:][:, wide]))
    run_ = evostitch.load_run(out)
    assert len(run_.records) >= 30

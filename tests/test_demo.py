"""The demo end to end (scaled down) and the command line's handling of bad input."""

import json
import sys
from pathlib import Path

import pytest

from evostitch import api, cli
from evostitch.cli.demo import print_summary
from evostitch.demo import SUMMARY, run_demo
from evostitch.errors import EvostitchError
from evostitch.training import TrainSettings

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = {"cache_dir": None, "progress": False, "parent_steps": 3}  # few steps


def test_demo_end_to_end_small(tmp_path, capsys):
    out, tiny = tmp_path / "demo", {**TINY, "cache_dir": tmp_path / "cache"}
    algorithm = api.DEFAULT_ALGORITHM
    summary = run_demo(
        "classification",
        out,
        algorithm=algorithm,
        budget=10,
        population=4,
        training=TrainSettings(steps=2, downstream=2),
        **tiny,
    )
    assert json.loads((out / SUMMARY).read_text()) == summary
    assert all(Path(p).exists() for p in summary["files"].values())
    assert {"front.csv", "front.png"} <= set(summary["files"])
    assert {"parent A", "parent B"} <= set(summary["references"])
    assert 1 <= summary["evaluations"] <= 10 and summary["front_size"] >= 1
    best = summary["best"]
    assert 0 <= best["metric"] <= 1 and best["macs"] > 0
    assert set(summary["parents_test"]) == {"resnet_like", "mobilenet_like"}
    assert (out / "run" / "reevaluation_test.json").exists()  # the findings are on test
    findings = json.loads((out / "run" / "findings.json").read_text())
    assert findings["split"] == "test" and findings["stitches_hold"]["measured"]
    assert summary["findings"] and all(summary["findings"].values())
    hold = json.loads((out / "supernet" / "stitches_hold.json").read_text())
    assert [row["p"] for row in hold["p"]] == [0.02, 0.1] and hold["samples"] == 16
    print_summary(summary)
    printed = capsys.readouterr().out
    assert "parent A" in printed and "best offspring" in printed and "front.csv" in printed
    assert summary["findings"]["dominating_offspring"].split()[0] in printed
    with pytest.raises(EvostitchError, match="already holds a finished demo"):
        run_demo("classification", out, algorithm="rs", budget=2, population=2, **tiny)


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["evostitch", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return exit_info.value.code, capsys.readouterr().err


STITCH = ["stitch", "--input-shape", "1,28,28", "--a", "demo:resnet_like"]
BAD_INPUT = {
    "missing dataset": (
        [*STITCH, "--b", "demo:mobilenet_like", "--data", "imagefolder:/no/such/folder"],
        "dataset folder not found",
        "supernet.json",
    ),
    "different classes": (
        [*STITCH, "--b", "demo:mobilenet_like?num_classes=5"],
        "disagree on their output shape",
        "supernet.json",
    ),
    "negative hold samples": (
        [*STITCH, "--b", "demo:mobilenet_like", "--hold-samples", "-1"],
        "hold_samples (--hold-samples) >= 0",
        "supernet.json",
    ),
    "zero fit memory": (
        [*STITCH, "--b", "demo:mobilenet_like", "--fit-memory", "0"],
        "fit_memory (--fit-memory) >= 1",
        "supernet.json",
    ),
    "unknown task": (["demo", "--task", "detection"], "unknown --task", SUMMARY),
}


@pytest.mark.parametrize("args, message, marker", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_one_line_exit_2_no_output(
    tmp_path, monkeypatch, capsys, args, message, marker
):
    out = tmp_path / "out"
    code, err = run_cli(monkeypatch, capsys, *args, "--out", str(out))
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err
    assert not (out / marker).exists()


def test_best_offspring_prefers_a_stitched_network_on_the_front():
    from types import SimpleNamespace

    from evostitch.demo import _best_offspring

    def rec(name, metric, macs):
        return SimpleNamespace(canonical=(name,), objectives=(-metric, macs))

    parent, ensemble = rec("a", 0.97, 20), rec("ens", 0.98, 27)
    dominated, on_front = rec("x", 0.98, 28), rec("y", 0.978, 26)
    records, refs = [parent, ensemble, dominated, on_front], {("a",), ("ens",)}
    front = {("a",), ("ens",), ("y",)}
    assert _best_offspring(records, refs, front) is on_front
    assert _best_offspring(records, refs, {("a",), ("ens",)}) is dominated
    assert _best_offspring([parent], refs, front) is parent

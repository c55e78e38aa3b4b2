"""The demo command line's handling of bad input (the demo end to end: test_readme.py)."""

import sys

import pytest

from evostitch import cli
from evostitch.demo import SUMMARY

pytestmark = pytest.mark.usefixtures("one_thread")


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

"""Every command takes paths as users type them: relative to another working directory,
with `~` (left unexpanded by a shell when quoted) and with spaces."""

from __future__ import annotations

import json
import sys

import pytest

from evostitch import cli

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def run(monkeypatch, capsys, *argv: str) -> str:
    """Run the CLI in-process; fail with its stderr unless it exits 0; return stdout."""
    monkeypatch.setattr(sys, "argv", ["evostitch", *argv])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    assert code == 0, f"evostitch {' '.join(argv)} exited {code}: {out.err}"
    return out.out


def test_every_command_with_relative_home_and_spaced_paths(tmp_path, monkeypatch, capsys):
    home, work = tmp_path / "home", tmp_path / "work dir"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    sn, run_dir = "my sn", "~/runs/run 1"
    parents = ["--a", "demo:resnet_like", "--b", "demo:mobilenet_like", "--input-shape", "1,8,8"]
    run(monkeypatch, capsys, "stitch", *parents, "--data", "digits", "--out", sn)
    assert (work / sn / "supernet.json").is_file()

    report = json.loads(run(monkeypatch, capsys, "inspect", sn, "--json", "--samples", "2"))
    assert report["variables"] == 1 + 2 * len(report["matches"])

    search = ["--algorithm", "rs", "--budget", "12", "--population", "4", "--batch", "2"]
    run(monkeypatch, capsys, "search", sn, *search, "--out", run_dir)
    stored = home / "runs" / "run 1"
    assert (stored / "evaluations.sqlite").is_file() and (stored / "front.csv").is_file()
    config = json.loads((stored / "config.json").read_text())
    assert config["problem"]["supernet"] == str(work / sn)  # absolute: the run can move cwd

    printed = run(monkeypatch, capsys, "search", "--resume", run_dir)
    assert "12 evaluations performed" in printed

    run(monkeypatch, capsys, "report", run_dir)
    assert (stored / "report.html").is_file() and (stored / "front.png").is_file()

    run(monkeypatch, capsys, "reevaluate", run_dir, "--split", "test")
    assert (stored / "reevaluation_test.json").is_file()

    run(monkeypatch, capsys, "finetune", run_dir, "--solution", "parent-a", "--max-batches", "2")
    assert (stored / "finetuned" / "parent-a" / "weights.safetensors").is_file()

    run(monkeypatch, capsys, "export", run_dir, "--solution", "parent-a", "--out", "exported net")
    assert (work / "exported net" / "offspring.py").is_file()

    assert not (work / "~").exists()  # "~" was the home folder, never a folder named "~"

"""The README's commands and Python example run as written."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    """The two commands of the README's first bash block: install + demo, then the tests."""
    block = re.search(r"```bash\n(.*?)```", README, flags=re.S)
    assert block, "README has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch):
    """Every python block of the README, as written, in a fresh working directory."""
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    from evostitch.evolution.algorithms import ALGORITHMS

    registered = dict(ALGORITHMS)
    try:
        for block in blocks:
            exec(compile(block, "README.md", "exec"), {})
    finally:  # the example registers an algorithm: leave the registry as it was
        ALGORITHMS.clear()
        ALGORITHMS.update(registered)
    assert (tmp_path / "runs" / "r1" / "front.csv").is_file()
    assert (tmp_path / "runs" / "parent-a" / "offspring.py").is_file()
    assert (tmp_path / "runs" / "mine" / "front.csv").is_file()  # your own algorithm
    assert "one-switch" not in ALGORITHMS


def test_ci_runs_the_readme_test_command():
    install_and_demo, tests = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests.split("&&")[-1].strip() in ci  # python -m pytest
    assert 'pip install --quiet -e ".[dev]"' in ci and 'pip install -e ".[dev]"' in install_and_demo


@pytest.mark.slow
def test_readme_first_command_runs_the_demo_from_a_fresh_folder(tmp_path):
    """The README's demo, default options and output folder, in a new working directory.

    The install steps before it are what `.ci/run` itself did; the demo command runs as
    the README gives it, with this environment's scripts first on PATH.
    """
    install_and_demo, _ = readme_commands()
    demo = install_and_demo.split("&&")[-1].strip()
    assert shlex.split(demo)[:2] == ["evostitch", "demo"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(demo, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "evostitch-demo"
    for name in ("summary.json", "run/front.csv", "run/report.html", "run/front.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert all(Path(p).exists() for p in summary["files"].values())
    assert {"parent A", "parent B"} <= set(summary["references"])
    assert summary["evaluations"] == 250 and summary["front_size"] >= 1  # the defaults
    best = summary["best"]
    assert 0 <= best["metric"] <= 1 and best["macs"] > 0
    assert set(summary["parents_test"]) == {"resnet_like", "mobilenet_like"}
    assert (out / "run" / "reevaluation_test.json").exists()  # the findings are on test
    findings = json.loads((out / "run" / "findings.json").read_text())
    assert findings["split"] == "test" and findings["stitches_hold"]["measured"]
    assert summary["findings"] and all(summary["findings"].values())
    hold = json.loads((out / "supernet" / "stitches_hold.json").read_text())
    assert [row["p"] for row in hold["p"]] == [0.02, 0.1] and hold["samples"] == 16
    printed = done.stdout
    assert "best offspring" in printed and "parent A" in printed and "front.csv" in printed
    assert summary["findings"]["dominating_offspring"].split()[0] in printed
    again = subprocess.run(demo, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "already holds a finished demo" in again.stderr

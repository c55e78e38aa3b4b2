"""`evostitch report` on a tiny real run: files, offline HTML with its data, several runs."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evostitch.cli import app
from evostitch.errors import EvostitchError
from evostitch.evolution.archive import nondominated, reference_point_from
from evostitch.results.report import hypervolume_trace
from evostitch.results.run import read_run, reference_name

runner = CliRunner()
pytestmark = pytest.mark.slow


def tiny_run(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A copy (named `name`) of one tiny stitched run, built once per test session.

    Untrained demo parents on 8x8 digits, a few stitch-training steps, 30 evaluations of
    random search.
    """
    base = tmp_path_factory.getbasetemp() / "tiny-evostitch"
    if not (base / "done").exists():
        from evostitch.api import search
        from evostitch.data import load_dataset
        from evostitch.supernet import Supernet
        from evostitch.training import train_stitches

        shutil.rmtree(base, ignore_errors=True)
        net = Supernet.build("demo:resnet_like", "demo:mobilenet_like", (1, 8, 8))
        net.data = "digits"
        train_stitches(net, load_dataset("digits", "train"), samples=64, progress=False)
        net.save(base / "sn")
        search(
            base / "sn",
            out=base / "run",
            data="digits",
            algorithm="rs",
            budget=30,
            seed=0,
            population=8,
            p_stitch=0.05,
            batch=1,
            progress=False,
        )
        (base / "done").touch()
    copy = tmp_path_factory.mktemp(name) / "run"
    shutil.copytree(base / "run", copy)
    return copy


def invoke(*args: str):
    """Run the CLI; re-raise what it raised so that a failing test shows the cause."""
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


def embedded_data(html: str) -> dict:
    match = re.search(
        r'<script id="report-data" type="application/json">(.*?)</script>', html, re.S
    )
    return json.loads(match.group(1).replace("<\\/", "</"))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory, "report")


def test_report_writes_every_file(run):
    invoke("report", run)
    for name in ("front.csv", "front.png", "hypervolume.png", "report.html"):
        assert (run / name).stat().st_size > 0, name
    _, records = read_run(run)
    front = nondominated(records)
    with open(run / "front.csv") as f:
        rows = list(csv.DictReader(f))
    refs = [r for r in records if reference_name(r.canonical) and r not in front]
    assert [int(r["id"]) for r in rows] == [
        r.id for r in sorted(front, key=lambda r: r.objectives[1]) + refs
    ]


def test_report_html_is_offline_and_holds_every_offspring(run):
    invoke("report", run)
    html = (run / "report.html").read_text()
    assert "<script src" not in html and "<link" not in html
    assert not re.findall(r"https?://(?!www\.w3\.org/2000/svg)", html)  # only the SVG namespace
    data = embedded_data(html)
    _, records = read_run(run)
    assert len(data["points"]) == data["total"] == len(records) == 30
    front = {r.id for r in nondominated(records)}
    assert {p["id"] for p in data["points"] if p["f"]} == front
    names = {p["ref"] for p in data["points"] if p["ref"]}
    assert names == {"parent-a", "parent-b", "ensemble", "ensemble-prob"}
    sizes = {s: len(data["graphs"][s]["nodes"]) for s in "ab"}
    for p in data["points"]:
        assert p["d"].startswith("output: ") and len(p["u"]) == 2
        for side, used in zip("ab", p["u"], strict=True):
            assert len(used) == -(-sizes[side] // 4)  # one hex digit per 4 nodes
        if p["ref"] in ("parent-a", "parent-b"):
            assert p["s"] == []
    assert len(data["images"]) == 2 and data["images"][0].startswith("data:image/png;base64,")


def test_hypervolume_never_decreases_and_uses_the_parents(run):
    _, records = read_run(run)
    refs = [r.objectives for r in records if reference_name(r.canonical)]
    xs, ys = hypervolume_trace(records, reference_point_from(refs))
    assert xs[-1] == records[-1].id and ys[0] >= 0
    assert all(b >= a for a, b in zip(ys, ys[1:], strict=False)) and ys[-1] > 0


def test_report_compares_runs_of_one_problem_and_refuses_others(run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run, other)
    invoke("report", run, other)
    data = embedded_data((run / "report.html").read_text())
    assert [r["evaluations"] for r in data["runs"]] == [30, 30]
    config = json.loads((other / "config.json").read_text())
    config["problem"]["data"] = "mnist5k"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(EvostitchError, match="another problem"):
        invoke("report", run, other)


def test_report_of_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(EvostitchError, match="not an evostitch run"):
        invoke("report", tmp_path)


def test_report_writes_findings_on_val_then_on_test(tmp_path_factory):
    from evostitch.results.findings import KEYS

    run = tiny_run(tmp_path_factory, "findings")
    invoke("report", run)
    findings = json.loads((run / "findings.json").read_text())
    assert set(KEYS) <= set(findings) and findings["split"] == "val"
    assert all(findings[k]["split"] == "val" and findings[k]["text"] for k in KEYS)
    data = embedded_data((run / "report.html").read_text())
    assert data["findings"] == [findings[k]["text"] for k in KEYS]
    assert findings["hypervolume"]["runs"][0]["hypervolume"] == pytest.approx(data["runs"][0]["hv"])
    _, records = read_run(run)
    inactive = findings["inactive_variables"]
    assert inactive["evaluations"] == 30 and inactive["proposals"] >= 30
    changed = sum(r.genotype != r.canonical for r in records)
    assert inactive["noncanonical_evaluations"] == changed
    offspring = [r for r in records if not reference_name(r.canonical)]
    assert findings["dominating_offspring"]["offspring"] == len(offspring)

    invoke("reevaluate", run, "--split", "test")
    invoke("report", run)
    findings = json.loads((run / "findings.json").read_text())
    reeval = json.loads((run / "reevaluation_test.json").read_text())
    assert findings["split"] == "test" and findings["inactive_variables"]["split"] == "val"
    rows = {row["id"]: row for row in reeval["solutions"]}
    gap = findings["val_test_gap"]
    assert gap["count"] == len(nondominated(records)) > 0
    for member in gap["members"]:
        row = rows[member["id"]]
        assert member["gap"] == pytest.approx(row["val"]["accuracy"] - row["test"]["accuracy"])
        assert member["ece"] == row["test"]["ece"]
    assert gap["max_gap"] == max(m["gap"] for m in gap["members"])
    ensemble = findings["ensemble_like"]
    tested = [row for row in reeval["solutions"] if row["name"] is None]
    assert ensemble["offspring"] == len(tested)
    if ensemble["solution"] is not None:
        assert ensemble["solution"]["metric"] >= ensemble["bar"]["metric"]

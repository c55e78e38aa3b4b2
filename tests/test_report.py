"""`evostitch report` on a tiny real run: files, offline HTML with its data, several runs;
the front plot's view and the page's label placement on hand-made cases."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import embedded_data, hit, invoke, tiny_run
from evostitch.errors import EvostitchError
from evostitch.evolution.archive import nondominated, reference_point_from
from evostitch.evolution.store import EvaluationRecord
from evostitch.results.plots import front_view, hypervolume_trace
from evostitch.results.report import references_in
from evostitch.results.solutions import read_run, reference_name

runner = CliRunner()
slow = pytest.mark.slow
REPORT_HTML = Path(__file__).resolve().parents[1] / "src/evostitch/assets/report.html"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory, "report")


@slow
def test_report_writes_every_file(run):
    invoke("report", run)
    for name in ("front.csv", "front.png", "front_full.png", "hypervolume.png", "report.html"):
        assert (run / name).stat().st_size > 0, name
    _, records = read_run(run)
    front = nondominated(records)
    with open(run / "front.csv") as f:
        rows = list(csv.DictReader(f))
    refs = [r for r in records if reference_name(r.canonical) and r not in front]
    assert [int(r["id"]) for r in rows] == [
        r.id for r in sorted(front, key=lambda r: r.objectives[1]) + refs
    ]


@slow
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
    view = front_view(records, references_in(records))
    assert data["view"] == json.loads(json.dumps(asdict(view)))  # the scatter's default


@slow
def test_hypervolume_never_decreases_and_uses_the_parents(run):
    _, records = read_run(run)
    refs = [r.objectives for r in records if reference_name(r.canonical)]
    xs, ys = hypervolume_trace(records, reference_point_from(refs))
    assert xs[-1] == records[-1].id and ys[0] >= 0
    assert all(b >= a for a, b in zip(ys, ys[1:], strict=False)) and ys[-1] > 0


@slow
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


@slow
def test_report_of_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(EvostitchError, match="not an evostitch run"):
        invoke("report", tmp_path)


@slow
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


def record(rid: int, metric: float, macs: float) -> EvaluationRecord:
    return EvaluationRecord((rid,), (rid,), (-metric, macs), id=rid)


def test_front_view_covers_front_and_references_and_counts_the_rest():
    records = [
        record(1, 0.9, 10),  # front
        record(2, 0.8, 5),  # front, parent A
        record(3, 0.85, 12),  # dominated, near the front
        record(4, 0.69, 30),  # dominated, just inside the view: widens it to 30 MACs
        record(5, 0.5, 8),  # below the view
        record(6, 0.1, 20),  # below the view
    ]
    references = {"parent A": (-0.8, 5), "ensemble": (-0.88, 15)}
    view = front_view(records, references)
    # metrics of front and references: 0.8..0.9, span 0.1 -> from 0.7; padded by 6% of 0.2
    assert view.y == pytest.approx((0.7 - 0.012, 0.9 + 0.012))
    assert view.x == pytest.approx((5 - 1.5, 30 + 1.5))  # 5..30 MACs, padded by 6% of 25
    assert view.outside == 2
    # a front of another run (kept in view) at 0.6 lowers the view: 0.6 - 0.3 -> 0.3
    view = front_view(records, references, keep=[record(7, 0.6, 2)])
    assert view.y == pytest.approx((0.3 - 0.036, 0.9 + 0.036))
    assert view.x == pytest.approx((2 - 1.68, 30 + 1.68)) and view.outside == 1


def test_front_view_of_one_metric_and_without_offspring_far_below():
    records = [record(1, 0.9, 10), record(2, 0.9, 20), record(3, 0.87, 40)]
    view = front_view(records, {"parent A": (-0.9, 10)})  # one metric: span 2% of it, 0.018
    assert view.y == pytest.approx((0.882 - 0.018 * 0.06, 0.9 + 0.018 * 0.06))
    assert view.x == pytest.approx((10 - 0.6, 20 + 0.6)) and view.outside == 1
    records[2] = record(3, 0.89, 40)  # above 0.882: the view reaches down to it, no lower
    view = front_view(records, {"parent A": (-0.9, 10)})
    assert view.y == pytest.approx((0.89 - 0.0006, 0.9 + 0.0006))
    assert view.x == pytest.approx((10 - 1.8, 40 + 1.8)) and view.outside == 0


def place_labels(*cases: dict) -> list[list[dict]]:
    """report.html's `placeLabels` (its DOM-free part, run by Node.js) on each case."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is absent: report.html's label placement is not run")
    text = REPORT_HTML.read_text()
    pure = text[text.index("// pure: begin") : text.index("// pure: end")]
    script = (
        pure
        + f"""
const cases = {json.dumps(cases)};
console.log(JSON.stringify(cases.map((c) => placeLabels(c.labels, c.area, c.avoid || []))));
"""
    )
    done = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_labels_never_overlap_and_stay_inside():
    area = {"l": 58, "r": 622, "t": 14, "b": 388}
    near = [  # the demo's zoomed references: parent A level with one ensemble
        {"x": 385, "y": 331, "w": 48, "h": 13, "side": 1},
        {"x": 97, "y": 443, "w": 49, "h": 13, "side": 1},
        {"x": 552, "y": 345, "w": 55, "h": 13, "side": 1},
        {"x": 552, "y": 331, "w": 84, "h": 13, "side": 1},
    ]
    near[1]["y"] = 380  # near the bottom: must stay above it
    avoid = [{"x": p["x"] - 6.5, "y": p["y"] - 6.5, "w": 13, "h": 13} for p in near]
    crowd = [{"x": 600, "y": 20, "w": 150, "h": 13, "side": 1} for _ in range(12)]
    titles = [  # the diagram's parents, wider than half the width: side by side, then stacked
        [
            {"x": 170, "y": 10, "w": w, "h": 13, "side": 0},
            {"x": 390, "y": 10, "w": v, "h": 13, "side": 0},
        ]
        for w, v in ((233, 255), (400, 420))
    ]
    diagram = {"l": 2, "r": 558, "t": 2, "b": 60}
    cases = [
        {"labels": near, "area": area, "avoid": avoid},
        {"labels": crowd, "area": area},
        {"labels": titles[0], "area": diagram},
        {"labels": titles[1], "area": diagram},
    ]
    results = place_labels(*cases)
    for case, boxes in zip(cases, results, strict=True):
        assert len(boxes) == len(case["labels"])
        for i, box in enumerate(boxes):
            a = case["area"]
            assert a["l"] <= box["x"] and box["x"] + box["w"] <= a["r"]
            assert a["t"] <= box["y"] and box["y"] + box["h"] <= a["b"]
            assert not any(hit(box, other) for other in boxes[:i] + case.get("avoid", []))
    near_boxes, crowd_boxes, side_by_side, stacked = results
    assert near_boxes[0] == {"x": 394, "y": 324.5, "w": 48, "h": 13, "lead": None}  # beside it
    # 12 labels on one point at the top right: the first clamped into the area, the others
    # a line (14 px) further down each; the first two touch the point, the others get a leader
    assert [b["y"] for b in crowd_boxes] == [14] + [20 - 6.5 + 14 * k for k in range(1, 12)]
    assert {b["x"] for b in crowd_boxes} == {622 - 150}
    assert [b["lead"] is None for b in crowd_boxes] == [True, True] + [False] * 10
    assert side_by_side[0]["x"] == 170 - 233 / 2 and side_by_side[1]["x"] == 558 - 255
    assert side_by_side[0]["y"] == side_by_side[1]["y"] == 3.5
    assert stacked[1]["y"] == 3.5 + 14 and stacked[1]["x"] == 558 - 420  # centred, clamped

"""The results layer of a three-parent supernetwork: reference names from the output
choices, a parent-c solution found and exported, findings over every parent, and a
report with one column per parent (a tiny real search of the demo trio on 16x16 digits)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

import evostitch
from conftest import embedded_data
from evostitch import Supernet
from evostitch.errors import RunError
from evostitch.evolution.store import RunConfig
from evostitch.results.export import import_file
from evostitch.results.findings import Scored, dominating_offspring, scored_solutions
from evostitch.results.plots import _markers
from evostitch.results.report import references_in
from evostitch.results.solutions import (
    TWO_PARENTS,
    genotype_text,
    output_choices_of,
    parent_names,
    reference_name,
    reference_names,
)

PARENTS = [
    "demo:resnet_like",
    "demo:mobilenet_like",
    "demo:vit_like?image_size=16&patch_size=4&depth=2&width=32",
]
DATA = "digits?size=16"
CHOICES = ("a", "b", "c", "mean-ab", "mean-ac", "mean-bc", "mean",
           "mean-prob-ab", "mean-prob-ac", "mean-prob-bc", "mean-prob")  # fmt: skip
NAMES = ("parent-a", "parent-b", "parent-c", "ensemble-ab", "ensemble-ac", "ensemble-bc",
         "ensemble", "ensemble-prob-ab", "ensemble-prob-ac", "ensemble-prob-bc",
         "ensemble-prob")  # fmt: skip
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """16 evaluations of random search on an untrained three-parent supernetwork."""
    folder = tmp_path_factory.mktemp("three-parents")
    net = Supernet.build(PARENTS, (1, 16, 16))
    net.data = DATA
    net.save(folder / "sn")
    options = {"algorithm": "rs", "budget": 16, "population": 4, "p_stitch": 0.05}
    return evostitch.search(
        folder / "sn", out=folder / "run", data=DATA, batch=1, progress=False, **options
    )


@pytest.fixture(scope="module")
def report(run) -> dict:
    """The report's embedded data and findings.json, written once."""
    run.report()
    html = (run.path / "report.html").read_text()
    findings = json.loads((run.path / "findings.json").read_text())
    return {"html": html, "data": embedded_data(html), "findings": findings}


def test_names_follow_the_output_choices():
    assert reference_names(CHOICES) == NAMES
    assert reference_names() == ("parent-a", "parent-b", "ensemble", "ensemble-prob")
    assert parent_names(CHOICES) == ("parent-a", "parent-b", "parent-c")
    g = (2,) + (0,) * 5
    assert reference_name(g, ("a", "b", "c", "mean", "mean-prob")) == "parent-c"
    assert reference_name(g) == "ensemble"  # the two-parent default
    assert reference_name((2, 1, 0), ("a", "b", "c", "mean")) is None
    assert genotype_text((10, 0, 2, 35)) == "a02z"  # one character per variable, past 9
    assert genotype_text((3, 0, 1)) == "301"


def test_run_names_its_reference_solutions_per_parent(run):
    net = run.supernet
    assert output_choices_of(run.config) == net.output_choices == CHOICES
    named = {s.name: s.genotype for s in run.front if s.name}
    assert named == dict(zip(NAMES, net.reference_genotypes, strict=True))
    with open(run.path / "front.csv") as f:  # written by the search itself
        rows = {r["solution"]: r["genotype"] for r in csv.DictReader(f) if r["solution"]}
    assert {n: g[0] for n, g in rows.items()} == {
        n: genotype_text((i,)) for i, n in enumerate(NAMES)
    }  # the output switch's 11 values: 0-9, then a


def test_output_choices_of_a_run_without_its_supernetwork(run, tmp_path):
    """A run records its output choices: its names survive a moved supernetwork; an
    older run without them, whose supernetwork is gone, reads as two parents."""
    moved = {**run.config.problem, "supernet": str(tmp_path / "gone")}
    assert output_choices_of(RunConfig(algorithm="rs", budget=1, problem=moved)) == (
        *CHOICES,
    )  # fmt: skip
    config = RunConfig(algorithm="rs", budget=1, problem={"supernet": str(tmp_path / "gone")})
    assert output_choices_of(config) == TWO_PARENTS


def test_parent_c_is_found_and_exported_as_parent_c(run, tmp_path):
    net = run.supernet
    found = run.solution("parent-c")
    assert found.name == found.label == "parent-c" and found.genotype == net.reference_genotypes[2]
    assert run.solution("ensemble-ac").genotype[0] == 4
    assert run.solution("ensemble").genotype[0] == 6
    assert run.solution("ensemble-prob-bc").genotype[0] == 9
    assert run.solution("ensemble-prob").genotype[0] == 10
    with pytest.raises(RunError, match="parent-c"):  # the message lists the run's names
        run.solution("parent-d")
    run.export("parent-c", tmp_path / "c")
    meta = json.loads((tmp_path / "c" / "offspring.json").read_text())
    assert meta["solution"] == "parent-c" and meta["description"].startswith("output: c")
    model = import_file(tmp_path / "c" / "offspring.py").load(
        tmp_path / "c" / "weights.safetensors"
    )
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        own, exported = net.cpu().eval().parents["c"](x), model(x)
        other = net.parents["a"](x)
    assert torch.allclose(exported, own, atol=1e-5)
    assert not torch.allclose(exported, other, atol=1e-3)  # not another parent's output


def test_dominating_offspring_counts_every_parent():
    choices = ("a", "b", "c", "mean", "mean-prob")
    solutions = [
        Scored("parent-a", 1, "parent-a", 0.90, 100.0),
        Scored("parent-b", 2, "parent-b", 0.85, 50.0),
        Scored("parent-c", 3, "parent-c", 0.50, 10.0),
        Scored("4", 4, None, 0.60, 8.0),  # beats only parent-c
    ]
    found = dominating_offspring(solutions, "val", parents=parent_names(choices))
    assert {k: v["count"] for k, v in found["by_parent"].items()} == {
        "parent-a": 0,
        "parent-b": 0,
        "parent-c": 1,
    }
    assert found["count"] == 1 and found["best"]["against"] == "parent-c"
    assert found["missing_parents"] == []
    missing = dominating_offspring(solutions[:2], "val", parents=parent_names(choices))
    assert missing["missing_parents"] == ["parent-c"]


def test_findings_of_the_run_consider_all_three_parents(run, report):
    found = report["findings"]["dominating_offspring"]
    assert set(found["by_parent"]) == {"parent-a", "parent-b", "parent-c"}
    assert found["missing_parents"] == []
    _, solutions = scored_solutions(run.records, output_choices=run.supernet.output_choices)
    refs = {s.name: s for s in solutions if s.name}
    assert set(refs) == set(NAMES)
    offspring = [s for s in solutions if s.name is None]
    c = refs["parent-c"]
    beat = [o for o in offspring if o.metric > c.metric and o.macs <= c.macs]
    assert found["by_parent"]["parent-c"]["count"] == len(beat)
    bars = report["findings"]["ensemble_like"]["ensembles"]
    assert set(bars) == {"ensemble", "ensemble-prob"}
    assert bars["ensemble"]["label"] == "ensemble" and bars["ensemble"]["id"] == refs["ensemble"].id


def test_report_embeds_three_sides(run, report):
    data, net = report["data"], run.supernet
    assert list(data["graphs"]) == ["a", "b", "c"]
    sizes = {s: len(data["graphs"][s]["nodes"]) for s in "abc"}
    assert {p["ref"] for p in data["points"] if p["ref"]} == set(NAMES)
    assert len(data["matches"]) == len(net.matches)
    assert all(len(m) == 3 and sum(i is not None for i in m) >= 2 for m in data["matches"])
    stitched = 0
    for p in data["points"]:
        assert len(p["u"]) == 3
        for side, src, dst, source in p["s"]:  # K > 2: the source side is given
            assert source != side and src < sizes[source] and dst < sizes[side]
            stitched += 1
    assert stitched > 0
    labels = references_in(run.records, net.output_choices)
    assert list(labels) == [
        "parent A",
        "parent B",
        "parent C",
        "ensemble A+B",
        "ensemble A+C",
        "ensemble B+C",
        "ensemble",
        "ensemble A+B (probabilities)",
        "ensemble A+C (probabilities)",
        "ensemble B+C (probabilities)",
        "ensemble (probabilities)",
    ]
    assert _markers(list(labels)) == [*"s^<ddd", "D", *"ddd", "v"]
    assert _markers(["parent A", "parent B", "ensemble", "ensemble (probabilities)"]) == list(
        "s^Dv"
    )
    assert (run.path / "front.png").stat().st_size > 0


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent")
def test_report_draws_a_column_and_a_colour_per_parent(run, report, tmp_path):
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--virtual-time-budget=5000",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--dump-dom",
        (run.path / "report.html").as_uri(),
    ]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    nodes = re.findall(r'data-node="([a-z]):', dom.stdout)
    assert {s: nodes.count(s) for s in "abc"} == {
        s: len(report["data"]["graphs"][s]["nodes"]) for s in "abc"
    }
    assert re.search(r'class="pt [^"]*\bref r-parent-c\b', dom.stdout)
    assert ".r-parent-c { fill: #17becf; }" in dom.stdout
    assert '<svg id="diagram" width="780"' in dom.stdout

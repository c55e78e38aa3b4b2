"""Reports of search runs, written into the (first) run folder.

- ``front.csv``: the front (and the reference solutions), with test metrics when the
  run was re-evaluated (`evostitch reevaluate`);
- ``front.png``: metric against MACs in the region that matters (the front, the parents
  and ensembles, the offspring near them; those below counted), offspring faded, the
  front highlighted, parents and ensembles marked (other runs' fronts as lines);
  ``front_full.png`` the same with every offspring (`evostitch.results.plots`);
- ``hypervolume.png``: hypervolume over evaluations, one line per run; the reference
  point comes from the reference solutions' objectives (`reference_point_from`) and the
  volume is shown as a fraction of the box between (metric 1, 0 MACs) and that point;
- ``findings.json``: what the run shows, in numbers (`evostitch.results.findings`);
- ``report.html``: one self-contained page (no network, data as JSON, hand-written JS)
  with the findings as sentences, an interactive scatter (zoomed as front.png, every
  offspring one click away), the front as a table and, for a selected offspring, the
  parents' graphs (one column per parent, K >= 2) with the used nodes and the stitches drawn.
"""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Sequence
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import numpy as np
from rich.console import Console

from ..errors import EvostitchError, RunError
from ..evaluation.holding import load_hold_figure
from ..evaluation.metrics import primary_metric
from ..evaluation.transitions import load_transitions
from ..evolution.archive import nondominated, reference_point_from
from ..evolution.store import EvaluationRecord, RunConfig, RunStore
from ..files import absolute, readable_json, save_output, user_path, writable_folder
from ..supernet import Supernet
from .findings import compute_findings, finding_texts
from .plots import front_view, plot_front, plot_hypervolume
from .reevaluate import load_reevaluation
from .solutions import (
    TWO_PARENTS,
    genotype_text,
    output_choices_of,
    read_run,
    reference_name,
    reference_names,
)

LABELS = {
    "parent-a": "parent A",
    "parent-b": "parent B",
    "ensemble": "ensemble",
    "ensemble-prob": "ensemble (probabilities)",
}
MAX_POINTS = 4000  # offspring drawn in report.html (the front and references always)


def reference_label(name: str) -> str:
    """A reference solution's display label: parent-c -> "parent C", ensemble-ab ->
    "ensemble A+B", as `LABELS`."""
    if name in LABELS:
        return LABELS[name]
    if name.startswith("ensemble-prob-"):
        return (
            "ensemble " + "+".join(name.removeprefix("ensemble-prob-").upper()) + " (probabilities)"
        )
    if name.startswith("ensemble-"):
        return "ensemble " + "+".join(name.removeprefix("ensemble-").upper())
    return f"parent {name.removeprefix('parent-').upper()}"


def references_in(
    records: list[EvaluationRecord], output_choices: Sequence[str] = TWO_PARENTS
) -> dict[str, tuple[float, ...]]:
    """Objectives of the reference solutions found among `records`, by display label (in
    the order of the supernetwork's `output_choices`)."""
    found = {reference_name(r.canonical, output_choices): r.objectives for r in records}
    names = reference_names(output_choices)
    return {reference_label(k): found[k] for k in names if k in found}


def _test_rows(reeval: dict | None) -> dict[str, dict]:
    return {s["genotype"]: s for s in (reeval or {}).get("solutions", [])}


def write_front_csv(
    records: list[EvaluationRecord],
    path: Path,
    reeval: dict | None = None,
    output_choices: Sequence[str] = TWO_PARENTS,
) -> Path:
    """The front by MACs, then the reference solutions that are not on it (named by the
    supernetwork's `output_choices`)."""
    front = sorted(nondominated(records), key=lambda r: r.objectives[1])
    refs = [r for r in records if reference_name(r.canonical, output_choices) and r not in front]
    rows = _test_rows(reeval)
    extra = []
    if reeval:
        split, metric, searched = reeval["split"], reeval["metric"], reeval["search_split"]
        extra = [f"{split}_{metric}", f"{split}_minus_{searched}"]  # the sign in the name
        if reeval["task"] == "classification":
            extra += [f"{searched}_ece", f"{split}_ece"]
        if reeval.get("calibrated"):
            extra += [f"{split}_ece_calibrated", "temperature"]
    table = [["id", "solution", "metric", "macs", *extra, "genotype"]]
    for r in front + refs:
        values = []
        if row := rows.get(genotype_text(r.canonical)):
            test = row[split][metric]
            values = [test, test - (-r.objectives[0])]
            if len(extra) > 2:
                values += [row[searched]["ece"], row[split]["ece"]]
            if len(extra) > 4:
                values += [row[split]["ece_calibrated"], row["temperature"]]
        values += [""] * (len(extra) - len(values))
        name = reference_name(r.canonical, output_choices) or ""
        cells = [r.id, name, -r.objectives[0], r.objectives[1], *values]
        table.append([*cells, genotype_text(r.canonical)])
    return save_output(path, lambda tmp: _write_csv(tmp, table))


def _write_csv(path: str, table: list[list]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(table)


def _hex(bits: list[bool]) -> str:
    bits = bits + [False] * (-len(bits) % 4)
    return "".join(
        f"{int(''.join('1' if b else '0' for b in bits[i : i + 4]), 2):x}"
        for i in range(0, len(bits), 4)
    )


def _structure(net: Supernet, genotype: tuple[int, ...]) -> dict:
    """Used nodes (hex bit masks per side), stitches and output of one offspring. A stitch
    is [side, source index, node index], plus its source side where K > 2 (for K = 2 it
    is the other side)."""
    plan = net.plan(genotype)
    index = {s: {n: i for i, n in enumerate(net.graphs[s].nodes)} for s in net.sides}
    used = [_hex([(s, n) in plan.raw for n in net.graphs[s].nodes]) for s in net.sides]
    more = len(net.sides) > 2
    stitches = [
        [sw.side, index[sw.src[0]][sw.source], index[sw.side][sw.node]]
        + ([sw.src[0]] if more else [])
        for sw in plan.stitched
    ]
    return {
        "d": net.describe(genotype),
        "u": used,
        "s": stitches,
        "o": net.output_choices[genotype[0]],
    }


def _graphs(net: Supernet) -> dict:
    """Each parent's nodes (name, shape, input indices), keyed by side in side order (the
    page's columns), and the matched groups: per side a node index or None."""
    out, indices = {}, {}
    for side, spec in zip(net.sides, net.specs, strict=True):
        g = net.graphs[side]
        index = indices[side] = {n: i for i, n in enumerate(g.nodes)}
        nodes = [
            [
                n.name,
                "x".join(map(str, n.shape[1:])) if n.shape else "",
                [index[i] for i in n.inputs],
            ]
            for n in g.nodes.values()
        ]
        label = (spec or {}).get("spec") or type(g.module).__name__
        out[side] = {"spec": label, "nodes": nodes, "output": index[g.output]}
    matches = [
        [None if n is None else indices[s][n] for s, n in zip(net.sides, m[:-1], strict=True)]
        for m in net.matches
    ]
    return {"graphs": out, "matches": matches}


def _shown(records: list[EvaluationRecord], keep: set[int]) -> list[EvaluationRecord]:
    """All records, or the kept ones plus an even sample up to MAX_POINTS."""
    if len(records) <= MAX_POINTS:
        return records
    rest = [r for r in records if r.id not in keep]
    step = len(rest) / max(MAX_POINTS - len(keep), 1)
    sample = {rest[int(i * step)].id for i in range(max(MAX_POINTS - len(keep), 0))}
    return [r for r in records if r.id in keep or r.id in sample]


def html_data(
    config: RunConfig,
    records: list[EvaluationRecord],
    net: Supernet | None,
    reeval: dict | None,
    summary: dict,
) -> dict:
    """Everything report.html shows, as plain JSON-able values."""
    choices = net.output_choices if net is not None else output_choices_of(config)
    front = {r.id for r in nondominated(records)}
    keep = front | {r.id for r in records if reference_name(r.canonical, choices)}
    rows = _test_rows(reeval)
    points = []
    for r in _shown(records, keep):
        p = {"id": r.id, "m": -r.objectives[0], "c": r.objectives[1], "f": r.id in front}
        p["ref"] = reference_name(r.canonical, choices)
        if net is not None:
            p |= _structure(net, r.canonical)
        if row := rows.get(genotype_text(r.canonical)):
            p["v"], p["t"] = row[reeval["search_split"]], row[reeval["split"]]
        points.append(p)
    data = {
        **summary,
        "metric": primary_metric(net.task) if net else (reeval or {}).get("metric", "metric"),
        "split": config.problem.get("split", "val"),
        "test_split": reeval["split"] if reeval else None,
        "total": len(records),
        "points": points,
    }
    if net is not None:
        data |= _graphs(net) | {"task": net.task}
    return data


# in the page's data block, no label may open or close a markup context (`</script>`,
# `<!--`, `<script`): JSON.parse reads these escapes back as the characters they stand for
_MARKUP_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


def embeddable_json(data: dict) -> str:
    """`data` as JSON text safe inside a <script> element: `<`, `>` and `&` escaped (they
    occur only inside strings), every non-ASCII character too (U+2028, U+2029...)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True).translate(_MARKUP_ESCAPES)


def write_html(data: dict, path: Path, images: list[Path] = ()) -> Path:
    """Fill the page template with the data (and PNGs as data URIs): one offline file."""
    template = resources.files("evostitch").joinpath("assets/report.html").read_text("utf-8")
    data = dict(data, images=[_data_uri(p) for p in images])
    page = template.replace("__DATA__", embeddable_json(data))
    return save_output(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _load_net(config: RunConfig, trust_code: bool) -> Supernet | None:
    try:
        return Supernet.load(config.problem["supernet"], trust_code=trust_code)
    except (EvostitchError, KeyError) as exc:
        Console(stderr=True).print(f"[yellow]report without graphs: {exc}[/yellow]")
        return None


def _read_run(run: Path) -> tuple[RunConfig, list[EvaluationRecord], dict | None]:
    """The run's config, every stored row (failed ones too) and its checkpoint; a one-line
    error when no evaluation succeeded (nothing to draw), with the first failure's cause."""
    with RunStore.open(run, readonly=True) as store:
        config, stored, checkpoint = store.config, list(store.records()), store.load_checkpoint()
    if not any(r.ok for r in stored):
        failed = [r for r in stored if not r.ok]
        why = f": all {len(failed)} failed, the first with: {failed[0].error}" if failed else ""
        why = " ".join(why.split())[:300]  # an error's traceback text on one line
        raise RunError(f"{run} holds no successful evaluation{why or ' yet'}")
    return config, stored, checkpoint


def _compared_runs(
    run: Path, config: RunConfig, records: list[EvaluationRecord], others: Sequence[str | Path]
) -> tuple[list[tuple[str, list[EvaluationRecord]]], list[RunConfig]]:
    """(label, successful rows) of the run and of each run compared with it, and their
    configs; a one-line error for a run of another problem."""
    runs, configs = [(_run_label(run, config), records)], [config]
    for other in map(user_path, others):
        other_config, other_records = read_run(other)
        keys = ("supernet", "data", "split")
        if any(other_config.problem.get(k) != config.problem.get(k) for k in keys):
            raise RunError(f"{other} searched another problem than {run}: not comparable")
        label = _run_label(other, other_config)
        label += f" #{len(runs) + 1}" if label in dict(runs) else ""
        runs.append((label, other_records))
        configs.append(other_config)
    return runs, configs


def _run_label(run: Path, config: RunConfig) -> str:
    return f"{config.algorithm}, seed {config.seed} ({absolute(run).name})"


def write_report(
    run: str | Path,
    references: dict[str, tuple] | None = None,
    others: list[str | Path] = (),
    *,
    trust_code: bool = False,
) -> list[Path]:
    """Write front.csv, front.png, hypervolume.png, front_full.png, findings.json and
    report.html into `run`.

    `references` (label -> objectives) defaults to the reference solutions stored in the
    run; `others` are further runs of the same problem, compared in the plots. The page
    draws the parents' graphs when their supernetwork loads (a code-named parent only
    with `trust_code`).
    """
    run = writable_folder(run, "run folder")  # before any work: it receives every file
    config, stored, checkpoint = _read_run(run)
    records = [r for r in stored if r.ok]
    runs, configs = _compared_runs(run, config, records, others)
    net = _load_net(config, trust_code)
    choices = net.output_choices if net is not None else output_choices_of(config)
    references = references or references_in(records, choices)
    ref_objectives = list(references.values()) or [
        tuple(np.max([r.objectives for r in records], axis=0))
    ]
    ref_point = reference_point_from(ref_objectives)
    reeval = load_reevaluation(run)
    files = [
        write_front_csv(records, run / "front.csv", reeval, choices),
        plot_front(records, references, run / "front.png", runs[1:]),
    ]
    hv_path, final = plot_hypervolume(runs, ref_point, run / "hypervolume.png")
    files += [
        hv_path,
        plot_front(records, references, run / "front_full.png", runs[1:], zoom=False),
    ]
    summary = {
        "title": f"evostitch report: {absolute(run).name}",
        "runs": [
            {"label": label, "evaluations": len(recs), "hv": final[label]} for label, recs in runs
        ],
        "data": config.problem.get("data"),
        "ref_point": list(ref_point),
        "view": asdict(front_view(records, references)),  # the scatter's default region
    }
    data = html_data(config, records, net, reeval, summary)
    findings = compute_findings(
        records,
        reeval,
        search_split=data["split"],
        metric=data["metric"],
        stored=stored,
        checkpoint=checkpoint,
        runs=[(label, c, recs) for (label, recs), c in zip(runs, configs, strict=True)],
        ref_point=ref_point,
        hold=stored_figures(config.problem.get("supernet")),
        output_choices=choices,
    )
    text = readable_json(findings)
    save_output(run / "findings.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    data["findings"] = finding_texts(findings)
    files.append(write_html(data, run / "report.html", files[1:3]))
    return [*files, run / "findings.json"]


def stored_figures(supernet: str | None) -> dict | None:
    """The supernetwork folder's "stitches hold" figure, with its transition map's
    sentence when it has one; None without a figure."""
    hold = load_hold_figure(supernet) if supernet else None
    transitions = load_transitions(supernet) if hold else None
    return {**hold, "transitions": transitions["text"]} if transitions else hold

"""A run's solutions (its front and the reference solutions) and their re-evaluation.

Validation scores partly overfit: the search picked them. `reevaluate(run, "test")`
scores every front member and every reference solution on a held-out split, and on
the search's own split again with every metric of the task (ECE with 15 bins for
classifiers), then writes ``RUN/reevaluation_<split>.json`` atomically::

    {"format": "evostitch-reevaluation", "version": 1, "split": "test", "search_split": "val",
     "data": "digits", "task": "classification", "metric": "accuracy", "calibrated": false,
     "created": "...", "solutions": [{"label": "7", "id": 7, "name": null, "genotype": "2000100...",
                    "val": {"accuracy": ..., "ece": ..., "macs": ...}, "test": {...}}]}

Solutions are named as in `evostitch.results.solutions`.

With ``calibrate`` (classifiers only) each solution is also temperature-scaled: its
logits divided by the temperature T that minimises its cross-entropy (NLL) on the search
split, chosen on the log-spaced grid `evostitch.evaluation.metrics.TEMPERATURES` (1/4 to
16 in steps of 2^(1/16)) whose curves both splits accumulate in their one pass. The file
then says ``"calibrated": true`` and each row adds ``"temperature": T`` and, per split,
``"ece_calibrated"`` and ``"cross_entropy_calibrated"`` (those of logits / T; on the search
split they are in-sample; a T at the grid's end means the best one lies beyond it).
Accuracy is the same at every temperature. Without it the rows are as before: readers
treat these fields as optional (the version stays 1). Other tasks refuse ``calibrate``.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import RunError
from ..evaluation.metrics import fit_temperature
from ..files import readable_json, save_output, user_path, writable_folder
from .solutions import genotype_text, load_supernet, read_run, run_solutions

FORMAT = "evostitch-reevaluation"


def reevaluate(
    run: str | Path,
    split: str = "test",
    *,
    batch_size: int = 256,
    device: Any = None,
    amp: str | None = None,
    trust_code: bool = False,
    calibrate: bool = False,
) -> Path:
    """Score the front and the reference solutions on `split` and on the whole split the
    run searched on (all of it, also when the search used a subset); write and return
    the file. `calibrate`: also temperature-scaled, T fitted on the search split."""
    from ..evolution.stitching import make_evaluator

    run = writable_folder(run, "run folder")  # before the work: it receives the file
    config, records = read_run(run)
    search_split = config.problem.get("split", "val")
    if split == search_split:
        raise RunError(f"the run was searched on {split!r}: re-evaluate on another split")
    net = load_supernet(config, trust_code=trust_code)
    if calibrate and net.task != "classification":
        raise RunError(f"--calibrate (temperature scaling) applies to classifiers, not {net.task}")
    data = config.problem["data"]
    options = {"batch_size": batch_size, "device": device, "amp": amp}
    held_out = make_evaluator(net, data, split, **options)
    searched = make_evaluator(net, data, search_split, **options)
    solutions = run_solutions(net, records)
    genotypes = [s.genotype for s in solutions]  # scored together: shared prefixes once
    scores = {
        search_split: searched.metrics_many(genotypes, calibrate=calibrate),
        split: held_out.metrics_many(genotypes, calibrate=calibrate),
    }
    rows = []
    for i, s in enumerate(solutions):
        row = {"label": s.label, "id": s.id, "name": s.name, "genotype": genotype_text(s.genotype)}
        row |= {search_split: scores[search_split][i], split: scores[split][i]}
        if calibrate:
            row |= temperature_scaled(row[search_split], row[split])
        rows.append(row)
    result = {
        "format": FORMAT,
        "version": 1,
        "split": split,
        "search_split": search_split,
        "data": data,
        "task": net.task,
        "metric": held_out.metric_name,
        "calibrated": calibrate,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "solutions": rows,
    }
    text = readable_json(result)
    path = run / f"reevaluation_{split}.json"
    return save_output(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def temperature_scaled(searched: dict[str, Any], held_out: dict[str, Any]) -> dict[str, float]:
    """Fit T on the search split's curves ("by_temperature", removed from both score
    dicts) and add each split's ECE and cross-entropy at T; returns {"temperature": T}."""
    curves = searched.pop("by_temperature"), held_out.pop("by_temperature")
    i = fit_temperature(curves[0])
    for scores, curve in zip((searched, held_out), curves, strict=True):
        scores["ece_calibrated"] = curve["ece"][i]
        scores["cross_entropy_calibrated"] = curve["cross_entropy"][i]
    return {"temperature": curves[0]["temperature"][i]}


def load_reevaluation(run: str | Path, split: str = "test") -> dict | None:
    """The re-evaluation stored in the run folder, or None if there is none."""
    path = user_path(run) / f"reevaluation_{split}.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"{path} is unreadable: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RunError(f"{path} is not an evostitch re-evaluation")
    why = _damage(data)
    if why:
        raise RunError(f"{path} is damaged: {why}")
    return data


def _damage(data: dict) -> str | None:
    """What makes a stored re-evaluation unusable (a folder may come from anyone), or None:
    the fields the report and the findings read, with their types and finite scores."""
    names = ("split", "search_split", "metric", "task")
    if not all(isinstance(data.get(k), str) for k in names):
        return f"{', '.join(names)} must be texts"
    rows = data.get("solutions")
    if not isinstance(rows, list):
        return "solutions must be a list"
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("label"), str):
            return f"solution {i} has no label"
        if row.get("id") is not None and type(row["id"]) is not int:
            return f"solution {i} has an id that is not a whole number"
        needed = [data["metric"]] + (["ece"] if data["task"] == "classification" else [])
        for split in (data["search_split"], data["split"]):
            scores = row.get(split)
            for name in needed:
                if not isinstance(scores, dict) or not _finite(scores.get(name)):
                    return f"solution {i} has no finite {name} on {split}"
            numbers = [v for v in scores.values() if not isinstance(v, dict | list | None)]
            if not all(map(_finite, numbers)):
                return f"solution {i} has a score on {split} that is not a finite number"
        calibrated = [row.get("temperature"), row[data["split"]].get("ece_calibrated")]
        if data.get("calibrated") and not all(map(_finite, calibrated)):
            return f"solution {i} has no finite temperature and calibrated ECE"
    return None


def _finite(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)

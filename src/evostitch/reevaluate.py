"""A run's solutions (its front and the reference solutions) and their re-evaluation.

Validation scores partly overfit: the search picked them. `reevaluate(run, "test")`
scores every front member and every reference solution on a held-out split, and on
the search's own split again with every metric of the task (ECE with 15 bins for
classifiers), then writes ``RUN/reevaluation_<split>.json`` atomically::

    {"format": "evostitch-reevaluation", "version": 1, "split": "test", "search_split": "val",
     "data": "digits", "task": "classification", "metric": "accuracy", "created": "...",
     "solutions": [{"label": "7", "id": 7, "name": null, "genotype": "2000100...",
                    "val": {"accuracy": ..., "ece": ..., "macs": ...}, "test": {...}}]}

A solution is named on the command line by its row id in the run store, or by the name
of a reference solution: parent-a, parent-b, ensemble (mean of the outputs) and, for
classifiers, ensemble-prob (mean of the probabilities).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import EvostitchError
from .paths import user_path
from .search.loop import nondominated
from .search.store import EvaluationRecord, RunConfig, RunStore, write_json_atomic
from .supernet import Supernet

FORMAT = "evostitch-reevaluation"
REFERENCE_NAMES = ("parent-a", "parent-b", "ensemble", "ensemble-prob")


@dataclass(frozen=True)
class Solution:
    """One offspring of a run: `label` is its row id as text or its reference name."""

    label: str
    genotype: tuple[int, ...]
    id: int | None = None
    name: str | None = None
    objectives: tuple[float, ...] | None = None


def genotype_text(genotype: tuple[int, ...]) -> str:
    """A genotype as one digit per variable (every variable has fewer than 10 values)."""
    return "".join(map(str, genotype))


def reference_name(genotype: tuple[int, ...]) -> str | None:
    """parent-a, parent-b, ensemble or ensemble-prob for a reference genotype, else None."""
    if genotype and not any(genotype[1:]) and genotype[0] < len(REFERENCE_NAMES):
        return REFERENCE_NAMES[genotype[0]]
    return None


def read_run(run: str | Path) -> tuple[RunConfig, list[EvaluationRecord]]:
    """The run's config and its successful evaluations, in the order they were stored."""
    with RunStore.open(run, readonly=True) as store:
        return store.config, [r for r in store.records() if r.ok]


def load_supernet(config: RunConfig) -> Supernet:
    """The supernetwork a run searched (its folder is recorded in the run's config)."""
    folder = config.problem.get("supernet")
    if not folder:
        raise EvostitchError("the run records no supernetwork (not a stitching run?)")
    return Supernet.load(folder)


def _solution(record: EvaluationRecord) -> Solution:
    name = reference_name(record.canonical)
    return Solution(name or str(record.id), record.canonical, record.id, name, record.objectives)


def run_solutions(net: Supernet, records: list[EvaluationRecord]) -> list[Solution]:
    """The front (by MACs) followed by every reference solution not already on it."""
    front = sorted(nondominated(records), key=lambda r: r.objectives[1])
    found = [_solution(r) for r in front]
    stored = {r.canonical: r for r in records}
    for g in net.reference_genotypes:
        if not any(s.genotype == g for s in found):
            found.append(_solution(stored[g]) if g in stored else _reference(g))
    return found


def _reference(genotype: tuple[int, ...]) -> Solution:
    name = reference_name(genotype)
    return Solution(name, genotype, name=name)


def find_solution(net: Supernet, records: list[EvaluationRecord], key: str) -> Solution:
    """The solution named `key`: a row id of the run store or a reference name."""
    if key in REFERENCE_NAMES:
        index = REFERENCE_NAMES.index(key)
        if index >= len(net.reference_genotypes):
            raise EvostitchError(f"{key} does not exist for a {net.task} supernetwork")
        g = net.reference_genotypes[index]
        stored = [r for r in records if r.canonical == g]
        return _solution(stored[0]) if stored else _reference(g)
    try:
        row = int(key)
    except ValueError:
        raise EvostitchError(
            f"unknown solution {key!r}: a row id or one of {', '.join(REFERENCE_NAMES)}"
        ) from None
    for r in records:
        if r.id == row:
            return _solution(r)
    raise EvostitchError(f"the run has no successful evaluation with id {row}")


def reevaluate(
    run: str | Path, split: str = "test", *, batch_size: int = 256, device: Any = None
) -> Path:
    """Score the front and the reference solutions on `split`; write and return the file."""
    from .problem import make_evaluator

    run = user_path(run)
    config, records = read_run(run)
    search_split = config.problem.get("split", "val")
    if split == search_split:
        raise EvostitchError(f"the run was searched on {split!r}: re-evaluate on another split")
    net = load_supernet(config)
    data = config.problem["data"]
    held_out = make_evaluator(net, data, split, batch_size=batch_size, device=device)
    searched = make_evaluator(net, data, search_split, batch_size=batch_size, device=device)
    rows = [
        {
            "label": s.label,
            "id": s.id,
            "name": s.name,
            "genotype": genotype_text(s.genotype),
            search_split: searched.metrics(s.genotype),
            split: held_out.metrics(s.genotype),
        }
        for s in run_solutions(net, records)
    ]
    result = {
        "format": FORMAT,
        "version": 1,
        "split": split,
        "search_split": search_split,
        "data": data,
        "task": net.task,
        "metric": held_out.metric_name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "solutions": rows,
    }
    path = run / f"reevaluation_{split}.json"
    write_json_atomic(path, result)
    return path


def load_reevaluation(run: str | Path, split: str = "test") -> dict | None:
    """The re-evaluation stored in the run folder, or None if there is none."""
    path = user_path(run) / f"reevaluation_{split}.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvostitchError(f"{path} is unreadable: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise EvostitchError(f"{path} is not an evostitch re-evaluation")
    return data

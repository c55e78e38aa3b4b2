"""A run's solutions: its front and the reference solutions, named as the CLI names them.

A solution is named by its row id in the run store, or by the name of a reference
solution, one per output choice of the supernetwork (`reference_names`): parent-a,
parent-b, ... (one per parent, K >= 2), ensemble (mean of the outputs) and, for
classifiers, ensemble-prob (mean of the probabilities).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import EvostitchError, RunError
from ..evolution.archive import nondominated
from ..evolution.store import EvaluationRecord, RunConfig, RunStore
from ..files import user_path
from ..supernet import Supernet, output_choices_for, side_names
from ..supernet.io import JSON_NAME

ENSEMBLE_NAMES = {"mean": "ensemble", "mean-prob": "ensemble-prob"}
# the output choices of a two-parent classifier: the default where none are given (their
# names also fit a two-parent segmenter, which only lacks the last)
TWO_PARENTS = ("a", "b", "mean", "mean-prob")


@dataclass(frozen=True)
class Solution:
    """One offspring of a run: `label` is its row id as text or its reference name."""

    label: str
    genotype: tuple[int, ...]
    id: int | None = None
    name: str | None = None
    objectives: tuple[float, ...] | None = None


DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def genotype_text(genotype: tuple[int, ...]) -> str:
    """A genotype as one character per variable: 0-9, then a-z for values 10 to 35 (an
    output switch over K parents and their sub-ensembles; see `output_choices_for`)."""
    return "".join(DIGITS[v] for v in genotype)


def reference_names(output_choices: Sequence[str] = TWO_PARENTS) -> tuple[str, ...]:
    """The reference solutions' names, one per output choice (`Supernet.output_choices`):
    side s -> parent-s, mean -> ensemble, mean-prob -> ensemble-prob, a subset's
    mean-ab -> ensemble-ab, mean-prob-ab -> ensemble-prob-ab."""
    return tuple(_reference_name(c) for c in output_choices)


def _reference_name(choice: str) -> str:
    if choice in ENSEMBLE_NAMES:
        return ENSEMBLE_NAMES[choice]
    if choice.startswith("mean-"):  # mean-ab -> ensemble-ab, mean-prob-ab -> ensemble-prob-ab
        return "ensemble-" + choice.removeprefix("mean-")
    return f"parent-{choice}"


REFERENCE_NAMES = reference_names()  # those of a two-parent classifier


def parent_names(output_choices: Sequence[str] = TWO_PARENTS) -> tuple[str, ...]:
    """The parents' reference names (parent-a, parent-b, ...), in side order."""
    return tuple(f"parent-{c}" for c in output_choices if not c.startswith("mean"))


def reference_name(
    genotype: tuple[int, ...], output_choices: Sequence[str] = TWO_PARENTS
) -> str | None:
    """The reference name of a reference genotype (output choice, every switch 0), else None."""
    names = reference_names(output_choices)
    if genotype and not any(genotype[1:]) and genotype[0] < len(names):
        return names[genotype[0]]
    return None


def output_choices_of(config: RunConfig) -> tuple[str, ...]:
    """The output choices of the supernetwork a run searched: recorded in the run, else
    read from its supernet.json (no parent is rebuilt); a two-parent classifier's when
    that file cannot be read."""
    if "output_choices" in config.problem:
        return tuple(config.problem["output_choices"])
    folder = config.problem.get("supernet")
    try:
        meta = json.loads((user_path(folder) / JSON_NAME).read_text())
        sides = side_names(len(meta["parents"]))
        task = meta["task"]
    except (OSError, ValueError, TypeError, KeyError, EvostitchError):
        return TWO_PARENTS
    return output_choices_for(sides, task)


def read_run(run: str | Path) -> tuple[RunConfig, list[EvaluationRecord]]:
    """The run's config and its successful evaluations, in the order they were stored."""
    with RunStore.open(run, readonly=True) as store:
        return store.config, [r for r in store.records() if r.ok]


def load_supernet(config: RunConfig, *, trust_code: bool = False) -> Supernet:
    """The supernetwork a run searched (its folder is recorded in the run's config)."""
    folder = config.problem.get("supernet")
    if not folder:
        raise RunError("the run records no supernetwork (not a stitching run?)")
    return Supernet.load(folder, trust_code=trust_code)


def _solution(record: EvaluationRecord, choices: Sequence[str]) -> Solution:
    name = reference_name(record.canonical, choices)
    return Solution(name or str(record.id), record.canonical, record.id, name, record.objectives)


def run_solutions(net: Supernet, records: list[EvaluationRecord]) -> list[Solution]:
    """The front (by MACs) followed by every reference solution not already on it."""
    front = sorted(nondominated(records), key=lambda r: r.objectives[1])
    choices = net.output_choices
    found = [_solution(r, choices) for r in front]
    stored = {r.canonical: r for r in records}
    for g in net.reference_genotypes:
        if not any(s.genotype == g for s in found):
            found.append(_solution(stored[g], choices) if g in stored else _reference(g, choices))
    return found


def _reference(genotype: tuple[int, ...], choices: Sequence[str]) -> Solution:
    name = reference_name(genotype, choices)
    return Solution(name, genotype, name=name)


def find_solution(net: Supernet, records: list[EvaluationRecord], key: str) -> Solution:
    """The solution named `key`: a row id of the run store or a reference name (one of
    `reference_names(net.output_choices)`)."""
    choices = net.output_choices
    names = reference_names(choices)
    if key in names:
        g = net.reference_genotypes[names.index(key)]
        stored = [r for r in records if r.canonical == g]
        return _solution(stored[0], choices) if stored else _reference(g, choices)
    if key in REFERENCE_NAMES:  # ensemble-prob of a segmenter
        raise RunError(f"{key} does not exist for a {net.task} supernetwork")
    try:
        row = int(key)
    except ValueError:
        raise RunError(f"unknown solution {key!r}: a row id or one of {', '.join(names)}") from None
    for r in records:
        if r.id == row:
            return _solution(r, choices)
    raise RunError(f"the run has no successful evaluation with id {row}")


def finetuned_weights(run: str | Path, label: str) -> Path:
    """Where `evostitch finetune` keeps the weights of solution `label`."""
    return user_path(run) / "finetuned" / label / "weights.safetensors"


def load_finetuned(run: str | Path, label: str) -> dict[str, torch.Tensor]:
    """The fine-tuned weights of solution `label` (see `finetuned_weights`)."""
    path = finetuned_weights(run, label)
    if not path.is_file():
        raise RunError(f"no fine-tuned weights for {label}: run `evostitch finetune` first")
    return load_file(str(path))

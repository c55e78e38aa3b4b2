"""A run's solutions: its front and the reference solutions, named as the CLI names them.

A solution is named by its row id in the run store, or by the name of a reference
solution: parent-a, parent-b, ensemble (mean of the outputs) and, for classifiers,
ensemble-prob (mean of the probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import RunError
from ..evolution.archive import nondominated
from ..evolution.store import EvaluationRecord, RunConfig, RunStore
from ..files import user_path
from ..supernet import Supernet

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


def load_supernet(config: RunConfig, *, trust_code: bool = False) -> Supernet:
    """The supernetwork a run searched (its folder is recorded in the run's config)."""
    folder = config.problem.get("supernet")
    if not folder:
        raise RunError("the run records no supernetwork (not a stitching run?)")
    return Supernet.load(folder, trust_code=trust_code)


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
            raise RunError(f"{key} does not exist for a {net.task} supernetwork")
        g = net.reference_genotypes[index]
        stored = [r for r in records if r.canonical == g]
        return _solution(stored[0]) if stored else _reference(g)
    try:
        row = int(key)
    except ValueError:
        raise RunError(
            f"unknown solution {key!r}: a row id or one of {', '.join(REFERENCE_NAMES)}"
        ) from None
    for r in records:
        if r.id == row:
            return _solution(r)
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

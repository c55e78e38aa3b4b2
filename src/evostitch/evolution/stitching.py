"""The stitching search problem: a supernetwork's genotypes, scored on a data split.

Objectives (both minimised): the negated task metric (accuracy or mean IoU) on the
validation split, and MACs per input. The reference solutions are the parents and
their ensembles. Evaluators are built from plain values (`evaluator_factory`), so a
Ray worker can build its own once and evaluate many genotypes; the evaluator's
`evaluate_many` scores the genotypes a worker holds at once, sharing their computation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evostitch.data import dataset_info, load_dataset
from evostitch.data import subset as data_subset
from evostitch.errors import DataError, RunError, SearchError, SupernetError
from evostitch.evaluation import DEFAULT_SHARED_BYTES, Evaluator
from evostitch.evaluation.racing import DEFAULT_CONFIDENCE, RacingEvaluator
from evostitch.evolution.backend import FolderFactory
from evostitch.evolution.base import Genotype, Objectives, Problem
from evostitch.files import absolute, user_path
from evostitch.supernet import Supernet

FIDELITIES = ("full", "race")  # every offspring on the whole split, or raced (racing.py)
# race: at search's defaults (NSGA-II, 1,000 evaluations) it reaches full's final front
# for under a quarter of the images (docs/METHOD.md section 7)
DEFAULT_FIDELITY = "race"
IDEAL = (-1.0, 0.0)  # the best objectives an offspring could have: metric 1, 0 MACs


def supernet_data(supernet: str | Path) -> str:
    """The dataset spec a saved supernetwork's stitches were trained on."""
    import json

    meta_path = user_path(supernet) / "supernet.json"
    try:
        data = json.loads(meta_path.read_text()).get("data")
    except (OSError, ValueError, AttributeError) as exc:
        raise SupernetError(f"{supernet} is not a saved supernetwork") from exc
    if not data:
        raise DataError(f"{supernet} records no dataset: pass data (--data)")
    return data


def make_evaluator(
    net: Supernet,
    data: str,
    split: str = "val",
    *,
    batch_size: int = 256,
    device: Any = None,
    budget_bytes: int | None = DEFAULT_SHARED_BYTES,
    amp: str | None = None,
    subset: int | None = None,
) -> Evaluator:
    """An `Evaluator` of `net` on a dataset spec's split (the task checked against `net`),
    or on a seeded `subset` of that many of its samples (`evostitch.data.subset`)."""
    info = dataset_info(data)
    if info.task != net.task:
        raise DataError(f"{data} is a {info.task} dataset, the supernetwork does {net.task}")
    return Evaluator(
        net,
        data_subset(load_dataset(data, split), subset),
        info.num_classes,
        batch_size=batch_size,
        device=device,
        budget_bytes=budget_bytes,
        amp=amp,
    )


def load_objectives(
    supernet: str,
    data: str,
    split: str = "val",
    *,
    trust_code: bool = False,
    fidelity: str = "full",
    confidence: float = DEFAULT_CONFIDENCE,
    **options: Any,
) -> Callable[[Genotype], Objectives]:
    """Load a saved supernetwork and a split; return its objective function (an `Evaluator`:
    call it on one genotype, or `evaluate_many` on several; with `fidelity="race"` a
    `RacingEvaluator` around it). `options`: `make_evaluator`'s."""
    net = Supernet.load(supernet, trust_code=trust_code)
    return _fidelity(make_evaluator(net, data, split, **options), fidelity, confidence)


def _fidelity(evaluator: Evaluator, fidelity: str, confidence: float) -> Any:
    """The evaluator itself (`full`) or racing with it (`race`)."""
    _fidelity_check(fidelity, confidence)
    return evaluator if fidelity == "full" else RacingEvaluator(evaluator, confidence)


def evaluator_factory(
    supernet: str | Path, data: str, split: str = "val", *, trust_code: bool = False, **options
) -> FolderFactory:
    """A picklable zero-argument factory of the objective function (for backends), which
    loads the supernetwork from its folder; `options`: `load_objectives`'s (fidelity,
    confidence) and `make_evaluator`'s (batch_size, device, budget_bytes, amp)."""
    load = functools.partial(
        load_objectives, data=data, split=split, trust_code=trust_code, **options
    )
    return FolderFactory(str(absolute(supernet)), load)


def stitching_problem(net: Supernet, evaluate: Callable[[Genotype], Objectives]) -> Problem:
    metric = "accuracy" if net.task == "classification" else "miou"
    return Problem(
        cardinalities=list(net.genotype_spec),
        evaluate=evaluate,
        n_objectives=2,
        objective_names=(f"-{metric}", "macs"),
        canonical=net.canonical,
        references=net.reference_genotypes,
        metric_index=0,
        switches=range(1, len(net.genotype_spec)),  # every variable but the output's
        ideal=IDEAL,
    )


@dataclass(frozen=True)
class ProblemSpec:
    """What rebuilds a run's problem, recorded in its config.json ("problem"): the saved
    supernetwork and the data split it is scored on, the precision and validation subset
    (they change the metrics; the device does not, and may differ on resume), racing and
    its confidence (they change what is evaluated), and the output switch's names (so a
    run names its solutions if the supernetwork folder moves)."""

    supernet: str
    data: str
    split: str = "val"
    amp: str | None = None
    subset: int | None = None
    fidelity: str = "full"
    confidence: float = DEFAULT_CONFIDENCE
    output_choices: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """config.json's form (the subset and racing only when set, as older runs)."""
        spec: dict[str, Any] = {"kind": "stitching", "supernet": self.supernet}
        spec.update(data=self.data, split=self.split, amp=self.amp)
        if self.subset is not None:
            spec["subset"] = self.subset
        if self.fidelity != "full":
            spec.update(fidelity=self.fidelity, confidence=self.confidence)
        if self.output_choices:
            spec["output_choices"] = list(self.output_choices)
        return spec

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> ProblemSpec:
        """The spec config.json holds (checked by `schema` when the run was opened)."""
        if not isinstance(spec, dict) or spec.get("kind") != "stitching":
            kind = spec.get("kind") if isinstance(spec, dict) else spec
            raise RunError(f"cannot rebuild a problem of kind {kind!r}")
        return cls(
            supernet=spec["supernet"],
            data=spec["data"],
            split=spec.get("split", "val"),
            amp=spec.get("amp"),
            subset=spec.get("subset"),
            fidelity=spec.get("fidelity", "full"),
            confidence=spec.get("confidence", DEFAULT_CONFIDENCE),
            output_choices=tuple(spec.get("output_choices", ())),
        )


def problem_spec(
    supernet: str | Path,
    data: str,
    split: str = "val",
    amp: str | None = None,
    subset: int | None = None,
    fidelity: str = "full",
    confidence: float = DEFAULT_CONFIDENCE,
) -> ProblemSpec:
    """A new run's `ProblemSpec` (the supernetwork's path made absolute, racing checked)."""
    if fidelity != "full":
        _fidelity_check(fidelity, confidence)
    else:
        confidence = DEFAULT_CONFIDENCE  # not raced: not recorded
    return ProblemSpec(str(absolute(supernet)), data, split, amp, subset, fidelity, confidence)


def _fidelity_check(fidelity: str, confidence: float) -> None:
    if fidelity not in FIDELITIES:
        raise SearchError(f"unknown fidelity {fidelity!r}: {' or '.join(FIDELITIES)}")
    if not 0.5 <= confidence < 1:
        raise SearchError(f"need 0.5 <= confidence < 1, got {confidence}")


def problem_from_spec(
    spec: ProblemSpec | dict[str, Any], *, trust_code: bool = False, device: Any = None
) -> tuple[Problem, Supernet]:
    """Rebuild the problem (evaluated in this process) from a run's spec (or config.json's
    dict of it); the supernetwork's code-named parents only with `trust_code` (the run
    does not record it: trust comes from who opens a folder, never from the folder)."""
    if not isinstance(spec, ProblemSpec):
        spec = ProblemSpec.from_dict(spec)
    net = Supernet.load(spec.supernet, trust_code=trust_code)
    evaluator = make_evaluator(
        net, spec.data, spec.split, device=device, amp=spec.amp, subset=spec.subset
    )
    return stitching_problem(net, _fidelity(evaluator, spec.fidelity, spec.confidence)), net

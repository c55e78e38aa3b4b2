"""`Run`: a search run folder, and everything that can be done with its solutions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..evolution.loop import SearchResult
from ..evolution.store import EvaluationRecord, RunConfig
from ..supernet import Supernet
from .export import export_solution
from .finetune import finetune_solution
from .reevaluate import load_reevaluation, reevaluate
from .report import write_front_csv, write_report
from .solutions import find_solution, load_supernet, output_choices_of, read_run, run_solutions


@dataclass
class Run:
    """A search run folder: what was asked, every evaluation, the front, and what can be
    done with its solutions. `result` holds the counters of the call that ran it (None
    for a run opened with `load_run`). `trust_code`: rebuild a supernetwork parent that
    names code (`package.module:factory`); off for folders you did not make."""

    path: Path
    config: RunConfig
    result: SearchResult | None = field(default=None, repr=False)
    trust_code: bool = False

    @property
    def records(self) -> list[EvaluationRecord]:
        """Every successful evaluation, in the order they were stored."""
        return read_run(self.path)[1]

    @property
    def front(self) -> list:
        """The front (by MACs), then the reference solutions not on it (`Solution`s)."""
        return run_solutions(self.supernet, self.records)

    def solution(self, key: str | int):
        """A solution by row id or reference name (parent-a, parent-b, ... one per parent,
        ensemble, ensemble-prob)."""
        return find_solution(self.supernet, self.records, str(key))

    @cached_property
    def supernet(self) -> Supernet:
        """The supernetwork the run searched (loaded from the folder it records)."""
        return load_supernet(self.config, trust_code=self.trust_code)

    def write_front_csv(self) -> Path:
        """RUN/front.csv: the front and the reference solutions."""
        path = self.path / "front.csv"
        return write_front_csv(self.records, path, output_choices=output_choices_of(self.config))

    def report(self, others: Sequence[str | Path] = ()) -> list[Path]:
        """front.csv, front.png, hypervolume.png and report.html (`evostitch report`)."""
        return write_report(self.path, others=list(others), trust_code=self.trust_code)

    def reevaluate(
        self,
        split: str = "test",
        *,
        batch_size: int = 256,
        device: Any = None,
        amp: str | None = None,
        calibrate: bool = False,
    ) -> dict[str, Any]:
        """Score the front and the references on a held-out split (`evostitch reevaluate`;
        `calibrate`: also temperature-scaled); returns what RUN/reevaluation_<split>.json holds."""
        options = {"batch_size": batch_size, "device": device, "amp": amp, "calibrate": calibrate}
        reevaluate(self.path, split, trust_code=self.trust_code, **options)
        return load_reevaluation(self.path, split)

    def finetune(self, solution: str | int, **options: Any) -> dict[str, Any]:
        """Fine-tune one solution on the train split (`evostitch finetune`)."""
        return finetune_solution(self.path, str(solution), trust_code=self.trust_code, **options)

    def export(
        self, solution: str | int, out: str | Path, *, finetuned: bool = False, onnx: bool = False
    ) -> list[Path]:
        """One solution as PyTorch code + safetensors (`evostitch export`)."""
        return export_solution(
            self.path,
            str(solution),
            out,
            finetuned=finetuned,
            onnx=onnx,
            trust_code=self.trust_code,
        )

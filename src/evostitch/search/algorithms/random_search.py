"""Random search: batches from the shared initialiser; the archive is its only memory."""

from __future__ import annotations

from typing import Any

from evostitch.search.algorithms.common import SteadyState, initial_genotypes
from evostitch.search.base import Genotype, Objectives, Problem


class RandomSearch(SteadyState):
    """Asks batches of `pop_size` genotypes from `initial_genotypes` (the references in
    the first batch only, stratification per batch) and never waits."""

    name = "rs"

    def __init__(self, problem: Problem, seed: int = 0, **params: Any) -> None:
        super().__init__(problem, seed, **params)
        self._batch: list[Genotype] = []
        self._batches = 0

    def _propose(self) -> tuple[Genotype, dict[str, Any]]:
        if not self._batch:
            first = self._batches == 0
            self._batch = initial_genotypes(
                self.problem, self.pop_size, self.p_stitch, self.rng, include_references=first
            )
            self._batches += 1
        return self._batch.pop(0), {}

    def _receive(self, genotype: Genotype, f: Objectives, context: dict[str, Any]) -> None:
        pass

    def _state(self) -> dict[str, Any]:
        return {"batch": [list(g) for g in self._batch], "batches": self._batches}

    def _load(self, state: dict[str, Any]) -> None:
        self._batch = [tuple(map(int, g)) for g in state["batch"]]
        self._batches = int(state["batches"])

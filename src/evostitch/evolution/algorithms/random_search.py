"""Random search: batches from the shared initialiser; the archive is its only memory."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from evostitch.evolution.algorithms.genotypes import initial_genotypes
from evostitch.evolution.algorithms.steady_state import SteadyState
from evostitch.evolution.base import Genotype, Objectives, Problem


class RandomSearch(SteadyState):
    """Asks batches of `pop_size` genotypes from `initial_genotypes` (the references in
    the first batch only, stratification per batch) and never waits. A drawn genotype
    whose network was evaluated or is in flight is skipped (counted in `memo_hits`), so
    the budget goes to new networks (sampling without replacement)."""

    name = "rs"

    def __init__(self, problem: Problem, seed: int = 0, **params: Any) -> None:
        super().__init__(problem, seed, **params)
        self._batch: list[Genotype] = []
        self._batches = 0
        self._flying: set[Hashable] = set()

    def _draw(self) -> Genotype:
        if not self._batch:
            first = self._batches == 0
            self._batch = initial_genotypes(
                self.problem, self.pop_size, self.p_stitch, self.rng, include_references=first
            )
            self._batches += 1
        return self._batch.pop(0)

    def _propose(self) -> tuple[Genotype, dict[str, Any]]:
        while True:
            genotype = self._draw()
            key = self.memo_key(genotype)
            if self._silent >= self.max_silent or not (key in self.memo or key in self._flying):
                self._flying.add(key)
                return genotype, {}
            self._silent += 1
            self.memo_hits += 1

    def _receive(self, genotype: Genotype, f: Objectives, context: dict[str, Any]) -> None:
        self._flying.discard(self.memo_key(genotype))

    def _state(self) -> dict[str, Any]:
        return {"batch": [list(g) for g in self._batch], "batches": self._batches}

    def _load(self, state: dict[str, Any]) -> None:
        self._batch = [tuple(map(int, g)) for g in state["batch"]]
        self._batches = int(state["batches"])
        self._flying = {self.memo_key(g) for g, _ in self._pending.values()}

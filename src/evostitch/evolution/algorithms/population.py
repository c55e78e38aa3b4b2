"""`PopulationAlgorithm`: a `SteadyState` with a fixed-size population, a weight vector
per slot, whose initial members are asked first (the base of GA and the GOMEAs)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from evostitch.evolution.algorithms.genotypes import initial_genotypes
from evostitch.evolution.algorithms.scalarisation import normalisation_bounds, weight_vectors
from evostitch.evolution.algorithms.steady_state import SteadyState
from evostitch.evolution.base import Genotype, Objectives, Problem

REDRAWS = 100
"""Draws per member of a restarted population to find a network not known yet."""


def _row(f: np.ndarray) -> list[float] | None:
    return None if np.isnan(f).any() else [float(v) for v in f]


class PopulationAlgorithm(SteadyState):
    """A population of `pop_size` slots, each with a weight vector; the initial
    genotypes (references included) are asked first, slot by slot."""

    def __init__(self, problem: Problem, seed: int = 0, **params: Any) -> None:
        super().__init__(problem, seed, **params)
        self.weights = weight_vectors(self.pop_size, self.n_objectives, self.rng)
        self._reset_population()

    def _reset_population(self, restart: bool = False) -> None:
        """A new population from `initial_genotypes`. On a `restart`, a random member whose
        network is known (or another member's) is drawn again, up to `REDRAWS` times, so
        that a restart brings new networks even where few-ones genotypes are mostly known."""
        self.pop_g = initial_genotypes(self.problem, self.pop_size, self.p_stitch, self.rng)
        if restart:
            seen = set(self.memo)
            for slot in range(len(set(map(tuple, self.problem.references))), len(self.pop_g)):
                for _ in range(REDRAWS):
                    if self.memo_key(self.pop_g[slot]) not in seen:
                        break
                    self.pop_g[slot] = self._draw()
                seen.add(self.memo_key(self.pop_g[slot]))
        self.pop_size = len(self.pop_g)  # more references than pop_size: all are kept
        if len(self.weights) != self.pop_size:
            self.weights = weight_vectors(self.pop_size, self.n_objectives, self.rng)
        self.pop_f = np.full((self.pop_size, self.n_objectives), np.nan)
        self._bounds: tuple[list[float], list[float]] | None = None
        self._init_next = 0
        self._init_left = self.pop_size

    def _draw(self) -> Genotype:
        """One random genotype from the initialiser (each switch 1 with probability p)."""
        return initial_genotypes(self.problem, 1, self.p_stitch, self.rng, False)[0]

    def evaluated(self, slot: int) -> bool:
        return not np.isnan(self.pop_f[slot, 0])

    def set_member(self, slot: int, genotype: Genotype, f: Sequence[float]) -> None:
        self.pop_g[slot] = genotype
        if not np.array_equal(self.pop_f[slot], f):  # objectives, hence bounds, change
            self.pop_f[slot] = f
            self._bounds = None

    def _normalisation(self) -> tuple[list[float], list[float]]:
        if self._bounds is None:  # cached until the population's objectives change
            f = self.pop_f[~np.isnan(self.pop_f[:, 0])]
            self._bounds = normalisation_bounds(f, self.n_objectives)
        return self._bounds

    def _propose_init(self) -> tuple[Genotype, dict[str, Any]] | None:
        """The next initial member to evaluate; members the memo knows are filled in."""
        while self._init_next < self.pop_size:
            slot = self._init_next
            self._init_next += 1
            f = self.recall(self.pop_g[slot])
            if f is None:
                return self.pop_g[slot], {"init": slot}
            self._receive_init(f, {"init": slot})
        return None

    def _receive_init(self, f: Objectives, context: dict[str, Any]) -> bool:
        """Store an initial member's objectives; False if `context` is not an initial one."""
        if "init" not in context:
            return False
        self.set_member(context["init"], self.pop_g[context["init"]], f)
        self._init_left -= 1
        return True

    def _state(self) -> dict[str, Any]:
        return {
            "pop_g": [list(g) for g in self.pop_g],
            "pop_f": [_row(f) for f in self.pop_f],
            "weights": self.weights.tolist(),
            "init_next": self._init_next,
            "init_left": self._init_left,
        }

    def _load(self, state: dict[str, Any]) -> None:
        self.pop_g = [tuple(map(int, g)) for g in state["pop_g"]]
        self.pop_size = len(self.pop_g)
        nan = [math.nan] * self.n_objectives
        self.pop_f = np.array([f if f is not None else nan for f in state["pop_f"]], dtype=float)
        self._bounds = None
        self.weights = np.array(state["weights"], dtype=float)
        self._init_next = int(state["init_next"])
        self._init_left = int(state["init_left"])

"""Steady-state GA with familial replacement."""

from __future__ import annotations

from typing import Any

import numpy as np

from evostitch.errors import SearchError
from evostitch.evolution.algorithms.population import PopulationAlgorithm
from evostitch.evolution.base import Genotype, Objectives, Problem


class GA(PopulationAlgorithm):
    """Two random parents make two offspring by crossover (`"2point"` or `"uniform"`)
    and per-variable mutation (rate `mutation_rate`, default 1/l; a mutated variable
    takes another value uniformly). When both offspring are back, the family (the two
    parent slots' current occupants and the offspring) is ranked per slot with the
    slot's Tchebycheff weight vector: each slot, in random order, takes the best
    remaining member (offspring win ties). Parents are drawn from evaluated slots not
    already in a family in flight when there are two such slots. An offspring whose
    network was evaluated before (a parent's, often) takes the memo's objectives
    without an evaluation; a family needing none is settled at once.
    """

    name = "ga"

    def __init__(
        self,
        problem: Problem,
        seed: int = 0,
        *,
        crossover: str = "2point",
        mutation_rate: float | None = None,
        **params: Any,
    ) -> None:
        if crossover not in ("2point", "uniform"):
            raise SearchError(f"unknown crossover {crossover!r}: use '2point' or 'uniform'")
        super().__init__(problem, seed, **params)
        self.params.update(crossover=crossover, mutation_rate=mutation_rate)
        self.crossover = crossover
        self.cards = np.asarray(problem.cardinalities, dtype=np.int64)
        self.mutation_rate = mutation_rate if mutation_rate is not None else 1 / len(self.cards)
        self._families: dict[int, dict[str, Any]] = {}
        self._queue: list[list[int]] = []  # [family, child] waiting to be asked
        self._next_family = 0

    # ---------------------------------------------------------------- variation
    def _cross(self, a: Genotype, b: Genotype) -> tuple[np.ndarray, np.ndarray]:
        x, y = np.array(a), np.array(b)
        if self.crossover == "uniform":
            swap = self.rng.random(len(x)) < 0.5
        else:
            i, j = sorted(self.rng.integers(0, len(x) + 1, size=2))
            swap = np.zeros(len(x), dtype=bool)
            swap[i:j] = True
        x[swap], y[swap] = y[swap], x[swap].copy()
        return x, y

    def _mutate(self, x: np.ndarray) -> Genotype:
        flip = self.rng.random(len(x)) < self.mutation_rate
        shift = self.rng.integers(1, np.maximum(self.cards, 2))
        return tuple(np.where(flip, (x + shift) % self.cards, x).tolist())

    # ------------------------------------------------------------------ families
    def _new_family(self) -> bool:
        ready = np.flatnonzero(~np.isnan(self.pop_f[:, 0])).tolist()
        busy = {s for fam in self._families.values() for s in fam["parents"]}
        free = [s for s in ready if s not in busy]
        pool = free if len(free) >= 2 else ready
        if len(pool) < 2:
            return False
        a, b = (int(s) for s in self.rng.choice(pool, size=2, replace=False))
        children = []
        for child in (self._mutate(x) for x in self._cross(self.pop_g[a], self.pop_g[b])):
            f = self.recall(child)  # a known network: no evaluation
            children.append([list(child), None if f is None else list(f)])
        fid = self._next_family
        self._next_family += 1
        self._families[fid] = {"parents": [a, b], "children": children}
        waiting = [[fid, i] for i, (_, f) in enumerate(children) if f is None]
        if waiting:
            self._queue.extend(waiting)
        else:
            self._replace(fid)
        return True

    def _replace(self, fid: int) -> None:
        fam = self._families.pop(fid)
        members = [(tuple(g), tuple(f)) for g, f in fam["children"]]
        members += [(self.pop_g[s], tuple(self.pop_f[s])) for s in fam["parents"]]
        slots = list(fam["parents"])
        self.rng.shuffle(slots)
        for slot in slots:
            keys = [self.key(f, self.weights[slot]) for _, f in members]
            g, f = members.pop(int(min(range(len(keys)), key=keys.__getitem__)))
            self.set_member(slot, g, f)

    # ------------------------------------------------------------------ ask/tell
    def _propose(self) -> tuple[Genotype, dict[str, Any]] | None:
        init = self._propose_init()
        if init is not None:
            return init
        while True:  # ends: every family settled at once adds to the memo's silent answers
            if self._queue:
                fid, child = self._queue.pop(0)
                genotype = tuple(self._families[fid]["children"][child][0])
                return genotype, {"family": fid, "child": child}
            if not self._new_family():
                return None

    def _receive(self, genotype: Genotype, f: Objectives, context: dict[str, Any]) -> None:
        if self._receive_init(f, context):
            return
        fid = context["family"]
        fam = self._families[fid]
        fam["children"][context["child"]][1] = list(f)
        if all(fv is not None for _, fv in fam["children"]):
            self._replace(fid)

    # -------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state.update(
            families=[[fid, fam] for fid, fam in self._families.items()],
            queue=[list(q) for q in self._queue],
            next_family=self._next_family,
        )
        return state

    def _load(self, state: dict[str, Any]) -> None:
        super()._load(state)
        self._families = {int(fid): fam for fid, fam in state["families"]}
        self._queue = [list(q) for q in state["queue"]]
        self._next_family = int(state["next_family"])

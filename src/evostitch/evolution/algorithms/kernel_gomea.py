"""Kernel GOMEA (LKGOMEA): GOMEA with a linkage tree per solution, learned from its
nearest neighbours, who are its donors."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from evostitch.evolution.algorithms.gomea import GOMEA
from evostitch.evolution.algorithms.linkage import (
    nmi_key,
    normalised_mutual_information,
    tree_from_nmi,
)
from evostitch.evolution.algorithms.mixing import membership_matrix
from evostitch.evolution.base import Genotype, Problem

MAX_TREES = 256  # kernel GOMEA's trees kept (~80 kB each with 113 variables)


class LKGOMEA(GOMEA):
    """Kernel GOMEA: at the start of its job, a slot finds its `neighbours` nearest
    members of the frozen parent population (its own slot excluded) by Hamming
    distance, ties broken at random (so neighbourhoods are asymmetric), learns a
    linkage tree from itself and them, and takes its donors from them. Default
    `neighbours`: half the population (at least 2).

    Ties in the trees are broken by one random variable order per population (drawn
    again at a restart), so a tree depends only on the genotypes it is learned from,
    indeed only on what of their NMI matrix matters to it (`nmi_key`): jobs whose slot
    and neighbours hold the same genotypes, or whose neighbourhoods vary in a single
    variable (both common as the population converges), share one tree, learned once."""

    name = "lk-gomea"

    def __init__(
        self, problem: Problem, seed: int = 0, *, neighbours: int | None = None, **params: Any
    ) -> None:
        super().__init__(problem, seed, **params)
        self.params["neighbours"] = neighbours
        self.neighbours = neighbours
        self._tie_order: list[int] | None = None  # of the current population
        self._trees: dict[Any, tuple[list[list[int]], np.ndarray]] = {}  # derived
        self._parent_ids: tuple[list[Genotype], np.ndarray] | None = None  # derived
        self._ids: dict[Genotype, int] = {}  # derived: a number per genotype, for tree keys

    def _new_generation(self) -> None:
        self.parents = list(self.pop_g)
        if self._tie_order is None:
            self._tie_order = self.rng.permutation(len(self.cards)).tolist()

    def _restart(self) -> None:
        super()._restart()
        self._tie_order, self._trees, self._ids = None, {}, {}

    def _start(self, slot: int) -> dict[str, Any]:
        if not self.parents or self._finished >= self.pop_size:
            self._new_generation()
            self._finished = 0
        k = min(self.neighbours or max(2, self.pop_size // 2), self.pop_size - 1)
        x = self._parents_matrix()
        g = self.pop_g[slot]
        row = np.asarray(g, dtype=x.dtype)
        dist = (x != row).sum(axis=1)
        dist[slot] = x.shape[1] + 1
        order = self.rng.permutation(self.pop_size)
        near: list[int] = order[np.argsort(dist[order], kind="stable")][:k].tolist()
        fos, membership = self._tree(g, row, near)
        shuffle = self.rng.permutation(len(fos))
        job_fos = list(operator.itemgetter(*shuffle.tolist())(fos)) if len(fos) > 1 else fos
        self._masks[slot] = (job_fos, membership[shuffle])
        return self._job(job_fos, neighbours=near)

    def _tree(
        self, g: Genotype, row: np.ndarray, near: list[int]
    ) -> tuple[list[list[int]], np.ndarray]:
        """The linkage tree of `g` (`row` as an array) and the parents `near` (and its
        subsets' membership). Trees are kept for the population's life (one tie order),
        by the genotypes they were learned from and by what of their NMI the tree
        depends on (`nmi_key`): near convergence many neighbourhoods give one tree."""
        if self._parent_ids is None or self._parent_ids[0] is not self.parents:
            if len(self._ids) > 8 * MAX_TREES:
                self._ids, self._trees = {}, {}
            ids = [self._ids.setdefault(p, len(self._ids)) for p in self.parents]
            self._parent_ids = (self.parents, np.array(ids))
        key = (self._ids.setdefault(g, len(self._ids)), *sorted(self._parent_ids[1][near].tolist()))
        tree = self._trees.get(key)
        if tree is None:
            order = np.asarray(self._tie_order)
            rows = np.vstack([row, self._parents_matrix()[near]])[:, order].astype(np.int64)
            nmi = normalised_mutual_information(rows, [self.cards[i] for i in order])
            learned = nmi_key(nmi)
            tree = self._trees.get(learned)
            if tree is None:
                fos = tree_from_nmi(nmi, order)
                tree = self._trees[learned] = (fos, membership_matrix(fos, len(self.cards)))
            if len(self._trees) > MAX_TREES:
                self._trees = {learned: tree}
            self._trees[key] = tree
        return tree

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "tie_order": self._tie_order}

    def _load(self, state: dict[str, Any]) -> None:
        super()._load(state)
        self._tie_order = state.get("tie_order")
        if self._tie_order is None and self.parents:  # saved before tie orders were kept
            self._tie_order = self.rng.permutation(len(self.cards)).tolist()
        self._trees, self._ids = {}, {}

    def _donor_bound(self, job: dict[str, Any]) -> int:
        return len(job["neighbours"])

    def _donor_parents(self, slot: int, job: dict[str, Any], draws: np.ndarray) -> np.ndarray:
        return np.asarray(job["neighbours"], dtype=np.int64)[draws]

"""Evaluations keyed by canonical genotype, so an offspring is evaluated at most once.

Genotypes that agree on every active variable are the same network (METHOD.md step 8);
`Problem.canonicalise` maps them to one key. The cache sits on top of a `RunStore`: every
evaluation added here is stored first, and a cache opened on an existing run is pre-filled
from its database (each row checked to fit the problem), so a resumed run never evaluates
a stored genotype again, except a failed one, which `replace` stores anew in its row.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, replace

from evostitch.errors import RunError
from evostitch.evolution.base import Genotype, Objectives, Problem
from evostitch.evolution.store import EvaluationRecord, RunStore


def worst(n_objectives: int) -> Objectives:
    """What a failed evaluation is told as: +inf on every (minimised) objective."""
    return (math.inf,) * n_objectives


@dataclass
class CacheCounters:
    """`requested`: genotypes looked up; `cache_hits`: answered without evaluating;
    `performed`: evaluations stored (ok or failed); `failed`: stored failures."""

    requested: int = 0
    performed: int = 0
    cache_hits: int = 0
    failed: int = 0


class EvaluationCache:
    """Objectives by canonical genotype, written through to the run store."""

    def __init__(self, problem: Problem, store: RunStore | None = None) -> None:
        self.problem = problem
        self.store = store
        self.counters = CacheCounters()
        self._entries: dict[Genotype, EvaluationRecord] = {}
        if store is not None:
            for record in store.records():
                self._check(record)
                self._entries[record.canonical] = record
            self.counters.performed = len(self._entries)
            self.counters.failed = sum(not r.ok for r in self._entries.values())

    def _check(self, record: EvaluationRecord) -> None:
        """A stored row must fit the problem (variables, their values, objectives): a
        row of another run, or crafted, fails here in one line naming it."""
        cards = self.problem.cardinalities
        fits = len(record.genotype) == len(cards) and all(map(operator.lt, record.genotype, cards))
        if fits and record.canonical is not record.genotype:
            fits = len(record.canonical) == len(cards) and all(
                map(operator.lt, record.canonical, cards)
            )
        n = self.problem.n_objectives
        if not fits or (record.ok and len(record.objectives) != n):
            raise RunError(
                f"{self.store.path}: row id {record.id} does not fit the problem searched"
                f" ({len(cards)} variables, {n} objectives): not this run's evaluation"
            )

    def canonical(self, genotype: Sequence[int]) -> Genotype:
        return self.problem.canonicalise(genotype)

    def lookup(self, genotype: Sequence[int]) -> tuple[Genotype, EvaluationRecord | None]:
        """The canonical genotype and its stored evaluation, if any; counts the request."""
        self.counters.requested += 1
        canonical = self.canonical(genotype)
        record = self._entries.get(canonical)
        if record is not None:
            self.counters.cache_hits += 1
        return canonical, record

    def lookup_stored(self, genotype: Sequence[int]) -> EvaluationRecord | None:
        """The stored evaluation of this genotype, without counting a request."""
        return self._entries.get(self.canonical(genotype))

    def count_hit(self) -> None:
        """Count a request answered another way (its canonical genotype was in flight)."""
        self.counters.cache_hits += 1

    def add(self, record: EvaluationRecord) -> EvaluationRecord:
        """Store a performed evaluation (canonical must be set) and remember it."""
        existing = self._entries.get(record.canonical)
        if existing is not None:  # never evaluate or store a canonical genotype twice
            return existing
        if self.store is not None:  # committed on the store's writer thread
            self.store.add_later(record)
        self._entries[record.canonical] = record
        self.counters.performed += 1
        self.counters.failed += not record.ok
        return record

    def failed(self) -> list[EvaluationRecord]:
        """The stored failed evaluations, in the order they were stored."""
        return [r for r in self._entries.values() if not r.ok]

    def replace(self, record: EvaluationRecord) -> EvaluationRecord:
        """Store the new evaluation of a failed one (a retry): it takes the failed row's
        place (same id); the rows, and so the budget they count, stay as many."""
        old = self._entries.get(record.canonical)
        if old is None or old.ok:  # nothing to retry: an ordinary evaluation
            return self.add(record)
        record = replace(record, id=old.id)
        if self.store is not None:  # committed on the store's writer thread
            self.store.replace_later(record)
        self._entries[record.canonical] = record
        self.counters.failed -= record.ok
        return record

    def told(self, record: EvaluationRecord) -> Objectives:
        """The objectives an algorithm is told for a record (failed: all +inf; stopped by
        racing: its metric on the images it saw, at most its upper bound, which the
        front dominates: `evolution.race_front`)."""
        if not record.ok:
            return worst(self.problem.n_objectives)
        if record.stopped and self.problem.metric_index is not None:
            told, i = list(record.objectives), self.problem.metric_index
            told[i] = max(told[i], -float(record.bound))  # objective i is -metric
            return tuple(told)
        return record.objectives

    def records(self) -> list[EvaluationRecord]:
        return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, genotype: Sequence[int]) -> bool:
        return self.canonical(genotype) in self._entries

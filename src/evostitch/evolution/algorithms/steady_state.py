"""The base of every steady-state algorithm: `SteadyState`.

It keeps the ticket bookkeeping (out-of-order tells, re-asking after a restore), the
elitist archive, adaptive steering and the acceptance test (the steering floor, then
the Tchebycheff scalarisation of `scalarisation`), checkpoints, and the memo of
evaluated networks (canonical genotype -> objectives) that lets an algorithm go on
without asking again for a network it already knows.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from evostitch.errors import SearchError
from evostitch.evolution.algorithms.scalarisation import (
    WORST,
    better_by_key,
    normalisation_bounds,
    tchebycheff,
)
from evostitch.evolution.archive import Archive, reference_point_from
from evostitch.evolution.base import Algorithm, Candidate, Genotype, Objectives, Problem

SILENT_PER_VARIABLE = 8
"""Answers from the memo (per population slot and variable; at least 1000) after which
candidates are asked whatever they are, until a new network is proposed again: `ask()`
always ends, and an algorithm that only repeats itself (a tiny, exhausted search space)
asks at once, so the loop, whose cache answers, sees it and its guards stop the run.
GOMEA needs the room: two passes over the population without a new network (each job
up to two sweeps over its 2l - 2 subsets) come before its restart."""


class SteadyState(Algorithm):
    """Base of our algorithms: subclasses implement `_propose`, `_receive`, `_state`, `_load`.

    Parameters shared by all: `pop_size`, `budget` (evaluations; progress = tells /
    budget, used by steering), `steer_to` (final metric floor; None disables
    steering), `p_stitch` (initialiser, see `initial_genotypes`).

    Memo: every told evaluation is remembered by canonical genotype (`remember` also
    takes evaluations made elsewhere, e.g. a resumed run's stored rows: the memo is not
    checkpointed). Subclasses call `recall` before proposing a genotype: a known network
    is used at once and counted in `memo_hits`, never asked for. Failed evaluations
    (any non-finite objective) count as worse than every other solution.
    """

    name = "steady-state"

    def __init__(
        self,
        problem: Problem,
        seed: int = 0,
        *,
        pop_size: int = 64,
        budget: int | None = None,
        steer_to: float | None = 0.5,
        p_stitch: float | None = 0.02,
    ) -> None:
        super().__init__(problem, seed)
        if pop_size < 2:
            raise SearchError("pop_size must be at least 2")
        self.params: dict[str, Any] = {
            "pop_size": pop_size,
            "budget": budget,
            "steer_to": steer_to,
            "p_stitch": p_stitch,
        }
        self.pop_size = pop_size
        self.budget = budget
        self.steer_to = steer_to
        self.p_stitch = p_stitch
        self.n_objectives = problem.n_objectives
        self.rng = np.random.default_rng(seed)
        self.archive = Archive(metric_index=problem.metric_index)
        self.told = 0
        self._next_ticket = 0
        self._pending: dict[int, tuple[Genotype, dict[str, Any]]] = {}
        self._reask: list[int] = []
        self.memo: dict[Hashable, Objectives] = {}
        self._floor_cap: float | None = None
        self.memo_hits = 0
        self._silent = 0  # answers from the memo since a new network was proposed
        self.max_silent = max(1000, SILENT_PER_VARIABLE * pop_size * len(problem.cardinalities))
        self._compact = max(problem.cardinalities) <= 256  # memo keys as bytes: less memory

    # ----------------------------------------------------------------- steering
    @property
    def progress(self) -> float:
        return min(1.0, self.told / self.budget) if self.budget else 0.0

    @property
    def floor(self) -> float | None:
        """Current floor on the task metric, or None without steering: `steer_to` times
        the progress, never above `floor_cap()`."""
        if self.problem.metric_index is None or not self.steer_to or not self.budget:
            return None
        floor = self.steer_to * self.progress
        cap = self.floor_cap()
        return floor if cap is None else min(floor, cap)

    def floor_cap(self) -> float | None:
        """The hypervolume reference point's metric (90% of the weakest reference
        solution's), once every reference was told; None before.

        Solutions under it never count toward the front's hypervolume, and a floor above
        it (weak parents, a high `steer_to`) would empty the archive and steer the search
        away from every parent. Derived from the memo, so a resumed run has it too.
        """
        if self._floor_cap is None and self.problem.references:
            keys = [self.memo_key(g) for g in self.problem.references]
            if all(k in self.memo for k in keys):
                i = self.problem.metric_index
                told = [[self.memo[k][i]] for k in keys if math.isfinite(self.memo[k][i])]
                if told:
                    self._floor_cap = -reference_point_from(told)[0]
        return self._floor_cap

    def violation(self, f: Sequence[float]) -> float:
        """How far the solution's metric is under the floor (0 when above)."""
        floor = self.floor
        if floor is None:
            return 0.0
        return max(0.0, floor + f[self.problem.metric_index])  # metric = -objective

    def canonical(self, genotype: Genotype) -> Genotype:
        """The problem's canonical form (the genotype itself without `canonical`)."""
        if self.problem.canonical is None:
            return tuple(genotype)
        return self.problem.canonicalise(genotype)

    # --------------------------------------------------------------------- memo
    def memo_key(self, genotype: Sequence[int], canonical: bool = False) -> Hashable:
        """The memo's key of a genotype (`canonical=True`: it is canonical already)."""
        c = tuple(genotype) if canonical else self.canonical(tuple(genotype))
        return bytes(c) if self._compact else c

    def remember(self, canonical: Genotype, objectives: Objectives) -> None:
        """Learn an evaluation made elsewhere (a resumed run's rows stored after its
        checkpoint, too): the memo answers it from now on and the archive is offered it."""
        f = tuple(map(float, objectives))
        self.memo[self.memo_key(canonical, canonical=True)] = f
        self.archive.add(canonical, f)

    def recall(self, genotype: Genotype, canonical: Genotype | None = None) -> Objectives | None:
        """The objectives of the same network if it was evaluated, counted as a memo hit;
        None if unknown, or once `max_silent` answers were given since a new network
        was proposed. `canonical`: the genotype's canonical form, if the caller has it."""
        if self._silent >= self.max_silent:
            return None
        key = self.memo_key(genotype) if canonical is None else self.memo_key(canonical, True)
        f = self.memo.get(key)
        if f is not None:
            self.memo_hits += 1
            self._silent += 1
        return f

    # --------------------------------------------------------------- acceptance
    def _normalisation(self) -> tuple[list[float], list[float]]:
        """(lower bound, range) per objective used to normalise; subclasses with a
        population override it with the population's range."""
        return normalisation_bounds(self.archive.objectives_array(), self.n_objectives)

    def key(self, f: Sequence[float], w: Sequence[float]) -> tuple[float, float]:
        """Sort key, lower is better: (floor violation, augmented Tchebycheff value);
        `WORST` for a failed evaluation (non-finite objectives)."""
        if not all(map(math.isfinite, f)):
            return WORST
        if self.n_objectives == 1:
            return (self.violation(f), float(f[0]))
        lo, span = self._normalisation()
        if isinstance(f, np.ndarray):  # the same doubles, cheaper arithmetic
            f = f.tolist()
        if isinstance(w, np.ndarray):
            w = w.tolist()
        return (self.violation(f), tchebycheff(f, w, lo, span))

    def not_worse(self, a: Sequence[float], b: Sequence[float], w: Sequence[float]) -> bool:
        return bool(self.key(a, w) <= self.key(b, w))

    def better(self, a: Sequence[float], b: Sequence[float], w: Sequence[float]) -> bool:
        return better_by_key(self.key(a, w), self.key(b, w), a, b)

    def elitist(self, w: np.ndarray) -> tuple[Genotype, Objectives] | None:
        """The archived solution that is best for weight vector `w`."""
        best = None
        for s in self.archive:
            k = self.key(s.objectives, w)
            if best is None or k < best[0]:
                best = (k, s)
        return None if best is None else (best[1].genotype, best[1].objectives)

    # ------------------------------------------------------------------ ask/tell
    def ask(self) -> Candidate | None:
        if self._reask:
            ticket = self._reask.pop(0)
            return Candidate(ticket, self._pending[ticket][0])
        proposal = self._propose()
        if proposal is None:
            return None
        genotype, context = proposal
        if self.memo_key(genotype) not in self.memo:
            self._silent = 0
        ticket = self._next_ticket
        self._next_ticket += 1
        self._pending[ticket] = (genotype, context)
        return Candidate(ticket, genotype)

    def tell(self, ticket: int, objectives: Objectives) -> None:
        if ticket not in self._pending:
            raise SearchError(f"ticket {ticket} is unknown or was told already")
        f = tuple(float(v) for v in objectives)
        if len(f) != self.n_objectives:
            raise SearchError(f"expected {self.n_objectives} objectives, got {len(f)}")
        genotype, context = self._pending.pop(ticket)
        if ticket in self._reask:
            self._reask.remove(ticket)
        self.told += 1
        self.memo[self.memo_key(genotype)] = f
        if self.floor is not None:
            self.archive.set_floor(self.floor)
        self.archive.add(genotype, f)
        self._receive(genotype, f, context)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @abstractmethod
    def _propose(self) -> tuple[Genotype, dict[str, Any]] | None:
        """Next genotype to evaluate with a JSON-able context given back to `_receive`."""

    @abstractmethod
    def _receive(self, genotype: Genotype, f: Objectives, context: dict[str, Any]) -> None: ...

    # -------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        return {}

    def _load(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.name,
            "seed": self.seed,
            "params": dict(self.params),
            "rng": self.rng.bit_generator.state,
            "told": self.told,
            "next_ticket": self._next_ticket,
            "pending": [[t, list(g), c] for t, (g, c) in self._pending.items()],
            "archive": self.archive.to_dict(),
            "memo_hits": self.memo_hits,
            "silent": self._silent,
            "own": self._state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["algorithm"] != self.name:
            raise SearchError(f"state of {state['algorithm']!r} given to {self.name!r}")
        self.rng.bit_generator.state = state["rng"]
        self.told = int(state["told"])
        self._next_ticket = int(state["next_ticket"])
        self._pending = {int(t): (tuple(map(int, g)), c) for t, g, c in state["pending"]}
        self._reask = sorted(self._pending)
        self.archive = Archive.from_dict(state["archive"])
        self.memo_hits = int(state.get("memo_hits", 0))
        self._silent = int(state.get("silent", 0))
        self._load(state["own"])

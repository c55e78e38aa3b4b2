"""NSGA-II from pymoo behind our ticket-based ask/tell.

pymoo's own ask/tell runs generation by generation: we hand out a generation's
individuals one by one and tell pymoo once the whole generation is back (so, unlike
our other algorithms, it waits at every generation boundary). Integer variables:
two-point crossover and a random-reset mutation (per-variable rate 1/l, a mutated
variable takes another value uniformly), duplicates eliminated by pymoo. The initial
population is ours (`initial_genotypes`). Steering becomes a pymoo inequality
constraint, floor - metric <= 0, refreshed for the whole population at every tell,
so below-floor solutions lose by constraint domination. An individual whose network
was evaluated before takes the memo's objectives without being asked for. A failed
evaluation (non-finite objectives) is given `FAILED` on every objective: finite, so
pymoo's sorting and crowding distances stay defined, and dominated by any real result.

Checkpoints: pymoo objects are not JSON-serialisable, so `state_dict()` keeps the
objectives of every finished generation (and the floor used), and `load_state_dict()`
rebuilds the pymoo algorithm from the seed and replays them; pymoo is seeded, so the
replay regenerates the same individuals (checked while replaying).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2 as PymooNSGA2
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.mutation import Mutation
from pymoo.core.population import Population
from pymoo.core.problem import Problem as PymooProblem
from pymoo.core.termination import NoTermination
from pymoo.operators.crossover.pntx import TwoPointCrossover

from evostitch.errors import SearchError
from evostitch.evolution.algorithms.genotypes import initial_genotypes, row_keys
from evostitch.evolution.algorithms.steady_state import SteadyState
from evostitch.evolution.base import Genotype, Objectives, Problem

FAILED = 1e300
"""What pymoo sees for each objective of a failed evaluation."""


class _RandomReset(Mutation):
    def _do(self, problem, X, random_state=None, **kwargs):  # noqa: N803 (pymoo's name)
        x = np.asarray(X).astype(np.int64)
        span = (np.asarray(problem.xu) - np.asarray(problem.xl) + 1).astype(np.int64)
        flip = random_state.random(x.shape) < min(0.5, 1.0 / problem.n_var)
        shift = random_state.integers(1, np.maximum(span, 2), size=x.shape)
        return np.where(flip, (x + shift) % span, x)


class _SameGenotype(DuplicateElimination):
    """pymoo's default duplicate test (distance 0 to an earlier row, or to any row of
    `other`) for integer genotypes, by hashing rows instead of all pairwise distances:
    pymoo runs it several times per generation, and it was a third of the generation
    boundary, where nothing is in flight."""

    def _do(self, pop, other, is_duplicate):
        seen = set() if other is None else set(_keys(other))
        for i, row in enumerate(_keys(pop)):
            if row in seen:
                is_duplicate[i] = True
            elif other is None:
                seen.add(row)
        return is_duplicate


def _keys(pop: Population) -> list[bytes]:
    return row_keys(np.asarray(pop.get("X"), dtype=np.int64))


class NSGA2(SteadyState):
    """pymoo NSGA-II (`pop_size` individuals and offspring per generation), seeded
    with `seed`."""

    name = "nsga2"

    def __init__(self, problem: Problem, seed: int = 0, **params: Any) -> None:
        super().__init__(problem, seed, **params)
        self._build()

    def _build(self) -> None:
        cards = np.asarray(self.problem.cardinalities, dtype=np.int64)
        self._steered = self.floor is not None
        pymoo_problem = PymooProblem(
            n_var=len(cards), n_obj=self.n_objectives, n_ieq_constr=int(self._steered),
            xl=np.zeros(len(cards), dtype=np.int64), xu=cards - 1, vtype=int,
        )  # fmt: skip
        init = initial_genotypes(
            self.problem, self.pop_size, self.p_stitch, np.random.default_rng(self.seed)
        )
        self._pymoo = PymooNSGA2(
            pop_size=self.pop_size,
            sampling=np.array(init, dtype=np.int64),
            crossover=TwoPointCrossover(),
            mutation=_RandomReset(),
            eliminate_duplicates=_SameGenotype(),
        )
        self._pymoo.setup(pymoo_problem, seed=self.seed, termination=NoTermination())
        self._history: list[list[list[float]]] = []
        self._floors: list[float | None] = []
        self._generation: Population | None = None
        self._xs: list[Genotype] = []
        self._fs: dict[int, list[float]] = {}
        self._handed = 0

    # ---------------------------------------------------------------- generations
    def _start_generation(self) -> None:
        pop = self._pymoo.ask()
        if pop is None or len(pop) == 0:
            # Mating found no new individual: inject fresh ones (deterministic per
            # generation, so a replay injects the same).
            rng = np.random.default_rng([self.seed, len(self._history)])
            x = initial_genotypes(self.problem, self.pop_size, self.p_stitch, rng, False)
            pop = Population.new(X=np.array(x, dtype=np.int64))
            self._pymoo.termination.force_termination = False
        self._generation = pop
        self._xs = [tuple(row) for row in np.asarray(pop.get("X"), dtype=np.int64).tolist()]
        self._fs = {}
        self._handed = 0

    def _set_constraints(self, pop: Population, floor: float | None) -> None:
        if not self._steered or pop is None or len(pop) == 0:
            return
        g = floor + pop.get("F")[:, [self.problem.metric_index]]
        pop.set("G", g)
        pop.set("CV", np.maximum(g, 0.0))

    def _finish_generation(self, fs: list[list[float]], floor: float | None) -> None:
        pop = self._generation
        f = np.array(fs, dtype=float)
        f[~np.isfinite(f).all(axis=1)] = FAILED
        pop.set("F", f)
        self._set_constraints(pop, floor)
        if self._pymoo.pop is not None:
            self._set_constraints(self._pymoo.pop, floor)
        self._pymoo.tell(infills=pop)
        self._history.append(fs)
        self._floors.append(floor)
        self._generation = None

    # ------------------------------------------------------------------ ask/tell
    def _propose(self) -> tuple[Genotype, dict[str, Any]] | None:
        while True:  # ends: individuals the memo knows count toward `max_silent`
            if self._generation is None:
                self._start_generation()
            if self._handed >= len(self._xs):
                return None
            index = self._handed
            self._handed += 1
            f = self.recall(self._xs[index])
            if f is None:
                return self._xs[index], {"index": index}
            self._result(index, f)

    def _receive(self, genotype: Genotype, f: Objectives, context: dict[str, Any]) -> None:
        self._result(context["index"], f)

    def _result(self, index: int, f: Objectives) -> None:
        self._fs[index] = list(f)
        if len(self._fs) == len(self._xs):
            self._finish_generation([self._fs[i] for i in range(len(self._xs))], self.floor)

    # -------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        current = None
        if self._generation is not None:
            current = {"fs": [[i, f] for i, f in self._fs.items()], "handed": self._handed}
        return {"history": self._history, "floors": self._floors, "current": current}

    def _load(self, state: dict[str, Any]) -> None:
        self._build()
        for fs, floor in zip(state["history"], state["floors"], strict=True):
            self._start_generation()
            if len(fs) != len(self._xs):
                raise SearchError("NSGA-II replay diverged from the checkpoint")
            self._finish_generation(fs, floor)
        if state["current"] is not None:
            self._start_generation()
            self._fs = {int(i): f for i, f in state["current"]["fs"]}
            self._handed = int(state["current"]["handed"])
        for genotype, _ in self._pending.values():
            if self._generation is None or genotype not in self._xs:
                raise SearchError("NSGA-II replay does not reproduce the in-flight individuals")

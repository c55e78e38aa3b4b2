"""The contract between problems, algorithms and the search loop.

Objectives are always *minimised* (a task metric to maximise is negated by the
problem). Algorithms talk to the loop through ask/tell with tickets, so that
evaluations may finish in any order (steady state: a parallel backend keeps every
worker busy). Nothing here knows about torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Genotype = tuple[int, ...]
Objectives = tuple[float, ...]

CANONICAL_CACHE = 8192
"""Canonical forms a Problem keeps (search algorithms canonicalise the same genotypes
again and again; a stitching problem's `canonical` walks the network each time)."""


@dataclass
class Problem:
    """What is searched: discrete variables, objectives to minimise, reference solutions.

    `metric_index` names the objective that holds the (negated) task metric, used by
    adaptive steering; None for problems without one. `switches` lists the variables
    whose value 0 means "off" (a parent's own tensor) and any other value "on" (a
    stitch): the initialiser's `p_stitch` applies to them; None: the binary variables.
    `ideal` is the best value each objective can take (a stitching problem's: metric 1,
    0 MACs); with it, hypervolume is shown as a fraction of the box between it and the
    reference point, as the reports show it.
    """

    cardinalities: Sequence[int]
    evaluate: Callable[[Genotype], Objectives]
    n_objectives: int = 2
    objective_names: Sequence[str] = ("f0", "f1")
    canonical: Callable[[Genotype], Genotype] | None = None
    references: Sequence[Genotype] = field(default_factory=list)
    metric_index: int | None = None
    switches: Sequence[int] | None = None
    ideal: Sequence[float] | None = None
    _seen: dict[Genotype, Genotype] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def canonicalise(self, genotype: Sequence[int]) -> Genotype:
        """`canonical(genotype)` (the genotype itself without one), from a bounded cache."""
        g = tuple(map(int, genotype))
        if self.canonical is None:
            return g
        c = self._seen.get(g)
        if c is None:
            if len(self._seen) >= CANONICAL_CACHE:
                self._seen.clear()
            c = self._seen[g] = tuple(self.canonical(g))
        return c


@dataclass(frozen=True)
class Candidate:
    """A genotype an algorithm wants evaluated; `ticket` comes back with its objectives."""

    ticket: int
    genotype: Genotype


class Algorithm(ABC):
    """Steady-state ask/tell optimiser.

    `ask()` returns a Candidate, or None when the algorithm must wait for results
    still in flight. `tell()` may be called in any order relative to asks. State is
    checkpointed with `state_dict()` (JSON-serialisable) and restored with
    `load_state_dict()`; candidates that were in flight at checkpoint time are asked
    again after a restore.

    An algorithm may keep its own memo of evaluated networks and skip asking for them
    (counted in `memo_hits`); the loop hands it the evaluations it did not see through
    `remember` (a resumed run's stored rows).
    """

    name: str = "algorithm"
    memo_hits: int = 0

    def __init__(self, problem: Problem, seed: int = 0) -> None:
        self.problem = problem
        self.seed = seed

    @abstractmethod
    def ask(self) -> Candidate | None: ...

    @abstractmethod
    def tell(self, ticket: int, objectives: Objectives) -> None: ...

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def remember(self, canonical: Genotype, objectives: Objectives) -> None:  # noqa: B027
        """Learn the objectives of a canonical genotype evaluated elsewhere (optional)."""


@runtime_checkable
class Steered(Protocol):
    """An algorithm steered by a floor on the task metric (`SteadyState` and its
    subclasses): what a racing evaluator's offspring must reach (`race_front`)."""

    @property
    def floor(self) -> float | None:
        """The current floor on the task metric; None while it sets none."""
        ...


def steering_floor(algorithm: Algorithm) -> float | None:
    """`algorithm.floor` of a `Steered` algorithm; None for one that is not steered."""
    return algorithm.floor if isinstance(algorithm, Steered) else None

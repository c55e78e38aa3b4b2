"""Search algorithms behind the `base.Algorithm` ask/tell contract, and their registry."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from evostitch.errors import SearchError
from evostitch.evolution.algorithms.ga import GA
from evostitch.evolution.algorithms.genotypes import initial_genotypes
from evostitch.evolution.algorithms.gomea import GOMEA
from evostitch.evolution.algorithms.kernel_gomea import LKGOMEA
from evostitch.evolution.algorithms.nsga2 import NSGA2
from evostitch.evolution.algorithms.random_search import RandomSearch
from evostitch.evolution.algorithms.scalarisation import weight_vectors
from evostitch.evolution.algorithms.steady_state import SteadyState
from evostitch.evolution.base import Algorithm, Problem

BUILTIN: dict[str, type[SteadyState]] = {
    "rs": RandomSearch,
    "ga": GA,
    "gomea": GOMEA,
    "lk-gomea": LKGOMEA,
    "nsga2": NSGA2,
}
ALGORITHMS: dict[str, Callable[..., Algorithm]] = dict(BUILTIN)  # and register_algorithm's
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")


AUTO = "auto"


# What `auto` runs: NSGA-II at every size measured. It has the best or a tied-best median
# final hypervolume on 4 of the 5 benchmark cells (33 variables at 250 and 2,000
# evaluations, 111 at 2,000, 301 at 250) and reaches random search's final hypervolume
# first or second (after GA) on those 4; on the fifth (111 variables, 250 evaluations)
# nothing beats random search, and NSGA-II is within the seed spread. The table:
# docs/METHOD.md, "Search algorithms on stitching problems".
AUTO_RUNS = "nsga2"


def register_algorithm(name: str, factory: Callable[..., Algorithm]) -> None:
    """Make your own ask/tell `Algorithm` searchable by name, as the built-in ones are:
    `evostitch.search(..., algorithm=name)` and `evostitch.resume` of its runs (in a
    process that registered it). `factory(problem, seed, **params)` builds it; params are
    the search's pop_size, budget, p_stitch and steer_to (take what you use, and
    `**rest`). The run records `name`, so registering it again replaces the factory."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SearchError(
            f"algorithm name {name!r}: 1-40 characters of a-z, 0-9, '_', '-', '.',"
            " starting with a letter or digit"
        )
    if name in BUILTIN or name == AUTO:
        raise SearchError(f"{name!r} is a built-in algorithm name: choose another")
    if not callable(factory):
        raise SearchError(f"the factory of {name!r} must be callable, got {factory!r}")
    ALGORITHMS[name] = factory


def check_algorithm(name: str, auto: bool = False) -> None:
    """Refuse, in one line, a name that is not registered (nor `auto`, when allowed)."""
    if name not in ALGORITHMS and not (auto and name == AUTO):
        raise SearchError(
            f"unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}"
            + (" or auto" if auto else "")
            + " (your own: evostitch.register_algorithm in Python, then search or resume)"
        )


def make_algorithm(name: str, problem: Problem, seed: int = 0, **params: Any) -> Algorithm:
    """Build a registered algorithm. Shared params: pop_size, budget, steer_to, p_stitch;
    ga: crossover, mutation_rate; gomea, lk-gomea: restart_elites; lk-gomea: neighbours."""
    check_algorithm(name)
    if name not in BUILTIN:
        try:
            algorithm = ALGORITHMS[name](problem, seed, **params)
        except TypeError as error:  # the factory's signature, most likely
            raise SearchError(
                f"algorithm {name!r}: its factory(problem, seed, **params) failed: {error}"
            ) from error
        if not isinstance(algorithm, Algorithm):
            raise SearchError(
                f"algorithm {name!r}: the factory returned {type(algorithm).__name__},"
                " not an evostitch.evolution.base.Algorithm"
            )
        algorithm.name = name  # what the run and its checkpoints record
        return algorithm
    return ALGORITHMS[name](problem, seed, **params)


def restore_algorithm(problem: Problem, state: dict[str, Any]) -> Algorithm:
    """Rebuild an algorithm from its `state_dict()` (name, seed and params are in it)."""
    algorithm = make_algorithm(state["algorithm"], problem, state["seed"], **state["params"])
    algorithm.load_state_dict(state)
    return algorithm


__all__ = [
    "ALGORITHMS",
    "BUILTIN",
    "GA",
    "GOMEA",
    "LKGOMEA",
    "NSGA2",
    "RandomSearch",
    "SteadyState",
    "check_algorithm",
    "initial_genotypes",
    "make_algorithm",
    "register_algorithm",
    "restore_algorithm",
    "weight_vectors",
]

"""Search algorithms behind the `base.Algorithm` ask/tell contract, and their registry."""

from __future__ import annotations

from typing import Any

from evostitch.search.algorithms.common import SteadyState, initial_genotypes, weight_vectors
from evostitch.search.algorithms.ga import GA
from evostitch.search.algorithms.gomea import GOMEA, LKGOMEA
from evostitch.search.algorithms.nsga2 import NSGA2
from evostitch.search.algorithms.random_search import RandomSearch
from evostitch.search.base import Problem

ALGORITHMS: dict[str, type[SteadyState]] = {
    "rs": RandomSearch,
    "ga": GA,
    "gomea": GOMEA,
    "lk-gomea": LKGOMEA,
    "nsga2": NSGA2,
}


def make_algorithm(name: str, problem: Problem, seed: int = 0, **params: Any) -> SteadyState:
    """Build a registered algorithm. Shared params: pop_size, budget, steer_to, p_stitch;
    ga: crossover, mutation_rate; lk-gomea: neighbours."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name](problem, seed, **params)


def restore_algorithm(problem: Problem, state: dict[str, Any]) -> SteadyState:
    """Rebuild an algorithm from its `state_dict()` (name, seed and params are in it)."""
    algorithm = make_algorithm(state["algorithm"], problem, state["seed"], **state["params"])
    algorithm.load_state_dict(state)
    return algorithm


__all__ = [
    "ALGORITHMS",
    "GA",
    "GOMEA",
    "LKGOMEA",
    "NSGA2",
    "RandomSearch",
    "SteadyState",
    "initial_genotypes",
    "make_algorithm",
    "restore_algorithm",
    "weight_vectors",
]

"""Search algorithms behind the `base.Algorithm` ask/tell contract, and their registry."""

from __future__ import annotations

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
from evostitch.evolution.base import Problem

ALGORITHMS: dict[str, type[SteadyState]] = {
    "rs": RandomSearch,
    "ga": GA,
    "gomea": GOMEA,
    "lk-gomea": LKGOMEA,
    "nsga2": NSGA2,
}


AUTO = "auto"
AUTO_NSGA2_MAX_VARIABLES = 50


def default_algorithm(variables: int) -> str:
    """What `auto` runs on a genotype of `variables` variables: NSGA-II up to 50 (best on
    the 33-variable demo segmentation supernetwork at 250 and 2,000 evaluations, 5 seeds),
    LK-GOMEA above (tied with random search at 250 on 111 variables; more is unmeasured).
    The table behind it: docs/METHOD.md, "Search algorithms on stitching problems"."""
    return "nsga2" if variables <= AUTO_NSGA2_MAX_VARIABLES else "lk-gomea"


def make_algorithm(name: str, problem: Problem, seed: int = 0, **params: Any) -> SteadyState:
    """Build a registered algorithm. Shared params: pop_size, budget, steer_to, p_stitch;
    ga: crossover, mutation_rate; gomea, lk-gomea: restart_elites; lk-gomea: neighbours."""
    if name not in ALGORITHMS:
        raise SearchError(f"unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}")
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

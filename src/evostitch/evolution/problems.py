"""Classic binary benchmark problems with known optima, for testing the search algorithms.

All are maximisation problems in the literature; as `Problem`s they return negated
values (objectives are minimised).
"""

from __future__ import annotations

from evostitch.errors import SearchError
from evostitch.evolution.base import Genotype, Objectives, Problem


def onemax(n: int) -> Problem:
    """Number of ones; optimum all ones, objective -n."""

    def evaluate(g: Genotype) -> Objectives:
        return (-float(sum(g)),)

    return Problem([2] * n, evaluate, n_objectives=1, objective_names=("-onemax",))


def trap(n: int, k: int = 5) -> Problem:
    """Concatenated deceptive trap-k: per block of k bits with u ones, k if u == k else k-1-u.

    Optimum all ones, objective -n. Every block misleads toward all zeros.
    """
    if n % k:
        raise SearchError(f"length {n} is not a multiple of the trap size {k}")

    def evaluate(g: Genotype) -> Objectives:
        total = 0
        for i in range(0, n, k):
            u = sum(g[i : i + k])
            total += k if u == k else k - 1 - u
        return (-float(total),)

    return Problem([2] * n, evaluate, n_objectives=1, objective_names=(f"-trap{k}",))


def optimum(n: int) -> Objectives:
    """Optimal objective vector of `onemax(n)` and `trap(n, k)`."""
    return (-float(n),)


def lotz(n: int) -> Problem:
    """Leading ones, trailing zeros (bi-objective), minimised as (-LO, -TZ)."""

    def evaluate(g: Genotype) -> Objectives:
        lo = next((i for i, v in enumerate(g) if v != 1), n)
        tz = next((i for i, v in enumerate(reversed(g)) if v != 0), n)
        return (-float(lo), -float(tz))

    return Problem(
        [2] * n, evaluate, n_objectives=2, objective_names=("-leading_ones", "-trailing_zeros")
    )


def lotz_front(n: int) -> set[Objectives]:
    """The Pareto front of `lotz(n)`: (-i, -(n-i)) for i = 0..n, from genotypes 1^i 0^(n-i)."""
    return {(-float(i), -float(n - i)) for i in range(n + 1)}

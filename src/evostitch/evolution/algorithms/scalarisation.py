"""Ranking solutions by a weight vector: the augmented Tchebycheff scalarisation.

- `weight_vectors`: one weight vector per population slot.
- `normalisation_bounds`: the per-objective lower bound and range that normalise.
- `tchebycheff`: the augmented Tchebycheff value of normalised objectives.
- `better_by_key`: a strict comparison of two sort keys, dominance breaking ties.

`SteadyState.key` puts them together (with the steering floor first).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from evostitch.evolution.archive import dominates

RHO = 1e-4
"""Weight of the augmentation term of the Tchebycheff scalarisation (breaks ties
toward Pareto-optimal solutions, e.g. on the axes of the weight simplex)."""

WORST = (math.inf, math.inf)
"""Sort key of a solution with a non-finite objective (a failed evaluation)."""


def weight_vectors(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """`n` weight vectors on the m-simplex, the axes included, in shuffled order.

    m = 2: evenly spaced from (0, 1) to (1, 0). m > 2: the m axes, then Dirichlet(1)
    samples. m = 1: all ones.
    """
    if m == 1:
        return np.ones((n, 1))
    if m == 2:
        t = np.linspace(0.0, 1.0, n) if n > 1 else np.array([0.5])
        w = np.stack([t, 1.0 - t], axis=1)
    else:
        w = np.concatenate([np.eye(m), rng.dirichlet(np.ones(m), size=max(0, n - m))])[:n]
    return w[rng.permutation(n)]


def normalisation_bounds(f: np.ndarray, m: int) -> tuple[list[float], list[float]]:
    """Per-objective minimum and range (1 where the range is 0) of the finite rows of `f`
    (failed evaluations do not stretch the normalisation)."""
    f = f[np.isfinite(f).all(axis=1)] if len(f) else f
    if len(f) == 0:
        return [0.0] * m, [1.0] * m
    lo, hi = f.min(axis=0), f.max(axis=0)
    return lo.tolist(), np.where(hi > lo, hi - lo, 1.0).tolist()


def tchebycheff(f: list[float], w: list[float], lo: list[float], span: list[float]) -> float:
    """The augmented Tchebycheff value of objectives `f` for weights `w`, each objective
    normalised by its lower bound `lo` and range `span` (lower is better)."""
    z = [(fi - li) / si for fi, li, si in zip(f, lo, span, strict=True)]
    tch = max(wi * zi for wi, zi in zip(w, z, strict=True)) + RHO * sum(z)
    return float(tch)


def better_by_key(ka: tuple[float, float], kb: tuple[float, float], a: Any, b: Any) -> bool:
    """`a` beats `b` given their keys: a lower key, or an equal one and `a` dominates."""
    return bool(ka < kb or (ka == kb and dominates(a, b)))

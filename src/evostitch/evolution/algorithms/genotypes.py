"""Genotypes as data: the stratified initialiser (METHOD.md section 2 step 10) and
genotype rows as hashable keys."""

from __future__ import annotations

import math

import numpy as np

from evostitch.evolution.base import Genotype, Problem


def initial_genotypes(
    problem: Problem,
    n: int,
    p_stitch: float | None,
    rng: np.random.Generator,
    include_references: bool = True,
) -> list[Genotype]:
    """`n` genotypes: the problem's reference solutions first, then random ones.

    With `p_stitch` set, each switch (`problem.switches`; by default the binary
    variables) is on in a stratified number of the random genotypes: floor(p*m) or
    ceil(p*m) of the m random genotypes (the fraction is rounded stochastically, so the
    expected rate is exactly p even for small m), at shuffled positions; a switch with
    more than two values (K parents) is on at a uniform value >= 1. Other variables
    (the output switch) are uniform. `p_stitch=None` makes every variable uniform
    (classic benchmarks).
    """
    refs: list[Genotype] = []
    if include_references:
        for r in problem.references:
            g = tuple(map(int, r))
            if g not in refs:
                refs.append(g)
    m = max(0, n - len(refs))
    cards = np.asarray(problem.cardinalities, dtype=np.int64)
    x = rng.integers(0, cards, size=(m, len(cards)))
    switches = (
        np.flatnonzero(cards == 2)
        if problem.switches is None
        else np.asarray(problem.switches, dtype=np.int64)
    )
    if p_stitch is not None and m > 0 and len(switches):
        expected = p_stitch * m
        whole = math.floor(expected)
        counts = whole + (rng.random(len(switches)) < expected - whole)
        order = rng.random((m, len(switches))).argsort(axis=0)  # per column, a random order
        on = np.empty((m, len(switches)), dtype=x.dtype)
        np.put_along_axis(on, order, np.arange(m)[:, None] < counts, axis=0)  # the first
        wide = cards[switches] > 2  # `count` rows of that order are on
        if wide.any():  # drawn only then: two-valued switches keep their random stream
            on[:, wide] *= 1 + rng.integers(0, cards[switches][wide] - 1, size=(m, wide.sum()))
        x[:, switches] = on
    return refs + [tuple(row) for row in x.tolist()]


def row_keys(x: np.ndarray) -> list[bytes]:
    """Each row of a 2-D array as bytes (equal rows, equal bytes): hashable genotypes
    for sets and dicts without a tuple per row."""
    x = np.ascontiguousarray(x)
    if x.shape[1] == 0:
        return [b""] * len(x)
    return x.view(np.dtype((np.void, x.shape[1] * x.itemsize))).ravel().tolist()

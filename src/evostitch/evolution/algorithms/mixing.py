"""Gene-pool optimal mixing's trials, shared by GOMEA and kernel GOMEA.

- `membership_matrix`: a FOS as a boolean (subsets, variables) matrix.
- `Trials`: a job's trials from its current subset on, skipping subsets that change
  nothing and trials made before (forced improvement: the elitist is the donor).
- `Donors`: gene-pool mixing's trials, one donor per subset drawn ahead, the random
  stream kept that of drawing donors one by one.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

from evostitch.evolution.algorithms.genotypes import row_keys
from evostitch.evolution.base import Genotype


class Trials:
    """A job's trials from its current subset on: subset i (row i of the boolean
    `subsets`) takes its values from row i of `rows` (its donor), both given on
    `columns`, the variables the trials may change (elsewhere donors agree with `g`).

    `next(g)` passes over the subsets on which the donor agrees with `g` and those that
    make a trial made since the slot's objectives last changed (`forget`): a known
    network judged before would be judged the same, and taking back a genotype held
    before with the same objectives would only cycle (nested subsets often do both).
    Found for all subsets at once."""

    def __init__(self, rows: np.ndarray, subsets: np.ndarray, columns: list[int]) -> None:
        self._rows, self._subsets, self._columns = rows, subsets, columns
        self.used = 0  # subsets passed or taken
        self._for: Any = None  # g, then the subsets that change it and their trials
        self._made: set[bytes] = set()

    @property
    def left(self) -> int:
        return len(self._subsets) - self.used

    def _changes(self, g: Genotype) -> Any:
        """For the subsets left: which change `g`, their trials on `_columns` (the trials
        agree with `g` elsewhere) and the same as bytes."""
        rest = slice(self.used, len(self._subsets))
        row = np.array([g[c] for c in self._columns], dtype=self._rows.dtype)
        differs = self._rows[rest] != row
        changes = np.flatnonzero((differs & self._subsets[rest]).any(axis=1))
        part = np.where(self._subsets[rest][changes], self._rows[rest][changes], row)
        self._made.add(row_keys(row[None])[0])  # a trial back to `g` is a cycle
        return g, (changes + self.used).tolist(), part.tolist(), row_keys(part)

    def forget(self) -> None:
        """The slot's objectives changed: trials made so far may now be judged otherwise."""
        self._made = set()

    def next(self, g: Genotype) -> Genotype | None:
        """The next subset's trial that changes `g` and was not made before (see above;
        the subsets before it are used up), or None when no subset is left."""
        if self._for is None or self._for[0] is not g:
            self._for = self._changes(g)
        _, changes, trials, keys = self._for
        for k in range(bisect.bisect_left(changes, self.used), len(changes)):
            if keys[k] not in self._made:
                self._made.add(keys[k])
                self.used = changes[k] + 1
                trial = list(g)
                for c, v in zip(self._columns, trials[k], strict=True):
                    trial[c] = v
                return tuple(trial)
        self.used = len(self._subsets)
        return None

    def settle(self) -> None:
        """Called when the job stops using these trials (see `Donors`)."""


class Donors(Trials):
    """Gene-pool mixing's trials: one donor per subset, drawn ahead in one batch by one
    `_advance` call.

    `rng.integers(bound, size=n)` gives the values, and leaves the generator in the
    state, of n calls `rng.integers(bound)`. `settle()` gives back the draws the call
    did not use (it restores the state before the batch and draws the used ones
    again), so the random stream is that of drawing donors one by one as they are
    needed, which other jobs' draws may follow.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        bound: int,
        parents_of: Callable[[np.ndarray], np.ndarray],
        parents: np.ndarray,
        subsets: np.ndarray,
        columns: list[int],
    ) -> None:
        """Draw the donors of the `len(subsets)` subsets to come; `parents_of` turns draws
        into indices of rows of `parents` (the frozen parents as an array, on `columns`)."""
        self.rng, self.bound, self.state = rng, bound, rng.bit_generator.state
        donors = parents_of(rng.integers(bound, size=len(subsets)))
        self.donors: list[int] = donors.tolist()
        super().__init__(parents[donors], subsets, columns)

    def settle(self) -> None:
        """Give back the draws not used."""
        if self.used < len(self.donors):
            self.rng.bit_generator.state = self.state
            self.rng.integers(self.bound, size=self.used)


def membership_matrix(fos: list[list[int]], length: int) -> np.ndarray:
    """(subsets, variables) boolean matrix: which variables each subset holds."""
    sizes = list(map(len, fos))
    mask = np.zeros((len(fos), length), dtype=bool)
    columns = np.fromiter(itertools.chain.from_iterable(fos), dtype=np.int64, count=sum(sizes))
    mask[np.repeat(np.arange(len(fos)), sizes), columns] = True
    return mask

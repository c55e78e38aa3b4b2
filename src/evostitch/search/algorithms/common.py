"""What every steady-state algorithm shares.

- `initial_genotypes`: the stratified initialiser (METHOD.md section 2 step 10).
- `weight_vectors`: one Tchebycheff weight vector per population slot.
- `SteadyState`: ticket bookkeeping (out-of-order tells, re-asking after a restore),
  the elitist archive, adaptive steering and the acceptance test, checkpoints, and the
  memo of evaluated networks (canonical genotype -> objectives) that lets an algorithm
  go on without asking again for a network it already knows.
- `PopulationAlgorithm`: a fixed-size population whose initial members are asked first.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from evostitch.search.archive import Archive, dominates
from evostitch.search.base import Algorithm, Candidate, Genotype, Objectives, Problem

RHO = 1e-4
"""Weight of the augmentation term of the Tchebycheff scalarisation (breaks ties
toward Pareto-optimal solutions, e.g. on the axes of the weight simplex)."""

SILENT_PER_VARIABLE = 8
"""Answers from the memo (per population slot and variable; at least 1000) after which
candidates are asked whatever they are, until a new network is proposed again: `ask()`
always ends, and an algorithm that only repeats itself (a tiny, exhausted search space)
asks at once, so the loop, whose cache answers, sees it and its guards stop the run.
GOMEA needs the room: two passes over the population without a new network (each job
up to two sweeps over its 2l - 2 subsets) come before its restart."""

REDRAWS = 100
"""Draws per member of a restarted population to find a network not known yet."""

WORST = (math.inf, math.inf)
"""Sort key of a solution with a non-finite objective (a failed evaluation)."""


def initial_genotypes(
    problem: Problem,
    n: int,
    p_stitch: float | None,
    rng: np.random.Generator,
    include_references: bool = True,
) -> list[Genotype]:
    """`n` genotypes: the problem's reference solutions first, then random ones.

    With `p_stitch` set, each binary variable is 1 in a stratified number of the random
    genotypes: floor(p*m) or ceil(p*m) of the m random genotypes (the fraction is
    rounded stochastically, so the expected rate is exactly p even for small m), at
    shuffled positions. Variables with more than two values (the output switch) are
    uniform. `p_stitch=None` makes every variable uniform (classic benchmarks).
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
    binary = np.flatnonzero(cards == 2)
    if p_stitch is not None and m > 0 and len(binary):
        expected = p_stitch * m
        counts = math.floor(expected) + (rng.random(len(binary)) < expected - math.floor(expected))
        order = rng.random((m, len(binary))).argsort(axis=0)  # per column, a random order
        chosen = np.empty((m, len(binary)), dtype=x.dtype)
        np.put_along_axis(chosen, order, np.arange(m)[:, None] < counts, axis=0)  # the first
        x[:, binary] = chosen  # `count` rows of that order
    return refs + [tuple(row) for row in x.tolist()]


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
            raise ValueError("pop_size must be at least 2")
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
        """Current floor on the task metric, or None without steering."""
        if self.problem.metric_index is None or not self.steer_to or not self.budget:
            return None
        return self.steer_to * self.progress

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
        return _bounds(self.archive.objectives_array(), self.n_objectives)

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
        z = [(fi - li) / si for fi, li, si in zip(f, lo, span, strict=True)]
        tch = max(wi * zi for wi, zi in zip(w, z, strict=True)) + RHO * sum(z)
        return (self.violation(f), float(tch))

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
            raise KeyError(f"ticket {ticket} is unknown or was told already")
        f = tuple(float(v) for v in objectives)
        if len(f) != self.n_objectives:
            raise ValueError(f"expected {self.n_objectives} objectives, got {len(f)}")
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
            raise ValueError(f"state of {state['algorithm']!r} given to {self.name!r}")
        self.rng.bit_generator.state = state["rng"]
        self.told = int(state["told"])
        self._next_ticket = int(state["next_ticket"])
        self._pending = {int(t): (tuple(map(int, g)), c) for t, g, c in state["pending"]}
        self._reask = sorted(self._pending)
        self.archive = Archive.from_dict(state["archive"])
        self.memo_hits = int(state.get("memo_hits", 0))
        self._silent = int(state.get("silent", 0))
        self._load(state["own"])


def better_by_key(ka: tuple[float, float], kb: tuple[float, float], a: Any, b: Any) -> bool:
    """`a` beats `b` given their keys: a lower key, or an equal one and `a` dominates."""
    return bool(ka < kb or (ka == kb and dominates(a, b)))


def row_keys(x: np.ndarray) -> list[bytes]:
    """Each row of a 2-D array as bytes (equal rows, equal bytes): hashable genotypes
    for sets and dicts without a tuple per row."""
    x = np.ascontiguousarray(x)
    if x.shape[1] == 0:
        return [b""] * len(x)
    return x.view(np.dtype((np.void, x.shape[1] * x.itemsize))).ravel().tolist()


def _bounds(f: np.ndarray, m: int) -> tuple[list[float], list[float]]:
    """Per-objective minimum and range (1 where the range is 0) of the finite rows of `f`
    (failed evaluations do not stretch the normalisation)."""
    f = f[np.isfinite(f).all(axis=1)] if len(f) else f
    if len(f) == 0:
        return [0.0] * m, [1.0] * m
    lo, hi = f.min(axis=0), f.max(axis=0)
    return lo.tolist(), np.where(hi > lo, hi - lo, 1.0).tolist()


def _row(f: np.ndarray) -> list[float] | None:
    return None if np.isnan(f).any() else [float(v) for v in f]


class PopulationAlgorithm(SteadyState):
    """A population of `pop_size` slots, each with a weight vector; the initial
    genotypes (references included) are asked first, slot by slot."""

    def __init__(self, problem: Problem, seed: int = 0, **params: Any) -> None:
        super().__init__(problem, seed, **params)
        self.weights = weight_vectors(self.pop_size, self.n_objectives, self.rng)
        self._reset_population()

    def _reset_population(self, restart: bool = False) -> None:
        """A new population from `initial_genotypes`. On a `restart`, a random member whose
        network is known (or another member's) is drawn again, up to `REDRAWS` times, so
        that a restart brings new networks even where few-ones genotypes are mostly known."""
        self.pop_g = initial_genotypes(self.problem, self.pop_size, self.p_stitch, self.rng)
        if restart:
            seen = set(self.memo)
            for slot in range(len(set(map(tuple, self.problem.references))), len(self.pop_g)):
                for _ in range(REDRAWS):
                    if self.memo_key(self.pop_g[slot]) not in seen:
                        break
                    self.pop_g[slot] = self._draw()
                seen.add(self.memo_key(self.pop_g[slot]))
        self.pop_size = len(self.pop_g)  # more references than pop_size: all are kept
        if len(self.weights) != self.pop_size:
            self.weights = weight_vectors(self.pop_size, self.n_objectives, self.rng)
        self.pop_f = np.full((self.pop_size, self.n_objectives), np.nan)
        self._bounds: tuple[list[float], list[float]] | None = None
        self._init_next = 0
        self._init_left = self.pop_size

    def _draw(self) -> Genotype:
        """One random genotype from the initialiser (each switch 1 with probability p)."""
        return initial_genotypes(self.problem, 1, self.p_stitch, self.rng, False)[0]

    def evaluated(self, slot: int) -> bool:
        return not np.isnan(self.pop_f[slot, 0])

    def set_member(self, slot: int, genotype: Genotype, f: Sequence[float]) -> None:
        self.pop_g[slot] = genotype
        if not np.array_equal(self.pop_f[slot], f):  # objectives, hence bounds, change
            self.pop_f[slot] = f
            self._bounds = None

    def _normalisation(self) -> tuple[list[float], list[float]]:
        if self._bounds is None:  # cached until the population's objectives change
            self._bounds = _bounds(self.pop_f[~np.isnan(self.pop_f[:, 0])], self.n_objectives)
        return self._bounds

    def _propose_init(self) -> tuple[Genotype, dict[str, Any]] | None:
        """The next initial member to evaluate; members the memo knows are filled in."""
        while self._init_next < self.pop_size:
            slot = self._init_next
            self._init_next += 1
            f = self.recall(self.pop_g[slot])
            if f is None:
                return self.pop_g[slot], {"init": slot}
            self._receive_init(f, {"init": slot})
        return None

    def _receive_init(self, f: Objectives, context: dict[str, Any]) -> bool:
        """Store an initial member's objectives; False if `context` is not an initial one."""
        if "init" not in context:
            return False
        self.set_member(context["init"], self.pop_g[context["init"]], f)
        self._init_left -= 1
        return True

    def _state(self) -> dict[str, Any]:
        return {
            "pop_g": [list(g) for g in self.pop_g],
            "pop_f": [_row(f) for f in self.pop_f],
            "weights": self.weights.tolist(),
            "init_next": self._init_next,
            "init_left": self._init_left,
        }

    def _load(self, state: dict[str, Any]) -> None:
        self.pop_g = [tuple(map(int, g)) for g in state["pop_g"]]
        self.pop_size = len(self.pop_g)
        nan = [math.nan] * self.n_objectives
        self.pop_f = np.array([f if f is not None else nan for f in state["pop_f"]], dtype=float)
        self._bounds = None
        self.weights = np.array(state["weights"], dtype=float)
        self._init_next = int(state["init_next"])
        self._init_left = int(state["init_left"])

"""Toy problem, evaluators and a tiny random search shared by the search tests; a module
of its own (not a test file) so that Ray workers can import it by name."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

from evostitch.evolution.base import Algorithm, Candidate, Genotype, Objectives, Problem
from evostitch.evolution.store import RunConfig, RunStore

N_BITS = 12


# -- toy problem: OneMax against a weighted cost; bit 0 switches bits 6.. on and off -------
def toy_canonical(genotype: Genotype) -> Genotype:
    g = tuple(int(v) for v in genotype)
    return g if g[0] == 1 else g[:6] + (0,) * (len(g) - 6)


def toy_objectives(genotype: Genotype) -> Objectives:
    g = toy_canonical(genotype)
    return (-float(sum(g)), float(sum((i + 1) * v for i, v in enumerate(g))))


def make_toy_evaluator(
    sleep: float = 0.0, uneven: bool = False, poison: Genotype | None = None, crash_marker: str = ""
):
    """Evaluator factory (use with functools.partial): optional sleep, crashes on request.

    `uneven` sleeps 4x longer when bit 0 is set, so parallel results finish out of order.
    `poison` kills the worker process every time; `crash_marker` kills it once (the
    process that manages to create the marker file dies on its third evaluation).
    """
    calls = 0

    def evaluate(genotype: Genotype) -> Objectives:
        nonlocal calls
        calls += 1
        if sleep:
            time.sleep(sleep * (4 if uneven and genotype[0] else 1))
        if poison is not None and tuple(genotype) == tuple(poison):
            os._exit(3)
        if crash_marker and calls == 3:
            try:
                os.close(os.open(crash_marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os._exit(4)
        return toy_objectives(genotype)

    return evaluate


def toy_problem(evaluate=toy_objectives, references=()) -> Problem:
    return Problem(
        cardinalities=[2] * N_BITS,
        evaluate=evaluate,
        canonical=toy_canonical,
        references=list(references),
    )


class Counting:
    """Wraps an evaluator and counts its calls."""

    def __init__(self, evaluate=toy_objectives) -> None:
        self.evaluate, self.calls = evaluate, []

    def __call__(self, genotype: Genotype) -> Objectives:
        self.calls.append(tuple(genotype))
        return self.evaluate(genotype)


# -- a tiny random search: asks references first, then uniform random genotypes ----------
class Archive:
    def __init__(self) -> None:
        self.entries: list[tuple[Genotype, Objectives]] = []

    def add(self, genotype: Genotype, objectives: Objectives) -> None:
        def dominates(a, b):
            return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

        if any(dominates(o, objectives) for _, o in self.entries):
            return
        self.entries = [(g, o) for g, o in self.entries if not dominates(objectives, o)]
        self.entries.append((genotype, objectives))

    def objectives(self) -> set[Objectives]:
        return {o for _, o in self.entries}

    def hypervolume(self) -> float:
        ref = (1.0, 100.0)
        points = sorted(o for o in self.objectives() if o[0] < ref[0] and o[1] < ref[1])
        volume, best1 = 0.0, ref[1]
        for i, (f0, f1) in enumerate(points):
            nxt = points[i + 1][0] if i + 1 < len(points) else ref[0]
            best1 = min(best1, f1)
            volume += (nxt - f0) * (ref[1] - best1)
        return volume


class RandomSearch(Algorithm):
    name = "test-random"

    def __init__(self, problem: Problem, seed: int = 0) -> None:
        super().__init__(problem, seed)
        self.rng = random.Random(seed)
        self.next_ticket = 0
        self.todo: list[Genotype] = [tuple(r) for r in problem.references]
        self.pending: dict[int, Genotype] = {}
        self.archive = Archive()
        self.told: list[tuple[Genotype, Objectives]] = []

    def ask(self) -> Candidate | None:
        if self.todo:
            genotype = self.todo.pop(0)
        else:
            genotype = tuple(self.rng.randrange(c) for c in self.problem.cardinalities)
        ticket, self.next_ticket = self.next_ticket, self.next_ticket + 1
        self.pending[ticket] = genotype
        return Candidate(ticket, genotype)

    def tell(self, ticket: int, objectives: Objectives) -> None:
        genotype = self.pending.pop(ticket)
        self.told.append((genotype, tuple(objectives)))
        self.archive.add(genotype, tuple(objectives))

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {
            "rng": [version, list(internal), gauss],
            "next_ticket": self.next_ticket,
            "todo": [list(g) for g in self.todo] + [list(g) for g in self.pending.values()],
            "archive": [[list(g), list(o)] for g, o in self.archive.entries],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.next_ticket = state["next_ticket"]
        self.todo = [tuple(g) for g in state["todo"]]
        self.pending = {}
        self.archive = Archive()
        self.archive.entries = [(tuple(g), tuple(o)) for g, o in state["archive"]]


def random_search_factory(problem: Problem):
    return lambda config: RandomSearch(problem, seed=config.seed)


def new_store(path: Path, budget: int, seed: int = 0) -> RunStore:
    config = RunConfig(algorithm="test-random", budget=budget, seed=seed, problem={"toy": N_BITS})
    return RunStore.create(path, config)

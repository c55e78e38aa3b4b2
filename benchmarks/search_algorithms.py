"""Benchmark of the search algorithms (torch-free).

1. Evaluations to the optimum (OneMax, concatenated trap-5) or to the whole Pareto
   front (LOTZ, plain and with its two extremes given as reference solutions), per
   algorithm over several seeds, with a synchronous ask-evaluate-tell driver.
2. Yardstick: our LT-GOMEA against CWI's reference GOMEA (PyPI `gomea`, linkage tree,
   one population of the same size) on the same OneMax and trap problems.
3. Bookkeeping overhead: 300 evaluations of a 10 ms sleep stub shaped like a stitching
   problem (1 ternary + 112 binary variables), twice: a bare ask-evaluate-tell driver,
   overhead = (wall - 300 * 10 ms) / wall; and the real search loop (run store on disk,
   cache, checkpoints, no progress bar), overhead = (wall - time inside evaluate) / wall,
   with evaluations in the loop's thread and pipelined on the backend's thread; median
   and range of 5 runs per cell (one run varies by ~0.5 points on a shared machine).
4. Known networks: the search loop (in-process, a run folder in /tmp) on the stub with
   inactive variables like a supernetwork's (the output variable decides which half of
   the switches matters): evaluations performed, cache hits in the loop, networks the
   algorithm's memo answered itself, GOMEA's neutral changes and restarts.

Run: .venv/bin/python benchmarks/search_algorithms.py [--quick] [--overhead]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from evostitch.evolution import problems
from evostitch.evolution.algorithms import ALGORITHMS, make_algorithm
from evostitch.evolution.base import Algorithm, Problem
from evostitch.evolution.loop import run_search
from evostitch.evolution.store import RunConfig, RunStore
from evostitch.execution import InProcessBackend

VARIANTS: dict[str, tuple[str, dict]] = {
    "rs": ("rs", {}),
    "ga": ("ga", {}),
    "ga-ux": ("ga", {"crossover": "uniform"}),
    "gomea": ("gomea", {}),
    "lk-gomea": ("lk-gomea", {}),
    "nsga2": ("nsga2", {}),
}


def evaluations_to(alg: Algorithm, problem: Problem, budget: int, done: Callable) -> int | None:
    for n in range(1, budget + 1):
        c = alg.ask()
        alg.tell(c.ticket, problem.evaluate(c.genotype))
        if done(alg):
            return n
    return None


def lotz_with_parents(n: int) -> Problem:
    problem = problems.lotz(n)
    problem.references = [(1,) * n, (0,) * n]
    return problem


def cases() -> list[tuple[str, Problem, Callable, int, int]]:
    """(name, problem, done, pop_size, budget)."""

    def reached(target):
        return lambda alg: any(s.objectives == target for s in alg.archive)

    def covers(front):
        return lambda alg: {s.objectives for s in alg.archive} >= front

    front = problems.lotz_front(16)
    return [
        ("onemax-100", problems.onemax(100), reached(problems.optimum(100)), 32, 20000),
        ("trap5-50", problems.trap(50), reached(problems.optimum(50)), 96, 50000),
        ("lotz-16", problems.lotz(16), covers(front), 32, 30000),
        ("lotz-16+parents", lotz_with_parents(16), covers(front), 32, 30000),
    ]


def summary(results: list[int | None]) -> str:
    hits = [r for r in results if r is not None]
    if not hits:
        return f"-- (0/{len(results)})"
    return f"{statistics.median(hits):>7.0f} ({len(hits)}/{len(results)})"


def table(seeds: list[int]) -> dict[str, list[int | None]]:
    print(
        f"\n== Evaluations to the optimum / whole front: median over successes ({len(seeds)} seeds)"
    )
    print(f"{'problem':<16} {'pop':>4} {'budget':>6}  " + "".join(f"{v:>16}" for v in VARIANTS))
    ours: dict[str, list[int | None]] = {}
    for name, problem, done, pop, budget in cases():
        row = []
        for variant, (algo, extra) in VARIANTS.items():
            results = [
                evaluations_to(
                    make_algorithm(algo, problem, s, pop_size=pop, p_stitch=None, **extra),
                    problem,
                    budget,
                    done,
                )
                for s in seeds
            ]
            ours[f"{name}/{variant}"] = results
            row.append(f"{summary(results):>16}")
        print(f"{name:<16} {pop:>4} {budget:>6}  " + "".join(row), flush=True)
    return ours


def cwi_gomea(problem_name: str, n: int, pop: int, seed: int, budget: int) -> int | None:
    """Evaluations CWI's LT-GOMEA (one population of `pop`) needs to reach the optimum."""
    import gomea
    import numpy as np

    class Fitness(gomea.fitness.BBOFitnessFunctionDiscrete):
        def objective_function(self, objective_index, variables):
            x = np.asarray(variables)
            if problem_name == "onemax":
                return float(x.sum())
            u = x.reshape(-1, 5).sum(axis=1)
            return float(np.where(u == 5, 5, 4 - u).sum())

    fitness = Fitness(n, value_to_reach=n)
    model = gomea.linkage.LinkageTree()  # keep a reference: the C++ side does not own it
    runner = gomea.DiscreteGOMEA(
        fitness=fitness,
        linkage_model=model,
        max_number_of_evaluations=budget,
        max_number_of_populations=1,
        base_population_size=pop,
        random_seed=seed + 1,
    )
    out = runner.run()
    reached = out["best_obj_val"][-1] >= n
    return int(out["evaluations"][-1]) if reached else None


def yardstick(seeds: list[int], ours: dict[str, list[int | None]]) -> None:
    print("\n== Yardstick: our LT-GOMEA vs CWI GOMEA (PyPI `gomea`, LinkageTree, one population)")
    try:
        import gomea  # noqa: F401
    except ImportError:
        print("skipped: the `gomea` package is not installed (pip install gomea)")
        return
    print(f"{'problem':<12} {'pop':>4} {'ours':>16} {'CWI gomea':>16} {'ratio ours/CWI':>15}")
    for label, kind, n, pop, budget in [
        ("onemax-100", "onemax", 100, 32, 20000),
        ("trap5-50", "trap", 50, 96, 50000),
    ]:
        theirs = [cwi_gomea(kind, n, pop, s, budget) for s in seeds]
        mine = ours[f"{label}/gomea"]
        hits_m = [r for r in mine if r is not None]
        hits_t = [r for r in theirs if r is not None]
        ratio = (
            f"{statistics.median(hits_m) / statistics.median(hits_t):.2f}"
            if hits_m and hits_t
            else "n/a"
        )
        print(f"{label:<12} {pop:>4} {summary(mine):>16} {summary(theirs):>16} {ratio:>15}")


def stub_problem(sleep_s: float, inactive: bool = False) -> Problem:
    """`inactive`: output 0 uses only the first half of the switches, 1 only the second."""
    n_bits = 112

    def canonical(g):
        on = [g[0] != 1] * (n_bits // 2) + [g[0] != 0] * (n_bits // 2)
        return (g[0],) + tuple(v if a else 0 for v, a in zip(g[1:], on, strict=True))

    def evaluate(g):
        if sleep_s:
            time.sleep(sleep_s)
        g = canonical(g) if inactive else g
        ones = sum(g[1:])
        return (-(0.8 - 0.01 * ones + 0.05 * (g[0] == 2)), float(100 + ones + 50 * (g[0] == 2)))

    refs = [(o,) + (0,) * n_bits for o in range(3)]
    return Problem(
        [3] + [2] * n_bits,
        evaluate,
        references=refs,
        metric_index=0,
        canonical=canonical if inactive else None,
    )


def own_time(name: str, problem: Problem, n_evals: int, seed: int = 0) -> tuple[float, float]:
    """(seconds inside ask() and tell(), wall seconds) for a synchronous run."""
    alg = make_algorithm(name, problem, seed, pop_size=64, budget=n_evals)
    own = 0.0
    start = time.perf_counter()
    for _ in range(n_evals):
        t0 = time.perf_counter()
        c = alg.ask()
        t1 = time.perf_counter()
        f = problem.evaluate(c.genotype)
        t2 = time.perf_counter()
        alg.tell(c.ticket, f)
        own += time.perf_counter() - t2 + t1 - t0
    return own, time.perf_counter() - start


def overhead(n_evals: int = 300, sleep_s: float = 0.01, repeats: int = 5) -> None:
    print(f"\n== Bookkeeping overhead: {n_evals} evaluations of a {sleep_s * 1e3:.0f} ms stub")
    problem = stub_problem(sleep_s)
    genotype = tuple(problem.references[0])
    start = time.perf_counter()
    for _ in range(n_evals):  # the same loop without an algorithm: sleep's own lateness
        problem.evaluate(genotype)
    bare = time.perf_counter() - start
    print(f"bare loop (no algorithm): {bare:.2f} s, {100 * (bare - n_evals * sleep_s) / bare:.2f}%")
    head = f"{'algorithm':<10} {'wall s':>7} {'overhead':>9} {'ask+tell share':>15}"
    print(head + f" {'ms/eval':>8} {'ms/eval, no sleep':>18}")
    for name in ALGORITHMS:
        own, wall = own_time(name, problem, n_evals)
        pct = 100 * (wall - n_evals * sleep_s) / wall
        warm = min(own_time(name, stub_problem(0.0), n_evals, seed)[0] for seed in range(5))
        print(
            f"{name:<10} {wall:>7.2f} {pct:>8.2f}% {100 * own / wall:>14.2f}%"
            f" {1e3 * own / n_evals:>8.3f} {1e3 * warm / n_evals:>18.3f}",
            flush=True,
        )
    print("overhead = (wall - evaluations * sleep) / wall, sleep's lateness included;")
    print("ask+tell share = time inside ask() and tell() / wall (the algorithm's own cost);")
    print("no sleep = best of 5 runs back to back (warm caches, less preemption).")
    print(f"\nthe search loop: {n_evals} evaluations, run store on disk, checkpoint every 100;")
    print(f"median [min-max] of {repeats} runs")
    modes = {"plain": (1, False), "pipelined": (1, True), "pipelined, batch 8": (8, True)}
    print(f"{'algorithm':<10}" + "".join(f" {m:>22}" for m in modes))
    for name in ALGORITHMS:
        cells = []
        for batch, pipeline in modes.values():
            runs = [loop_time(name, sleep_s, n_evals, batch, pipeline) for _ in range(repeats)]
            pct = sorted(100 * (wall - inside) / wall for wall, inside in runs)
            cells.append(f"{statistics.median(pct):5.2f}% [{pct[0]:.2f}-{pct[-1]:.2f}]")
        print(f"{name:<10}" + "".join(f" {c:>22}" for c in cells), flush=True)
    print("overhead = (wall - time inside evaluate) / wall: store, cache, algorithm, loop;")
    print("plain: evaluations in the loop's thread, one at a time (run_search's default);")
    print("pipelined: on the backend's thread, the next batch evaluating while the loop")
    print("books the last one (what `evostitch search` uses, with --batch 8).")


def loop_time(
    name: str, sleep_s: float, n_evals: int, batch: int = 1, pipeline: bool = False
) -> tuple[float, float]:
    """(wall seconds of `run_search`, seconds spent inside the evaluation)."""
    problem = stub_problem(sleep_s)
    inner, inside = problem.evaluate, [0.0]

    def timed(genotype):
        t0 = time.perf_counter()
        try:
            return inner(genotype)
        finally:
            inside[0] += time.perf_counter() - t0

    params = {"pop_size": 64, "budget": n_evals}
    config = RunConfig(algorithm=name, budget=n_evals, params=params)
    with tempfile.TemporaryDirectory() as tmp, RunStore.create(Path(tmp), config) as store:
        alg = make_algorithm(name, problem, 0, **params)
        backend = InProcessBackend(lambda: timed, batch, pipeline=pipeline)
        start = time.perf_counter()
        run_search(problem, alg, store, backend, progress=False, checkpoint_every=100)
        wall = time.perf_counter() - start
        backend.close()
    return wall, inside[0]


def known_networks(budget: int = 300, pop: int = 32) -> None:
    print(f"\n== Known networks: the loop on the stub with inactive switches, budget {budget}")
    print(
        f"{'algorithm':<10} {'performed':>9} {'loop hits':>9} {'memo hits':>9}"
        f" {'neutral':>8} {'restarts':>8} {'stopped':>8} {'wall s':>7}"
    )
    problem = stub_problem(0.0, inactive=True)
    for name in ALGORITHMS:
        params = {"pop_size": pop, "budget": budget}
        config = RunConfig(algorithm=name, budget=budget, params=params)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp, RunStore.create(Path(tmp), config) as store:
            alg = make_algorithm(name, problem, 0, **params)
            r = run_search(problem, alg, store, progress=False)
        print(
            f"{name:<10} {r.performed:>9} {r.cache_hits:>9} {r.memo_hits:>9}"
            f" {getattr(alg, 'neutral', '-'):>8} {getattr(alg, 'restarts', '-'):>8}"
            f" {r.stopped:>8} {time.perf_counter() - start:>7.2f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="2 seeds instead of 5, overhead runs once"
    )
    parser.add_argument("--overhead", action="store_true", help="only the overhead part")
    args = parser.parse_args()
    seeds = list(range(2 if args.quick else 5))
    start = time.perf_counter()
    if not args.overhead:
        ours = table(seeds)
        yardstick(seeds, ours)
    overhead(repeats=1 if args.quick else 5)
    if not args.overhead:
        known_networks()
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

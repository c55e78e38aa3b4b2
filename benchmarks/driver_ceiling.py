"""How many workers one search driver keeps busy, on a simulated multi-node Ray cluster.

    python benchmarks/driver_ceiling.py [--nodes 4] [--sleep 0.5] [--actors 8,16,32]

Issue 39 (a). A Ray cluster of `--nodes` raylets on this machine (`ray.cluster_utils`,
a head without CPUs), and a stub problem shaped like a stitching one (an output variable
of 4 values, 110 binary switches) whose evaluation only sleeps, so the machine's cores
are not what binds:

1. t = `--sleep` s per evaluation, the real search loop (`run_search`: run store on disk,
   cache, checkpoints) with random search (it asks whenever an actor is free) and NSGA-II
   (generational: a generation waits for its last offspring) on 8, 16 and 32 actors:
   achieved / ideal throughput, ideal = actors / t, after the actors started (goal at
   least 0.9 at 32 actors), and the driver's CPU time per evaluation: one driver keeps
   about t / that many actors busy before its own CPU binds.
2. t = 0: evaluations per second one driver sustains with each algorithm, on Ray
   (32 actors, handed 1 genotype per task, and 8 as `evostitch search` does by default)
   and, as the baseline measured in the same run, in process (pipelined, on the
   backend's thread): where it binds, ask/tell and the store or Ray.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

from evostitch.evolution.algorithms import make_algorithm
from evostitch.evolution.base import Problem
from evostitch.evolution.loop import run_search
from evostitch.evolution.store import RunConfig, RunStore
from evostitch.execution import InProcessBackend, RayBackend

CARDINALITIES = [4] + [2] * 110
ALGORITHMS = ("rs", "ga", "gomea", "lk-gomea", "nsga2")
BATCH = 8  # evostitch search --batch: genotypes a worker takes at once


def sleeper(seconds: float):
    """Evaluator factory: sleep, then objectives from the genotype (distinct per offspring)."""

    def evaluate(genotype):
        if seconds:
            time.sleep(seconds)
        return (-sum(genotype) / len(genotype), float(sum(i * v for i, v in enumerate(genotype))))

    return evaluate


def warm(backend, n: int) -> None:
    """Start the `n` actors and build their evaluators (n evaluations) before any timing:
    work goes to started actors only, so the first to start could do all n alone."""
    for ticket in range(n):
        backend.submit(-1 - ticket, (0,) * len(CARDINALITIES))
    done = 0
    while done < n or backend.pool().ready < n:
        done += len(backend.results(timeout=1.0))


def search(backend, algorithm: str, budget: int, pop: int, folder: Path) -> float:
    """Wall seconds of a search of `budget` evaluations (store in `folder`)."""
    return stored_search(backend, algorithm, budget, pop, folder)[0]


def stored_search(backend, algorithm: str, budget: int, pop: int, folder: Path):
    """(wall seconds, the stored records) of a search of `budget` evaluations."""
    problem = Problem(CARDINALITIES, sleeper(0.0), metric_index=0)
    algo = make_algorithm(algorithm, problem, 0, pop_size=pop, budget=budget)
    config = RunConfig(algorithm, budget, 0, problem={"stub": len(CARDINALITIES)})
    with RunStore.create(folder, config) as store:
        start = time.perf_counter()
        result = run_search(problem, algo, store, backend, progress=False)
        wall = time.perf_counter() - start
        records = list(store.records())
    if result.performed != budget:
        raise SystemExit(f"{algorithm}: {result.performed} of {budget} evaluations")
    return wall, records


def ceiling(actors: list[int], sleep: float, rounds: int, fast_budget: int) -> None:
    """Parts 1 and 2 on the cluster this process has joined."""
    with tempfile.TemporaryDirectory() as tmp:
        print(f"\n1. t = {sleep} s, {rounds} evaluations per actor (population: the actors)")
        print(f"{'actors':>6} {'algorithm':>9} {'wall s':>7} {'ideal s':>7} "
              f"{'achieved/ideal':>15} {'driver CPU ms/eval':>19}")  # fmt: skip
        for n in actors:
            backend = RayBackend(functools.partial(sleeper, sleep), num_workers=n)
            warm(backend, n)
            for name in ("rs", "nsga2"):
                budget = n * rounds
                cpu = time.process_time()
                wall = search(backend, name, budget, n, Path(tmp) / f"slow-{name}-{n}")
                cpu_ms = 1000 * (time.process_time() - cpu) / budget
                ideal = budget * sleep / n
                print(f"{n:>6} {name:>9} {wall:>7.2f} {ideal:>7.2f} {ideal / wall:>15.3f} "
                      f"{cpu_ms:>19.2f}")  # fmt: skip
            backend.close()
        n = max(actors)
        print(f"\n2. t = 0, {fast_budget} evaluations: evaluations per second; on Ray one "
              f"genotype per task, and {BATCH} (the search's default --batch)")  # fmt: skip
        print(
            f"{'algorithm':>9} {'in process':>11} {f'Ray {n} x 1':>11} {f'Ray {n} x {BATCH}':>11}"
        )
        rates = {name: [] for name in ALGORITHMS}
        for name in ALGORITHMS:
            local = InProcessBackend(lambda: sleeper(0.0), batch_size=BATCH, pipeline=True)
            wall = search(local, name, fast_budget, n, Path(tmp) / f"{name}-local")
            rates[name].append(fast_budget / wall)
            local.close()
        for per_worker in (1, BATCH):  # one pool at a time: each fills the cluster
            backend = RayBackend(
                functools.partial(sleeper, 0.0), num_workers=n, per_worker=per_worker
            )
            warm(backend, n)
            for name in ALGORITHMS:
                wall = search(backend, name, fast_budget, n, Path(tmp) / f"{name}-{per_worker}")
                rates[name].append(fast_budget / wall)
            backend.close()
        for name, (here, one, many) in rates.items():
            print(f"{name:>9} {here:>11.0f} {one:>11.0f} {many:>11.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.5)
    parser.add_argument("--actors", default="8,16,32")
    parser.add_argument("--rounds", type=int, default=16, help="evaluations per actor in 1")
    parser.add_argument("--fast-budget", type=int, default=1500, help="evaluations in 2")
    args = parser.parse_args()
    import ray

    from multinode import start_cluster

    actors = [int(a) for a in args.actors.split(",")]
    per_node = -(-max(actors) // args.nodes)
    cluster = start_cluster(args.nodes, per_node)
    print(f"cluster: {args.nodes} raylets x {per_node} CPUs, a head with none")
    try:
        ceiling(actors, args.sleep, args.rounds, args.fast_budget)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()

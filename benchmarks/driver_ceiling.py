"""How many workers one search driver keeps busy, on a simulated multi-node Ray cluster.

    python benchmarks/driver_ceiling.py [--nodes 4] [--sleep 0.5] [--actors 8,16,32]

Issue 39 (a). A Ray cluster of `--nodes` raylets on this machine (`ray.cluster_utils`,
a head without CPUs), and a stub problem shaped like a stitching one (an output variable
of 4 values, 110 binary switches) whose evaluation only sleeps, so the machine's cores
are not what binds:

1. t = `--sleep` s per evaluation, the real search loop (`run_search`: run store on disk,
   cache, checkpoints; NSGA-II) on 8, 16 and 32 actors: achieved / ideal throughput,
   ideal = actors / t, after the actors started (goal at least 0.9 at 32 actors).
2. t = 0: evaluations per second one driver sustains with each algorithm, on Ray
   (32 actors) and, as the baseline measured in the same run, in process (pipelined, on
   the backend's thread): where it binds, ask/tell and the store or Ray.
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


def sleeper(seconds: float):
    """Evaluator factory: sleep, then objectives from the genotype (distinct per offspring)."""

    def evaluate(genotype):
        if seconds:
            time.sleep(seconds)
        return (-sum(genotype) / len(genotype), float(sum(i * v for i, v in enumerate(genotype))))

    return evaluate


def warm(backend, n: int) -> None:
    """Start the actors and build their evaluators (n evaluations) before any timing."""
    for ticket in range(n):
        backend.submit(-1 - ticket, (0,) * len(CARDINALITIES))
    done = 0
    while done < n:
        done += len(backend.results(timeout=1.0))


def search(backend, algorithm: str, budget: int, pop: int, folder: Path) -> float:
    """Wall seconds of a search of `budget` evaluations (store in `folder`)."""
    problem = Problem(CARDINALITIES, sleeper(0.0), metric_index=0)
    algo = make_algorithm(algorithm, problem, 0, pop_size=pop, budget=budget)
    config = RunConfig(algorithm, budget, 0, problem={"stub": len(CARDINALITIES)})
    with RunStore.create(folder, config) as store:
        start = time.perf_counter()
        result = run_search(problem, algo, store, backend, progress=False)
        wall = time.perf_counter() - start
    if result.performed != budget:
        raise SystemExit(f"{algorithm}: {result.performed} of {budget} evaluations")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.5)
    parser.add_argument("--actors", default="8,16,32")
    parser.add_argument("--rounds", type=int, default=8, help="evaluations per actor in 1")
    parser.add_argument("--fast-budget", type=int, default=1500, help="evaluations in 2")
    args = parser.parse_args()
    import ray
    from ray.cluster_utils import Cluster

    actors = [int(a) for a in args.actors.split(",")]
    per_node = -(-max(actors) // args.nodes)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(args.nodes):
        cluster.add_node(num_cpus=per_node)
    ray.init(address=cluster.address, logging_level="ERROR")
    alive = sum(n["Alive"] for n in ray.nodes())
    print(f"cluster: {alive} raylets ({args.nodes} x {per_node} CPUs, a head with none)")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"\n1. t = {args.sleep} s, nsga2, {args.rounds} evaluations per actor")
            print(f"{'actors':>6} {'evals':>6} {'wall s':>7} {'ideal s':>7} {'achieved/ideal':>15}")
            for n in actors:
                backend = RayBackend(functools.partial(sleeper, args.sleep), num_workers=n)
                warm(backend, n)
                budget = n * args.rounds
                wall = search(backend, "nsga2", budget, n, Path(tmp) / f"slow{n}")
                backend.close()
                ideal = budget * args.sleep / n
                print(f"{n:>6} {budget:>6} {wall:>7.2f} {ideal:>7.2f} {ideal / wall:>15.3f}")
            n = max(actors)
            print(f"\n2. t = 0, {args.fast_budget} evaluations: evaluations per second")
            print(f"{'algorithm':>9} {'in process':>11} {f'Ray, {n} actors':>15}")
            ray_backend = RayBackend(functools.partial(sleeper, 0.0), num_workers=n)
            warm(ray_backend, n)
            for name in ALGORITHMS:
                local = InProcessBackend(lambda: sleeper(0.0), batch_size=8, pipeline=True)
                here = search(local, name, args.fast_budget, n, Path(tmp) / f"{name}-local")
                local.close()
                there = search(ray_backend, name, args.fast_budget, n, Path(tmp) / f"{name}-ray")
                budget = args.fast_budget
                print(f"{name:>9} {budget / here:>11.0f} {budget / there:>15.0f}")
            ray_backend.close()
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()

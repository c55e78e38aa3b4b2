"""Throughput of the execution backends, on one machine and on a simulated Ray cluster.

    python benchmarks/backend_scaling.py [--part cpu,ceiling,bytes,loss] [--evals 60]
        [--work-ms 50] [--repeat 3] [--nodes 4]

cpu: each evaluation is ~`work-ms` of pure-Python busy work. Measures evaluations/s (best
of `repeat` runs) for the in-process backend and for Ray with 1 and 2 workers, after the
actors have started and built their evaluators, and prints the 2-worker / 1-worker ratio.
The goal on a 2-core machine is >= 1.8x; other load on the machine lowers it, which the
"CPU share" column shows (the fraction of a core each evaluation actually got).

On a cluster of `--nodes` raylets on this machine (`ray.cluster_utils`), issue 39:
ceiling: stub evaluations that sleep 0.5 s on 8, 16, 32 actors, achieved / ideal
    throughput and the driver's CPU per evaluation; with t = 0, evaluations per second
    per algorithm (`driver_ceiling.py`).
bytes: what each node's object store receives when its workers cannot read the
    supernetwork's folder: the demo's and resnet50 x resnext50_32x4d's (`multinode.py`;
    needs grpcio, which Ray's node statistics use: pip install grpcio).
loss: a node removed at half the budget against an undisturbed run (`multinode.py`).
"""

from __future__ import annotations

import argparse
import functools
import os
import time

from evostitch.evolution.backend import Backend
from evostitch.execution import InProcessBackend


def busy(iterations: int) -> float:
    total = 0.0
    for i in range(iterations):
        total += (i % 7) * 0.5
    return total


def make_evaluator(iterations: int):
    """Evaluator factory: `iterations` steps of busy work. The stub's "objectives" are the
    evaluation's CPU seconds and wall seconds, so the benchmark can tell how much of a core
    each worker actually got."""

    def evaluate(genotype):
        wall, cpu = time.perf_counter(), time.process_time()
        busy(iterations)
        return (time.process_time() - cpu, time.perf_counter() - wall)

    return evaluate


def calibrate(work_ms: float) -> int:
    """Iterations of `busy` that take about `work_ms` milliseconds here (best of 3)."""
    n = 100_000
    best = min(_timed(n) for _ in range(3))
    return max(1, int(n * work_ms / 1000 / best))


def _timed(n: int) -> float:
    t0 = time.perf_counter()
    busy(n)
    return time.perf_counter() - t0


def throughput(backend: Backend, evals: int) -> tuple[float, float, float]:
    """(evaluations/s, mean ms per evaluation, CPU share the evaluations got), keeping the
    backend at capacity, after a warm-up round in which the workers start."""
    genotypes = iter(tuple(int(b) for b in f"{i:016b}") for i in range(10**6))
    for t in range(backend.capacity):
        backend.submit(-1 - t, next(genotypes))
    pending = backend.capacity
    while pending:
        pending -= len(backend.results(timeout=1.0))
    start, submitted, results = time.perf_counter(), 0, []
    while len(results) < evals:
        while submitted < evals and submitted - len(results) < backend.capacity:
            backend.submit(submitted, next(genotypes))
            submitted += 1
        results += backend.results(timeout=1.0)
    rate = evals / (time.perf_counter() - start)
    cpu, wall = (sum(r.objectives[k] for r in results) for k in (0, 1))
    return rate, 1000 * wall / evals, cpu / wall


def measure(label: str, backend: Backend, evals: int, repeat: int) -> tuple[float, float]:
    rate, ms, share = max(throughput(backend, evals) for _ in range(repeat))
    print(f"{label:16} {rate:7.2f} eval/s   {ms:6.1f} ms/eval   CPU share {share:4.0%}")
    return rate, share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="cpu,ceiling,bytes,loss")
    parser.add_argument("--evals", type=int, default=60)
    parser.add_argument("--work-ms", type=float, default=50.0)
    parser.add_argument("--repeat", type=int, default=3, help="report the best of N runs")
    parser.add_argument("--nodes", type=int, default=4, help="raylets of the cluster parts")
    args = parser.parse_args()
    parts = args.part.split(",")
    try:
        import ray
    except ImportError:
        ray = None
    if "cpu" in parts:
        one_machine(args, ray)
    if ray is None:
        print("ray: skipped (not installed; pip install 'evostitch[ray]')")
        return
    if "ceiling" in parts:
        from driver_ceiling import ceiling
        from multinode import start_cluster

        cluster = start_cluster(args.nodes, 32 // args.nodes)
        print(f"\nceiling: {args.nodes} raylets x {32 // args.nodes} CPUs, a head with none")
        try:
            ceiling([8, 16, 32], 0.5, 16, 1500)
        finally:
            ray.shutdown()
            cluster.shutdown()
    if "bytes" in parts:
        from multinode import node_bytes

        node_bytes(args.nodes)
    if "loss" in parts:
        from multinode import node_loss

        node_loss(args.nodes, 4, 0.5, 16)


def one_machine(args, ray) -> None:
    """In process, and a local Ray with 1 and 2 workers: the 2 / 1 ratio."""
    iterations = calibrate(args.work_ms)
    factory = functools.partial(make_evaluator, iterations)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{os.cpu_count()} CPUs, load {load:.1f}; {args.evals} evaluations of ~{args.work_ms:g} ms"
    )
    measure("in-process", InProcessBackend(factory), args.evals, args.repeat)
    if ray is None:
        return
    from evostitch.execution import RayBackend

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    rates = {}
    try:
        for workers in (1, 2):
            with RayBackend(factory, num_workers=workers) as backend:
                label = f"ray {workers} worker" + ("s" if workers > 1 else "")
                rates[workers] = measure(label, backend, args.evals, args.repeat)
    finally:
        ray.shutdown()
    (r1, share1), (r2, share2) = rates[1], rates[2]
    print(f"ray 2 / 1 workers: {r2 / r1:.2f}x (goal >= 1.8x)")
    if min(share1, share2) < 0.9:
        print("  (CPU share under 90%: other load on this machine held the workers back)")


if __name__ == "__main__":
    main()

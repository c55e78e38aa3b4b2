"""Throughput of the execution backends on a CPU-bound stub evaluation.

    python benchmarks/backend_scaling.py [--evals 60] [--work-ms 50] [--repeat 3]

Each evaluation is ~`work-ms` of pure-Python busy work. Measures evaluations/s (best of
`repeat` runs) for the in-process backend and for Ray with 1 and 2 workers, after the
actors have started and built their evaluators, and prints the 2-worker / 1-worker ratio.
The goal on a 2-core machine is >= 1.8x; other load on the machine lowers it, which the
"CPU share" column shows (the fraction of a core each evaluation actually got).
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
    parser.add_argument("--evals", type=int, default=60)
    parser.add_argument("--work-ms", type=float, default=50.0)
    parser.add_argument("--repeat", type=int, default=3, help="report the best of N runs")
    args = parser.parse_args()
    iterations = calibrate(args.work_ms)
    factory = functools.partial(make_evaluator, iterations)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{os.cpu_count()} CPUs, load {load:.1f}; {args.evals} evaluations of ~{args.work_ms:g} ms"
    )
    measure("in-process", InProcessBackend(factory), args.evals, args.repeat)
    try:
        import ray
    except ImportError:
        print("ray: skipped (not installed; pip install 'evostitch[ray]')")
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

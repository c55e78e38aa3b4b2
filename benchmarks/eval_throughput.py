"""Offspring evaluation throughput: each offspring alone vs the shared population evaluator.

ResNet-50 x ResNeXt-50 (32x4d) supernetwork at 64x64 (random weights, untrained
stitches), random validation images with random labels over 1,000 classes. Two
populations: drawn as the search draws them (each switch on with p = 0.02, output
switch uniform) and uniformly. The naive path extracts every offspring and runs it over
the data; the shared path (`SharedEvaluator`) evaluates the population at once. Both
are timed in the same run; the ideal speed-up is the offspring's summed MACs over the
MACs the shared evaluator actually ran.

    python benchmarks/eval_throughput.py --genotypes 20 --images 32   # quick
    python benchmarks/eval_throughput.py --naive 20                   # full, naive on 20
"""

from __future__ import annotations

import argparse
import random
import resource
import time

import torch

from evostitch import Supernet
from evostitch.evaluation.metrics import make_metric
from evostitch.evaluation.shared import SharedEvaluator


def populations(net: Supernet, n: int, p: float, seed: int) -> dict[str, list[tuple[int, ...]]]:
    """`n` distinct canonical genotypes each (the search's cache never evaluates twice)."""
    rng = random.Random(seed)
    spec = net.genotype_spec
    draws = {
        "near-parent": lambda: [rng.randrange(spec[0])] + [int(rng.random() < p) for _ in spec[1:]],
        "uniform": lambda: [rng.randrange(c) for c in spec],
    }
    out = {}
    for name, draw in draws.items():
        seen: dict[tuple[int, ...], None] = {}
        while len(seen) < n:
            seen[net.canonical(draw())] = None
        out[name] = list(seen)
    return out


def naive(net, genotypes, x, y, batch_size) -> list[dict[str, float]]:
    """Each offspring on its own: extract it, run it over the data."""
    out = []
    for g in genotypes:
        model = net.extract(g).eval()
        metric = make_metric(net.task, 1000)
        with torch.inference_mode():
            for s in range(0, len(x), batch_size):
                metric.update(model(x[s : s + batch_size]), y[s : s + batch_size])
        out.append(metric.compute())
    return out


def macs(net: Supernet, genotypes) -> float:
    return sum(net.cost(g)["macs"] for g in genotypes)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genotypes", type=int, default=200, help="per population")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--naive", type=int, default=None, help="time the naive path on N of them")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--budget-mb", type=float, default=2048, help="shared values kept, MiB")
    ap.add_argument("--p", type=float, default=0.02, help="switch probability, near-parent")
    ap.add_argument("--only", choices=["near-parent", "uniform"], default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    net = Supernet.build(["torchvision:resnet50", "torchvision:resnext50_32x4d"], (3, 64, 64))
    print(
        f"supernet: {len(net.switches)} switches, built in {time.perf_counter() - t0:.0f} s; "
        f"{args.images} images 64x64, data batch {args.batch_size}, budget {args.budget_mb} MiB, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.images, 3, 64, 64, generator=gen)
    y = torch.randint(0, 1000, (args.images,), generator=gen)
    budget = int(args.budget_mb * 2**20)
    for name, genotypes in populations(net, args.genotypes, args.p, args.seed).items():
        if args.only and name != args.only:
            continue
        subset = genotypes[: args.naive or len(genotypes)]
        t, c = time.perf_counter(), time.process_time()
        alone = naive(net, subset, x, y, args.batch_size)
        # a subset's offspring may be cheaper or dearer than the population's: scale by MACs
        scale = len(genotypes) / len(subset) * macs(net, subset) / macs(net, genotypes)
        naive_rate = len(subset) / (time.perf_counter() - t) * scale
        naive_cpu = len(subset) / (time.process_time() - c) * scale
        naive_rss = rss_mb()
        shared = SharedEvaluator(net, (x, y), 1000, batch_size=args.batch_size, budget_bytes=budget)
        t, c = time.perf_counter(), time.process_time()
        results = shared.metrics(genotypes)
        shared_rate = len(genotypes) / (time.perf_counter() - t)
        shared_cpu = len(genotypes) / (time.process_time() - c)
        diff = max(abs(a[k] - r[k]) for a, r in zip(alone, results, strict=False) for k in a)
        ideal = macs(net, genotypes) / shared.computed_macs
        print(
            f"{name}: {len(genotypes)} distinct offspring\n"
            f"  naive : {naive_rate:7.3f} offspring/s ({naive_cpu:.3f} per CPU-s), timed on "
            f"{len(subset)} (x{scale:.2f} for the population's MACs), "
            f"max RSS {naive_rss:.0f} MiB\n"
            f"  shared: {shared_rate:7.3f} offspring/s ({shared_cpu:.3f} per CPU-s), peak cached "
            f"{shared.peak_cached_bytes / 2**20:.0f} MiB, max RSS {rss_mb():.0f} MiB\n"
            f"  speed-up {shared_rate / naive_rate:.2f}x ({shared_cpu / naive_cpu:.2f}x in CPU "
            f"time), ideal from MACs {ideal:.2f}x; "
            f"metrics differ by at most {diff:.1e}",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""Do random offspring work without retraining? (the demo classification supernetwork)

Builds the supernetwork as `evostitch demo` does (mnist5k parents, cached), trains its
stitches with the demo's budget, and scores random canonical offspring on the TEST
split: the output switch uniform, each switch stitched with probability p. Prints the
median and quartiles of their accuracy as a fraction of the parents' mean test
accuracy, after stitch training and with untrained stitches (a fresh build).
Goal: median after training >= 0.90; untrained far lower.

Run: .venv/bin/python benchmarks/stitch_quality.py [--offspring 200] [--p 0.02,0.1,0.5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from evostitch.data import load_dataset
from evostitch.demo import DEMO_STITCH_EPOCHS, build_demo_supernet
from evostitch.evaluation import Evaluator
from evostitch.supernet import Supernet
from evostitch.training import train_stitches


def random_offspring(net: Supernet, n: int, p: float, seed: int) -> list[tuple[int, ...]]:
    rng = random.Random(seed)
    draw = [
        [rng.randrange(net.genotype_spec[0])] + [int(rng.random() < p) for _ in net.switches]
        for _ in range(n)
    ]
    return [net.canonical(g) for g in draw]


def scores(ev: Evaluator, genotypes: list[tuple[int, ...]]) -> list[float]:
    """Test accuracy of each genotype; distinct networks evaluated together, once."""
    unique = sorted(set(genotypes))
    accuracy = {g: m["accuracy"] for g, m in zip(unique, ev.metrics_many(unique), strict=True)}
    return [accuracy[g] for g in genotypes]


def summary(values: list[float], base: float) -> str:
    q1, med, q3 = statistics.quantiles([v / base for v in values], n=4, method="inclusive")
    return f"median {med:.3f}  quartiles [{q1:.3f}, {q3:.3f}]  min {min(values) / base:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--offspring", type=int, default=200)
    ap.add_argument("--p", default="0.02,0.1,0.5", help="switch probabilities, comma-separated")
    ap.add_argument("--epochs", type=float, default=DEMO_STITCH_EPOCHS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        trained, info = build_demo_supernet("classification", Path(tmp), progress=False)
        untrained, _ = build_demo_supernet("classification", Path(tmp), progress=False)
    start = time.perf_counter()
    result = train_stitches(
        trained,
        load_dataset(info["dataset"], "train"),
        epochs=args.epochs,
        seed=args.seed,
        device="cpu",
        progress=False,
    )
    print(
        f"{len(trained.matches)} matched pairs; stitch training {args.epochs:g} epochs "
        f"({result.steps} steps) in {time.perf_counter() - start:.0f} s; "
        f"mean stitch loss {result.history[0]:.3f} -> {result.history[-1]:.3f}"
    )
    test = load_dataset(info["dataset"], "test")
    nets = {"trained": trained, "untrained": untrained}
    evs = {k: Evaluator(net, test, 10, device="cpu") for k, net in nets.items()}
    parents = [evs["trained"].metrics(g)["accuracy"] for g in trained.reference_genotypes[:2]]
    base = sum(parents) / 2
    print(f"parents' test accuracy {parents[0]:.4f} / {parents[1]:.4f}, mean {base:.4f}")
    print(f"{args.offspring} random offspring per p, test accuracy / parents' mean:")
    for p in (float(v) for v in args.p.split(",")):
        genotypes = random_offspring(trained, args.offspring, p, args.seed)
        stitched = statistics.mean(len(trained.plan(g).stitched) for g in genotypes)
        print(f"p={p:g}: {len(set(genotypes))} distinct, {stitched:.1f} active stitches on average")
        for name, ev in evs.items():
            print(f"  {name:9s} {summary(scores(ev, genotypes), base)}")


if __name__ == "__main__":
    main()

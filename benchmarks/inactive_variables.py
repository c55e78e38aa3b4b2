"""Share of inactive variables among random genotypes (issue: Core II).

A switch is inactive when the offspring's output no longer depends on it; genotypes
that differ only there are the same network, so the search evaluates them once. For
each supernetwork (weights=None) prints the mean share of inactive variables over
random genotypes, for switch probabilities p (0.02 is the search's initialisation,
0.5 uniform), and the share of distinct canonical genotypes.

    python benchmarks/inactive_variables.py [--samples 1000]
"""

from __future__ import annotations

import argparse
import random
import statistics

from evostitch import Supernet

PAIRS = [
    ("torchvision:resnet18", "torchvision:mobilenet_v3_small", (3, 64, 64)),
    ("torchvision:resnet50", "torchvision:resnext50_32x4d", (3, 64, 64)),
    (
        "torchvision:deeplabv3_mobilenet_v3_large",
        "torchvision:deeplabv3_resnet50",
        (3, 64, 64),
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    print(f"{'pair':70} {'vars':>5} {'p':>5} {'inactive':>9} {'distinct canonical':>19}")
    for a, b, shape in PAIRS:
        net = Supernet.build([a, b], shape)
        rng = random.Random(0)
        for p in (0.02, 0.1, 0.5):
            shares, canon = [], set()
            for _ in range(args.samples):
                g = [rng.randrange(net.genotype_spec[0])]
                g += [int(rng.random() < p) for _ in net.genotype_spec[1:]]
                active = net.active_variables(g)
                shares.append(1 - sum(active) / len(active))
                canon.add(net.canonical(g))
            print(
                f"{a + ' x ' + b:70} {len(net.genotype_spec):5d} {p:5.2f} "
                f"{statistics.mean(shares):9.1%} {len(canon) / args.samples:19.1%}"
            )


if __name__ == "__main__":
    main()

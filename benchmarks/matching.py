"""Matching speed on real architectures (issue: Core I).

For resnet50 x resnext50_32x4d and resnet152 x efficientnet_b4 at 224x224 with random
weights and 32 random images: seconds to trace, to compute the pair weights (uniform
and linear CKA) and to match, and the number of matches. Goal: each pair under 60 s.

    python benchmarks/matching.py [--size 224] [--images 32]
"""

from __future__ import annotations

import argparse
import time

import torch

from evostitch import load_model, trace
from evostitch.graph import example_input
from evostitch.matching import match

PAIRS = [("resnet50", "resnext50_32x4d"), ("resnet152", "efficientnet_b4")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    shape = (3, args.size, args.size)
    images = torch.randn(args.images, *shape)
    print(
        f"{'pair':34} {'weights':8} {'trace s':>8} {'weight s':>9} {'match s':>8} "
        f"{'matches':>8} {'optimal':>8} {'total s':>8}"
    )
    for a, b in PAIRS:
        start = time.perf_counter()
        graphs = [trace(load_model(f"torchvision:{n}"), example_input(shape)) for n in (a, b)]
        trace_s = time.perf_counter() - start
        for similarity in ("uniform", "cka"):
            data = list(images.split(8)) if similarity == "cka" else None
            result = match(graphs, similarity=similarity, data=data)
            total = trace_s + result.weight_seconds + result.seconds
            print(
                f"{a + ' x ' + b:34} {similarity:8} {trace_s:8.1f} {result.weight_seconds:9.1f} "
                f"{result.seconds:8.2f} {len(result.groups):8d} {str(result.optimal):>8} "
                f"{total:8.1f}"
            )


if __name__ == "__main__":
    main()

"""K-parent matching (issue 17): how close progressive alignment comes to the optimum.

Small random instances (three parents, random compatibility and weights; general DAGs
and chains): the weight of `match_parents(method="progressive")` (and of its variants:
one parent order or all first pairs, with or without refinement) divided by the optimum
of the exact K-ideal DP (itself checked against brute force in
tests/test_matching_multi.py). Then three ResNet-like parents (residual blocks, a
parallel downsampling branch per stage, pairs compatible within a stage, uniform or
random weights): progressive seconds and weight against the bounds, the best pairwise matching
(below) and the sum of the pairwise optima (above), and against the exact DP. Last, three
traced torchvision networks (uniform weights): weight, bounds, seconds.

    python benchmarks/multi_matching.py [--instances 300]

Measured (200 instances each; weight / optimum of the default, all first pairs + refine:
mean, min, share optimal): general DAGs of 4-7 nodes 0.998, 0.889, 95%; chains of 4-7
0.998, 0.875, 96%; general 8-12 0.992, 0.917, 71%; chains 8-12 0.995, 0.895, 85%. Plain
progressive alignment (one order, no refinement): means 0.92-0.94, minimum 0.36. The
ResNet-like parents (69, 37, 109 nodes): uniform weights optimal (143); random weights
0.995 of the optimum (0.3 s; the exact DP 0.4 s). Traced networks, uniform weights (all
too wide for the DP): resnet18 x resnet50 x mobilenet_v3_large 270 = the sum of the
pairwise optima, so optimal (0.3 s); resnet152 x efficientnet_b4 x resnext50_32x4d 588,
optimal (2.2 s); resnet50 x efficientnet_b0 x regnet_y_400mf 505 of at most 508 (1.2 s).
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import time
from pathlib import Path

import networkx as nx

from evostitch.errors import MatchingError
from evostitch.matching import match_dags
from evostitch.matching.multi import match_parents

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from test_matching_multi import random_instance  # noqa: E402

VARIANTS = {  # name: (orders, refine)
    "plain (one order)": ("given", False),
    "all first pairs": ("all", False),
    "one order + refine": ("given", True),
    "all + refine (default)": ("all", True),
}


def resnet_like(prefix: str, blocks: list[int]) -> tuple[nx.DiGraph, dict]:
    """Stem, then per stage a downsampling block (parallel branch) and residual blocks."""
    g, stage = nx.DiGraph(), {}
    last = f"{prefix}_stem"
    g.add_node(last)
    stage[last] = 0
    for s, count in enumerate(blocks, start=1):
        for b in range(count):
            names = [f"{prefix}{s}.{b}.{layer}" for layer in ("c1", "r1", "c2", "add")]
            nx.add_path(g, [last, *names])
            if b == 0:  # the downsampling branch
                g.add_edge(last, f"{prefix}{s}.{b}.down")
                g.add_edge(f"{prefix}{s}.{b}.down", names[-1])
                names.append(f"{prefix}{s}.{b}.down")
            else:
                g.add_edge(last, names[3])
            stage.update(dict.fromkeys(names, s))
            last = names[3]
    return g, stage


def small(instances: int) -> None:
    print(
        f"{'instances':30} {'variant':24} {'mean':>6} {'min':>6} {'p5':>6} {'optimal':>8} {'ms':>6}"
    )
    for label, shape, sizes in (
        ("general, 4-7 nodes", "", (4, 7)),
        ("chains, 4-7 nodes", "chain", (4, 7)),
        ("general, 8-12 nodes", "", (8, 12)),
        ("chains, 8-12 nodes", "chain", (8, 12)),
    ):
        cases, optima = [], []
        for seed in range(instances):  # those the exact DP can solve
            dags, weights = random_instance(seed, sizes=sizes, shape=shape)
            try:
                optima.append(match_parents(dags, weights, method="dp").total)
            except MatchingError:
                continue
            cases.append((dags, weights))
        label = f"{label} ({len(cases)})"
        for name, (orders, refine) in VARIANTS.items():
            ratios, start = [], time.perf_counter()
            for (dags, weights), best in zip(cases, optima, strict=True):
                got = match_parents(
                    dags, weights, method="progressive", orders=orders, refine=refine
                )
                ratios.append(got.total / best if best else 1.0)
            ms = 1000 * (time.perf_counter() - start) / len(cases)
            ratios.sort()
            optimal = sum(r > 1 - 1e-9 for r in ratios)
            print(
                f"{label:30} {name:24} {statistics.mean(ratios):6.4f} {ratios[0]:6.3f} "
                f"{ratios[len(ratios) // 20]:6.3f} {optimal / len(ratios):8.1%} {ms:6.1f}"
            )


def large() -> None:
    parents = [
        resnet_like("a", [3, 4, 6, 3]),
        resnet_like("b", [2, 2, 2, 2]),
        resnet_like("c", [3, 8, 12, 3]),
    ]
    dags = [d for d, _ in parents]
    rng = random.Random(0)
    for kind in ("uniform", "random"):
        weights = {
            (p, q): {
                (u, v): 1.0 if kind == "uniform" else rng.uniform(0.05, 1.0)
                for u, su in parents[p][1].items()
                for v, sv in parents[q][1].items()
                if su == sv
            }
            for p, q in itertools.combinations(range(3), 2)
        }
        pairwise = [match_dags(dags[p], dags[q], weights[(p, q)]).total for p, q in weights]
        exact = match_parents(dags, weights, method="dp")
        print(
            f"\nResNet-like parents, {[len(d) for d in dags]} nodes, {kind} weights within a "
            f"stage: bounds {max(pairwise):.2f}..{sum(pairwise):.2f}, optimum {exact.total:.2f} "
            f"(DP {exact.seconds:.1f} s)"
        )
        for name, (orders, refine) in VARIANTS.items():
            got = match_parents(dags, weights, method="progressive", orders=orders, refine=refine)
            print(
                f"{name:24} weight {got.total:7.2f} = {got.total / exact.total:.4f} of the "
                f"optimum, {len(got.groups)} groups ({sum(None not in g for g in got.groups)} "
                f"of 3), {got.seconds:5.2f} s"
            )


def real(triples: list[list[str]]) -> None:
    """Traced torchvision networks (random weights), uniform weights, inputs and outputs fixed."""
    from evostitch import load_model, trace
    from evostitch.graph import example_input
    from evostitch.matching.similarity import compatible_pairs, uniform_weights

    print()
    for names in triples:
        graphs = [
            trace(load_model(f"torchvision:{n}"), example_input((3, 224, 224))) for n in names
        ]
        dags = [g.dag for g in graphs]
        weights = {
            (p, q): uniform_weights(compatible_pairs(graphs[p], graphs[q]))
            for p, q in itertools.combinations(range(3), 2)
        }
        ends = [
            (g.input, h.input, g.output, h.output) for g, h in itertools.combinations(graphs, 2)
        ]
        pairwise = [
            match_dags(dags[p], dags[q], weights[(p, q)], [e[:2], e[2:]]).total
            for (p, q), e in zip(weights, ends, strict=True)
        ]
        fixed = [tuple(g.input for g in graphs), tuple(g.output for g in graphs)]
        depths = [{n: g[n].depth for n in g.nodes} for g in graphs]
        got = match_parents(dags, weights, fixed, depths=depths)
        print(
            f"{' x '.join(names)} ({[len(d) for d in dags]} nodes): {got.method} weight "
            f"{got.total:.0f}, pairwise optima {pairwise} (sum {sum(pairwise):.0f}), proven "
            f"optimal {got.optimal}, {len(got.groups)} groups "
            f"({sum(None not in g for g in got.groups)} of 3), {got.seconds:.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    args = parser.parse_args()
    small(args.instances)
    large()
    real(
        [
            ["resnet18", "resnet50", "mobilenet_v3_large"],
            ["resnet50", "efficientnet_b0", "regnet_y_400mf"],
            ["resnet152", "efficientnet_b4", "resnext50_32x4d"],
        ]
    )


if __name__ == "__main__":
    main()

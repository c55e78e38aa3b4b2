"""Three parents in one supernetwork against the three pairs (issue 17).

Parents, trained from scratch, seeded, on the bundled real digits `mnist5k?size=32&channels=3`
(trained_parents.py; cached in benchmarks/out/parents): A torchvision resnet18 (or, with
`--trio demo`, demo:resnet_like: all three from the demo), B demo:mobilenet_like (inverted
residuals), C demo:vit_like (a small Vision Transformer): three architectures. Four
supernetworks are built through the public API (`evostitch.stitch`, library defaults:
least-squares stitches; `--max-ratio`): ABC and the pairs AB, AC, BC. Each is searched
through `evostitch.search` (the product's default algorithm for its number of variables
unless `--algorithm`; population `--population`, p_stitch 0.02): ABC with the whole
budget, each pair with a third of it, so both arms spend the same number of evaluations;
every search scores the same seeded subset of
`--val-subset` validation images (CPU time). Per seed, hypervolume on that subset (what
the search optimises) of the ABC front and of the union of the three pair fronts, in one
objective space with one reference point: 90% of the weakest parent's accuracy and 110%
of the costliest reference solution's MACs (the three-parent ensemble), as a fraction of
`hypervolume_box`. With `--test`, every front point is scored on the test split too and
the same hypervolumes are printed on test.

Goal: the three-parent front's median hypervolume is higher than the union's.

Run: .venv/bin/python benchmarks/multi_parent.py [--budget 240] [--seeds 5] [--val-subset 250]
        [--population 16] [--algorithm auto] [--max-ratio 8] [--test] [--trio demo]
Finished runs are kept under benchmarks/out/multi_parent (-demo for `--trio demo`) and read
back on a rerun.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from laps import Laps
from trained_parents import MNIST32, SHAPE32, trained_parent

TRIOS = {"torchvision": ("resnet18", "mobilenet_like", "vit_like"),
         "demo": ("resnet_like", "mobilenet_like", "vit_like")}  # fmt: skip
PARENTS = {
    "resnet_like": (
        "demo:resnet_like?in_channels=3&num_classes=10",
        {"epochs": 2, "batch_size": 64, "lr": 3e-3},
    ),
    "resnet18": (
        "torchvision:resnet18?num_classes=10",
        {"epochs": 2, "batch_size": 64, "lr": 3e-3},
    ),
    "mobilenet_like": (
        "demo:mobilenet_like?in_channels=3&num_classes=10",
        {"epochs": 2, "batch_size": 64, "lr": 3e-3},
    ),
    "vit_like": (
        "demo:vit_like?in_channels=3&num_classes=10&image_size=32&patch_size=4",
        {"epochs": 8, "batch_size": 32, "lr": 2e-3},
    ),
}  # fmt: skip  (resnet18 and vit_like as in cnn_vit.py: the cache is shared)
PAIRS = ("ab", "ac", "bc")


def supernet(sides: str, parents: list, out: Path, max_ratio: int, seed: int) -> Path:
    """Build and fit the supernetwork of `sides` (e.g. "ac") once; its folder."""
    import evostitch

    folder = out / f"supernet-{sides}-r{max_ratio}"
    if (folder / "supernet.json").is_file():
        return folder
    chosen = [parents["abc".index(s)] for s in sides]
    net = evostitch.stitch(
        parents=[spec for spec, _ in chosen],
        weights=[w for _, w in chosen],
        input_shape=SHAPE32,
        data=MNIST32,
        out=folder,
        max_ratio=max_ratio,
        seed=seed,
        progress=False,
    )
    print(f"  {sides}: {len(net.matches)} matched points, {len(net.genotype_spec)} variables")
    return folder


def resolved(algorithm: str, folder: Path) -> str:
    """The algorithm a search of `folder` runs: `auto` resolved, so that run folders name
    what ran (and a changed default does not replay the old one's runs)."""
    from evostitch.evolution.algorithms import AUTO, AUTO_RUNS

    return AUTO_RUNS if algorithm == AUTO else algorithm


def searched(folder: Path, run: Path, budget: int, seed: int, args) -> list:
    """Every stored evaluation of one run (a finished run is reused, an interrupted one
    resumed)."""
    import evostitch

    if (run / "checkpoint.json").is_file() and not (run / "front.csv").is_file():
        evostitch.resume(run, progress=False)  # an interrupted earlier run
    elif not (run / "front.csv").is_file():
        evostitch.search(
            folder, out=run, budget=budget, seed=seed, population=args.population,
            algorithm=resolved(args.algorithm, folder), val_subset=args.val_subset or None,
            progress=False,
        )  # fmt: skip
    return evostitch.load_run(run).records


def front_on_test(folder: Path, records: list) -> list[tuple[float, float]]:
    """The run's front (on val) scored on the test split: (-accuracy, MACs) per point."""
    from evostitch.data import load_dataset
    from evostitch.evaluation.evaluator import Evaluator
    from evostitch.evolution.archive import nondominated
    from evostitch.supernet import Supernet

    evaluator = Evaluator(Supernet.load(folder), load_dataset(MNIST32, "test"), 10)
    return evaluator.objectives_many([r.canonical for r in nondominated(records)])


def volume(points: list, ref: tuple[float, float]) -> float:
    """Hypervolume of `points` as a fraction of the product's box for `ref`."""
    from evostitch.evolution.archive import hypervolume
    from evostitch.results.findings import hypervolume_box

    return hypervolume(points, ref) / hypervolume_box(ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=240, help="evaluations per arm")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--algorithm", default="auto")
    ap.add_argument(
        "--val-subset", type=int, default=250, help="validation images a search scores (0: all)"
    )
    ap.add_argument("--max-ratio", type=int, default=8)
    ap.add_argument("--test", action="store_true", help="also score the fronts on test")
    ap.add_argument(
        "--trio",
        choices=sorted(TRIOS),
        default="torchvision",
        help="A is torchvision's resnet18 or the demo's resnet_like (B, C: the demo's"
        " mobilenet_like and vit_like)",
    )
    ap.add_argument("--out", default=None, help="default benchmarks/out/multi_parent[-demo]")
    ap.add_argument("--cache", default="benchmarks/out/parents", help="trained parents")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    trio = TRIOS[args.trio]
    default_out = "benchmarks/out/multi_parent" + ("-demo" if args.trio == "demo" else "")
    out = Path(args.out or default_out)
    lap = Laps()
    trained = [trained_parent(n, *PARENTS[n], Path(args.cache), 0) for n in trio]
    print(f"\n{'parent':17s} {'val acc':>8s} {'test acc':>8s} {'MMACs':>8s}")
    for side, name, (_, _, rec) in zip("ABC", trio, trained, strict=True):
        acc = rec["accuracy"]
        print(f"{side} {name:15s} {acc['val']:8.4f} {acc['test']:8.4f} {rec['macs'] / 1e6:8.2f}")
    parents = [(spec, weights) for spec, weights, _ in trained]
    lap("parents")
    folders = {s: supernet(s, parents, out, args.max_ratio, 0) for s in ("abc", *PAIRS)}
    lap("supernetworks")

    share = args.budget // len(PAIRS)
    runs = []
    tag = {s: f"v{args.val_subset}-{resolved(args.algorithm, f)}-p{args.population}"
           for s, f in folders.items()}  # fmt: skip
    for seed in range(args.seeds):
        run = out / f"run-abc-s{seed}-b{args.budget}-{tag['abc']}"
        found = {"abc": searched(folders["abc"], run, args.budget, seed, args)}
        for s in PAIRS:
            run = out / f"run-{s}-s{seed}-b{share}-{tag[s]}"
            found[s] = searched(folders[s], run, share, seed, args)
        runs.append(found)
        print(f"  seed {seed}: " + ", ".join(f"{s} {len(v)}" for s, v in found.items()), flush=True)
    lap("searches")

    # One reference point for both arms: the product's rule on the ABC references (each
    # parent, each sub-ensemble, the mean of the three: every run evaluates them first).
    from evostitch.evolution.archive import reference_point_from
    from evostitch.supernet import Supernet

    references = set(Supernet.load(folders["abc"]).reference_genotypes)
    ref = reference_point_from([r.objectives for r in runs[0]["abc"] if r.canonical in references])
    objectives = [
        ([r.objectives for r in run["abc"]], [r.objectives for s in PAIRS for r in run[s]])
        for run in runs
    ]
    splits = {"val": objectives}
    if args.test:
        splits["test"] = [
            (front_on_test(folders["abc"], run["abc"]),
             [f for s in PAIRS for f in front_on_test(folders[s], run[s])])
            for run in runs
        ]  # fmt: skip
        lap("fronts on test")
    print(
        f"\nreference point: accuracy {-ref[0]:.4f}, {ref[1] / 1e6:.2f} MMACs; evaluations "
        f"per arm {args.budget} (ABC {args.budget}, each pair {share}); hypervolume as a "
        "fraction of the box"
    )
    for split, pairs in splits.items():
        three = [volume(abc, ref) for abc, _ in pairs]
        union = [volume(u, ref) for _, u in pairs]
        print(f"\n{split}: {'seed':>4s} {'ABC':>8s} {'AB+AC+BC':>9s}")
        for seed, (a, b) in enumerate(zip(three, union, strict=True)):
            print(f"     {seed:4d} {a:8.4f} {b:9.4f}")
        m3, mu = statistics.median(three), statistics.median(union)
        print(f"     median {m3:.4f} [{min(three):.4f}, {max(three):.4f}] vs {mu:.4f} "
              f"[{min(union):.4f}, {max(union):.4f}]")  # fmt: skip
        print(f"     goal (three-parent median higher): {'MET' if m3 > mu else 'NOT MET'}")
    lap.summary(out)


if __name__ == "__main__":
    main()

"""Racing against full evaluation: the same front for a fraction of the images (issue 16).

The demo's classification supernetwork (its trained parents, stitches fitted by the
library's default least squares, saved once under benchmarks/out/time_to_front/) or, with
`--problem segmentation`, the demo's segmentation one (unet_like x fcn_like on nuclei,
metric mIoU, raced with the bootstrap bound: benchmarks/search_stitching.py's saved
supernetwork when it is there, else built the same way, the library's demo parents and
default least-squares stitches, into benchmarks/out/time_to_front/segmentation) is
searched with the same evaluation budget twice per algorithm and seed, measured in the
same run: `full` (every offspring on the whole validation split) and `race` (offspring
stopped early, `evostitch.evaluation.racing`, at the default confidence), through the
product's loop (`run_search`, serial backend, the CLI's evaluation batch of 8).

Printed per algorithm, medians over seeds:
- the final hypervolume of `full` and `race` (the product's: reference point from the
  reference solutions, volume of the front of full evaluations) and their ratio;
- the images and the wall time `race` needs to reach `full`'s final hypervolume, as a
  fraction of `full`'s total (never reached: inf);
- images per proposal (evaluation) of `race` as a fraction of the split, for validation
  sets of 250, 500 and 750 images (seeded subsets of val; 750 is all of it) and 1,500
  (val and test pooled), one algorithm (the first listed). Segmentation: nuclei has 30
  validation and 30 test images, so the sizes are 15 (a seeded half of val: one chunk,
  no racing, as the first chunk is at least 16), 30 (all of val: chunks 16, 30) and 60
  (val and test pooled: 16, 32, 60); a size over val pools val and test, at most their
  sum;
- false stops: every stopped offspring is evaluated in full afterwards; `violations`
  counts those whose full metric exceeds the upper bound they were stopped with (an upper
  bound on the false stops), `false stops` those that would have entered the front of
  the full evaluations stored before them (the floor ignored: conservative).

Written to benchmarks/out/time_to_front/summary[_sizes].json (classification) or
summary_segmentation[_sizes].json.

Run: nice -n 10 .venv/bin/python benchmarks/time_to_front.py [--problem classification]
        [--seeds 2] [--budget 250] [--algorithms lk-gomea,ga]
        [--sizes 250,500,750,1500 (segmentation: 15,30,60)] [--size-seeds 1]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from torch.utils.data import ConcatDataset

from evostitch.data import dataset_info, load_dataset, subset
from evostitch.evaluation import Evaluator
from evostitch.evaluation.racing import RacingEvaluator
from evostitch.evolution.algorithms import make_algorithm
from evostitch.evolution.archive import dominates, hypervolume, reference_point_from
from evostitch.evolution.backend import SerialBackend
from evostitch.evolution.loop import run_search
from evostitch.evolution.stitching import stitching_problem
from evostitch.evolution.store import RunConfig, RunStore
from evostitch.supernet import Supernet

OUT = Path(__file__).resolve().parent / "out" / "time_to_front"
SEARCH_STITCHING = Path(__file__).resolve().parent / "out" / "search_stitching"
EVAL_BATCH = 8
DATA = {"classification": "mnist5k", "segmentation": "nuclei"}
SIZES = {"classification": "250,500,750,1500", "segmentation": "15,30,60"}


def supernet(problem: str = "classification") -> Supernet:
    folder = OUT / problem / "supernet"
    shared = SEARCH_STITCHING / problem / "supernet"  # search_stitching.py's, when built
    for saved in (folder, shared) if problem == "segmentation" else (folder,):
        if (saved / "supernet.json").is_file():
            print(f"{problem}: supernetwork from {saved}", flush=True)
            return Supernet.load(saved)
    from evostitch.demo import build_demo_supernet
    from evostitch.training import train_stitches

    if problem == "classification":
        net, info = build_demo_supernet("classification", OUT / "classification", progress=False)
        train_stitches(net, load_dataset(info["dataset"], "train"), progress=False)
    else:  # as search_stitching.py builds it: its own parents cache, stitches seeded
        net, info = build_demo_supernet(
            problem, OUT / problem / "parents", cache_dir=OUT / problem / "cache", progress=False
        )
        train_stitches(net, load_dataset(info["dataset"], "train"), seed=0, progress=False)
    net.save(folder)
    return net


def split(size: int | None, data: str = "mnist5k"):
    """`size` images of `data`: all of val (None, or its size), a seeded subset of it, or
    val and test pooled (at most their sum)."""
    val = load_dataset(data, "val")
    size = len(val) if size is None else size
    if size <= len(val):
        return subset(val, size) if size < len(val) else val
    pooled = ConcatDataset([val, load_dataset(data, "test")])
    return subset(pooled, size) if size < len(pooled) else pooled


def search(net, data, fidelity: str, algorithm: str, seed: int, budget: int, pop: int) -> dict:
    classes = dataset_info(DATA[net.task]).num_classes
    evaluator = Evaluator(net, data, classes)
    evaluate = evaluator if fidelity == "full" else RacingEvaluator(evaluator)
    problem = stitching_problem(net, evaluate)
    params = {"pop_size": pop, "budget": budget, "p_stitch": 0.02, "steer_to": 0.5}
    algo = make_algorithm(algorithm, problem, seed, **params)
    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig(algorithm=algorithm, budget=budget, seed=seed, params=params)
        with RunStore.create(Path(tmp) / "run", config) as store:
            start = time.perf_counter()
            backend = SerialBackend(lambda: evaluate, EVAL_BATCH)
            run_search(problem, algo, store, backend, budget, progress=False)
            wall = time.perf_counter() - start
            records = list(store.records())
    return {"records": records, "wall": wall, "n": len(data), "evaluator": evaluator}


def trace(run: dict, ref: tuple) -> list[tuple[float, float, float]]:
    """(images so far, seconds so far, hypervolume of the full front so far) per record."""
    front: list = []
    images, out = 0, []
    t0 = min(r.started_at for r in run["records"])
    scale = run["wall"] / max(max(r.finished_at for r in run["records"]) - t0, 1e-9)
    for r in run["records"]:
        images += r.images if r.images is not None else run["n"]
        if r.ok and not r.stopped and not any(dominates(p, r.objectives) for p in front):
            front = [p for p in front if not dominates(r.objectives, p)] + [r.objectives]
        out.append((images, (r.finished_at - t0) * scale, hypervolume(front, ref)))
    return out


def reach(points, target: float) -> tuple[float, float]:
    for images, seconds, hv in points:
        if hv >= target * (1 - 1e-12):
            return images, seconds
    return math.inf, math.inf


def false_stops(run: dict) -> tuple[int, int, int]:
    stopped = [r for r in run["records"] if r.stopped]
    if not stopped:
        return 0, 0, 0
    full = run["evaluator"].objectives_many([r.genotype for r in stopped])
    violations = sum(-f[0] > r.bound + 1e-12 for r, f in zip(stopped, full, strict=True))
    wrong = 0
    for r, f in zip(stopped, full, strict=True):
        before = [q.objectives for q in run["records"] if q.id < r.id and q.ok and not q.stopped]
        if not any(p[0] <= f[0] and p[1] <= f[1] for p in before):
            wrong += 1
    return len(stopped), violations, wrong


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problem", choices=tuple(DATA), default="classification")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--budget", type=int, default=250)
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--algorithms", default="lk-gomea,ga")
    parser.add_argument("--sizes", default=None, help="default: 250,500,750,1500 / 15,30,60")
    parser.add_argument("--size-seeds", type=int, default=1)
    args = parser.parse_args()
    sizes = SIZES[args.problem] if args.sizes is None else args.sizes
    data = DATA[args.problem]
    net = supernet(args.problem)
    n_val = len(load_dataset(data, "val"))
    metric = "accuracy" if net.task == "classification" else "mIoU (bootstrap bound)"
    print(
        f"{args.problem}: {data}, {n_val} validation images, metric {metric};"
        f" {len(net.genotype_spec)} variables; budget {args.budget}, population"
        f" {args.population}, seeds {args.seeds}",
        flush=True,
    )
    refs = net.reference_genotypes
    started = time.perf_counter()
    summary: dict = {}
    for algorithm in args.algorithms.split(",") if args.seeds else []:
        rows = []
        for seed in range(args.seeds):
            runs = {
                f: search(net, split(None, data), f, algorithm, seed, args.budget, args.population)
                for f in ("full", "race")
            }
            by = {tuple(net.canonical(r.genotype)): r for r in runs["full"]["records"]}
            ref = reference_point_from([by[tuple(net.canonical(g))].objectives for g in refs])
            full, race = trace(runs["full"], ref), trace(runs["race"], ref)
            target = full[-1][2]
            images, seconds = reach(race, target)
            stops = false_stops(runs["race"])
            row = {
                "seed": seed,
                "hv_full": target,
                "hv_race": race[-1][2],
                "images": images / full[-1][0],
                "wall": seconds / runs["full"]["wall"],
                "wall_full": runs["full"]["wall"],
                "wall_race": runs["race"]["wall"],
                "per_proposal": race[-1][0] / len(race) / runs["race"]["n"],
                "stopped": stops[0],
                "violations": stops[1],
                "false_stops": stops[2],
            }
            rows.append(row)
            print(
                f"{algorithm} seed {seed}: HV full {target:.6g} race {row['hv_race']:.6g};"
                f" race reaches full's final HV at {row['images']:.3f} of its images,"
                f" {row['wall']:.3f} of its wall time ({row['wall_full']:.0f} s vs race"
                f" {row['wall_race']:.0f} s in all); images/proposal {row['per_proposal']:.3f};"
                f" stopped {stops[0]}, bound violations {stops[1]}, false stops {stops[2]}"
                f" [{time.perf_counter() - started:.0f} s]",
                flush=True,
            )
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "seed"}
        summary[algorithm] = {"rows": rows, "median": med}
        stopped = sum(r["stopped"] for r in rows)
        print(
            f"{algorithm}, median of {len(rows)} seeds: final HV race/full"
            f" {med['hv_race'] / med['hv_full']:.4f}; images to full's final HV"
            f" {med['images']:.3f}, wall time {med['wall']:.3f};"
            f" images per proposal {med['per_proposal']:.3f}; false stops"
            f" {sum(r['false_stops'] for r in rows)} of {stopped} stopped"
            f" (bound violations {sum(r['violations'] for r in rows)})",
            flush=True,
        )
    algorithm = args.algorithms.split(",")[0]
    for size in (int(v) for v in sizes.split(",") if v):
        ratios = []
        if size == n_val and algorithm in summary:  # the runs above: the whole val split
            ratios = [r["per_proposal"] for r in summary[algorithm]["rows"]]
        for seed in range(args.size_seeds if not ratios else 0):
            run = search(
                net, split(size, data), "race", algorithm, seed, args.budget, args.population
            )
            seen = sum(r.images if r.images is not None else run["n"] for r in run["records"])
            ratios.append(seen / len(run["records"]) / run["n"])
        summary[f"size{size}"] = ratios
        print(
            f"{algorithm}, {size} validation images: race scores"
            f" {np.median(ratios):.3f} of them per proposal (median of {len(ratios)} seeds)",
            flush=True,
        )
    name = "summary" + ("_segmentation" if args.problem == "segmentation" else "")
    name += ".json" if args.seeds else "_sizes.json"
    (OUT / name).write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()

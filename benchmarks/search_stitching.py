"""Search algorithms compared on real stitching problems (issue 21).

Supernetworks: `classification` and `segmentation` (the demo's parents, trained with the
current code into this benchmark's own cache, stitches fitted by the library's default
least squares) and, on request, `pretrained` (EfficientNet-Lite0 x Lite2 with linear-probe
heads on the digits at 3x64x64: see pretrained_parents.py). Each is saved once under
benchmarks/out/search_stitching/<problem>/supernet and searched through the product's own
problem (`problem_from_spec`), algorithms (`make_algorithm`) and loop (`run_search`,
serial backend, the CLI's evaluation batch of 8), every algorithm with its defaults but
the population (`--population`), the switch probability (`--p-stitch`) and the steering
floor (`--steer-to`).

Evaluations are cached across runs: the same supernetwork (sha256 of its folder) on the
same data and split gives a canonical genotype the same objectives whoever asks, so every
objective vector is stored once in benchmarks/out/search_stitching/cache.sqlite and
replayed to any later run, algorithm or budget (a run still counts it as one of its
evaluations). Finished runs are kept as run folders and read back on a rerun.

Hypervolume as the product computes it (`evostitch.results`): reference point from the
reference solutions' objectives (`reference_point_from`: 90% of the weaker parent's
metric, 110% of the ensemble's MACs), volume as a fraction of `hypervolume_box`, over the
non-dominated stored evaluations after each evaluation. Printed per supernetwork and
budget, per algorithm: median final hypervolume [min, max] over seeds, the median at a
quarter and half of the budget, and the evaluations each run needs to reach random
search's median final hypervolume (median over seeds, a run that never reaches it counts
as never; how many reached it).

Run: .venv/bin/python benchmarks/search_stitching.py [--problems classification@250,segmentation]
        [--budgets 250,2000] [--seeds 5] [--algorithms rs,ga,gomea,lk-gomea,nsga2]
        [--population 16] [--p-stitch 0.02] [--steer-to 0.5] [--val-subset N] [--tag NAME]
        [--rs-target HV]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sqlite3
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from evostitch.data import load_dataset
from evostitch.evaluation.transitions import POOR
from evostitch.evolution.algorithms import ALGORITHMS, make_algorithm
from evostitch.evolution.archive import (
    dominates,
    hypervolume,
    reference_point_from,
    weakly_dominates,
)
from evostitch.evolution.backend import SerialBackend
from evostitch.evolution.loop import run_search
from evostitch.evolution.stitching import problem_from_spec, problem_spec
from evostitch.evolution.store import RunConfig, RunStore
from evostitch.results.findings import hypervolume_box
from evostitch.supernet import Supernet
from evostitch.training import train_stitches

OUT = Path(__file__).resolve().parent / "out" / "search_stitching"
EVAL_BATCH = 8  # the CLI's default (execution.backends.DEFAULT_EVAL_BATCH)
PROBLEMS = ("classification", "segmentation", "pretrained")


# ----- supernetworks ------------------------------------------------------------------------------
def build_supernet(
    problem: str, folder: Path, downstream: int | None = None, poor: float | None = None
) -> str:
    """Build, fit and save `problem`'s supernetwork into folder/supernet (once); its data.
    With `poor`, the stitches whose single crossing keeps less than that fraction on val are
    left out, as `evostitch stitch` does (`fitting.leave_out_poor`)."""
    done = folder / "supernet" / "benchmark.json"
    if done.is_file():
        info = json.loads(done.read_text())
        print(f"{problem}: supernetwork from {folder / 'supernet'}; parents {info['parents']}")
        return info["data"]
    shutil.rmtree(folder / "supernet", ignore_errors=True)
    start = time.perf_counter()
    if problem == "pretrained":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from pretrained_parents import DATA, SHAPE, prepare

        (spec_a, weights_a), (spec_b, weights_b) = prepare([0, 2], OUT / "pretrained_parents")
        net = Supernet.build([spec_a, spec_b], SHAPE, weights=[weights_a, weights_b])
        data, parents = DATA, {}
    else:
        from evostitch.demo import build_demo_supernet

        # An explicit parents cache: trained by the code as it is now, whatever
        # ~/.cache/evostitch/parents holds.
        net, info = build_demo_supernet(
            problem, folder / "parents", cache_dir=OUT / "parents", progress=False
        )
        data = info["dataset"]
        parents = {n: info["metrics"][n] for n in info["names"]}
    fit = train_stitches(
        net, load_dataset(data, "train"), seed=0, downstream=downstream, progress=False
    )
    if poor is not None:
        from evostitch.data import dataset_info
        from evostitch.evaluation.holding import hold_evaluator
        from evostitch.evaluation.transitions import transition_map
        from evostitch.fitting import leave_out_poor

        classes = dataset_info(data).num_classes
        val = hold_evaluator(net, load_dataset(data, "val"), classes, device="cpu")
        print(leave_out_poor(net, transition_map(net, val), poor))  # as `evostitch stitch` does
    net.save(folder / "supernet")
    seconds = time.perf_counter() - start
    record = {"data": data, "parents": _short(parents), "seconds": seconds}
    done.write_text(json.dumps(record, indent=1))
    print(f"{problem}: built in {seconds:.0f} s; {fit.summary(net)}")
    print(f"{problem}: parents' test metrics {record['parents']}")
    return data


def _short(metrics: dict) -> dict:
    keep = ("accuracy", "miou", "pixel_accuracy")
    return {n: {k: round(v, 4) for k, v in m.items() if k in keep} for n, m in metrics.items()}


def folder_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "benchmark.json"):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:20]


# ----- the evaluation cache -----------------------------------------------------------------------
class CachedObjectives:
    """The problem's objective function behind a persistent cache keyed by canonical genotype."""

    def __init__(self, problem, evaluate, db: sqlite3.Connection, key: str) -> None:
        self.problem, self.evaluate, self.db, self.key = problem, evaluate, db, key
        self.memory: dict[tuple[int, ...], tuple[float, float]] = {
            tuple(json.loads(g)): (f0, f1)
            for g, f0, f1 in db.execute(
                "SELECT genotype, f0, f1 FROM evaluations WHERE problem = ?", (key,)
            )
        }
        self.fresh, self.fresh_seconds, self.replayed = 0, 0.0, 0

    def __call__(self, genotype):
        return self.evaluate_many([genotype])[0]

    def evaluate_many(self, genotypes: Sequence[Sequence[int]]) -> list[tuple[float, float]]:
        canonical = [self.problem.canonicalise(g) for g in genotypes]
        missing = sorted({c for c in canonical if c not in self.memory})
        self.replayed += len(canonical) - len(missing)
        if missing:
            t0 = time.perf_counter()
            values = self.evaluate.evaluate_many(missing)
            self.fresh_seconds += time.perf_counter() - t0
            self.fresh += len(missing)
            rows = []
            for c, (f0, f1) in zip(missing, values, strict=True):
                self.memory[c] = (float(f0), float(f1))
                rows.append((self.key, json.dumps(c), float(f0), float(f1)))
            with self.db:
                self.db.executemany("INSERT OR IGNORE INTO evaluations VALUES (?,?,?,?)", rows)
        return [self.memory[c] for c in canonical]


def open_cache(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=60)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS evaluations (problem TEXT, genotype TEXT, f0 REAL, f1 REAL,"
        " PRIMARY KEY (problem, genotype))"
    )
    return db


# ----- runs and hypervolume -----------------------------------------------------------------------
def run_once(problem, cached, spec, folder: Path, algorithm, budget, seed, pop, p_stitch, steer):
    """The objectives of one run's stored evaluations, in order (a finished run is reused)."""
    params = {"pop_size": pop, "budget": budget, "p_stitch": p_stitch, "steer_to": steer}
    if (folder / "done.json").is_file():
        with RunStore.open(folder, readonly=True) as store:
            return [r.objectives for r in store.records() if r.ok]
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    config = RunConfig(algorithm=algorithm, budget=budget, seed=seed, params=params, problem=spec)
    with RunStore.create(folder, config) as store:
        algo = make_algorithm(algorithm, problem, seed, **params)
        backend = SerialBackend(lambda: cached, batch_size=EVAL_BATCH)
        result = run_search(problem, algo, store, backend, budget, progress=False)
        records = [r.objectives for r in store.records() if r.ok]
    (folder / "done.json").write_text(
        json.dumps({"performed": result.performed, "stopped": result.stopped})
    )
    return records


def hv_trace(objectives: list, ref_point, box: float) -> list[float]:
    """Hypervolume (fraction of the box) after each evaluation."""
    front: list = []
    trace, hv = [], 0.0
    for f in objectives:
        if not any(weakly_dominates(q, f) for q in front):
            front = [q for q in front if not dominates(f, q)] + [f]
            hv = hypervolume(front, ref_point) / box
        trace.append(hv)
    return trace


def reach(trace: list[float], target: float) -> float:
    """Evaluations until the trace reaches `target` (inf: never)."""
    for n, v in enumerate(trace, 1):
        if v >= target - 1e-12:
            return n
    return math.inf


def at(trace: list[float], n: int) -> float:
    return trace[min(n, len(trace)) - 1] if trace else 0.0


# ----- main ---------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--problems",
        default="classification,segmentation",
        help="comma-separated; name@250+2000 gives that problem its own budgets",
    )
    ap.add_argument("--budgets", default="250,2000")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--algorithms", default="rs,ga,gomea,lk-gomea,nsga2")
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--p-stitch", type=float, default=0.02)
    ap.add_argument(
        "--steer-to",
        type=float,
        default=0.5,
        help="final steering floor on the task metric (the product's default 0.5; 0: off)",
    )
    ap.add_argument(
        "--rs-target",
        type=float,
        default=None,
        help="count evaluations to this hypervolume instead of this table's random search"
        " median (compare settings against random search at the default ones)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--val-subset",
        type=int,
        default=0,
        help="score every search on a seeded subset of this many validation images (0: all;"
        " a subset is its own problem: its own cache key and run folders)",
    )
    ap.add_argument(
        "--tag",
        default="",
        help="appended to the run folders' names: runs of a changed algorithm are made anew"
        " instead of read back from the folders of its earlier version",
    )
    ap.add_argument(
        "--report-only", action="store_true", help="tabulate the finished runs, start none"
    )
    ap.add_argument(
        "--downstream-steps",
        type=int,
        default=None,
        help="steps of the stitches' downstream stage (default: the library's; given, the "
        "supernetwork is its own, in <problem>-kdN: 0 is the least-squares fit alone)",
    )
    ap.add_argument(
        "--leave-out-poor",
        nargs="?",
        type=float,
        const=POOR,
        default=None,
        help=f"leave out the stitches whose single crossing keeps less than this fraction "
        f"(default {POOR:g}) of the lower parent on val, as `evostitch stitch` does (the "
        "supernetwork is its own, in <problem>-lo, or <problem>-loT for another threshold)",
    )
    args = ap.parse_args()
    if not 0 <= args.steer_to <= 1 or not 0 <= args.p_stitch <= 1:
        raise SystemExit("--steer-to and --p-stitch must lie in [0, 1]")
    torch.set_num_threads(args.threads)
    problems, own_budgets = [], {}
    for item in args.problems.split(","):  # name, or name@250+2000: that problem's budgets
        name, _, listed = item.partition("@")
        problems.append(name)
        if listed:
            own_budgets[name] = [int(b) for b in listed.split("+")]
    algorithms = args.algorithms.split(",")
    budgets = [int(b) for b in args.budgets.split(",")]
    for name in problems:
        if name not in PROBLEMS:
            raise SystemExit(f"unknown problem {name!r}: {', '.join(PROBLEMS)}")
    for name in algorithms:
        if name not in ALGORITHMS:
            raise SystemExit(f"unknown algorithm {name!r}: {', '.join(ALGORITHMS)}")
    db = open_cache(OUT / "cache.sqlite")
    start = time.perf_counter()
    results: dict = {}
    lines: list[str] = []
    for name in problems:
        kd = args.downstream_steps
        folder = OUT / (name if kd is None else f"{name}-kd{kd}")
        poor = args.leave_out_poor
        if poor is not None:
            suffix = "-lo" if poor == POOR else f"-lo{poor:g}"
            folder = folder.with_name(folder.name + suffix)
        data = build_supernet(name, folder, kd, poor)
        subset = args.val_subset or None
        spec = problem_spec(folder / "supernet", data, subset=subset)
        problem, net = problem_from_spec(spec, device="cpu")
        key = f"{folder_hash(folder / 'supernet')}|{data}|val" + (f"|{subset}" if subset else "")
        cached = CachedObjectives(problem, problem.evaluate, db, key)
        refs = cached.evaluate_many(problem.references)
        ref_point = reference_point_from(refs)
        box = hypervolume_box(ref_point)
        parents_hv = hypervolume(refs, ref_point) / box
        metric = "accuracy" if net.task == "classification" else "mIoU"
        print(
            f"\n{name}: {len(net.genotype_spec)} variables; val {metric} "
            f"A {-refs[0][0]:.4f}, B {-refs[1][0]:.4f}, ensemble {-refs[2][0]:.4f}; "
            f"ref point ({-ref_point[0]:.4f}, {ref_point[1] / 1e6:.3f} MMACs); "
            f"references alone HV {parents_hv:.4f}; {len(cached.memory)} cached evaluations",
            flush=True,
        )
        for budget in own_budgets.get(name, budgets):
            traces: dict[str, list[list[float]]] = {a: [] for a in algorithms}
            for seed in range(args.seeds):  # seeds outer: a run cut short has every algorithm
                for algorithm in algorithms:
                    tag = f"{algorithm}-b{budget}-p{args.population}-ps{args.p_stitch:g}-s{seed}"
                    tag += f"-v{subset}" if subset else ""
                    tag += f"-st{args.steer_to:g}" if args.steer_to != 0.5 else ""
                    tag += f"-{args.tag}" if args.tag else ""
                    run = folder / "runs" / tag
                    if args.report_only and not (run / "done.json").is_file():
                        continue
                    fresh0, t0 = cached.fresh, time.perf_counter()
                    elapsed = f"{time.perf_counter() - start:.0f} s"
                    objectives = run_once(
                        problem, cached, spec, run,
                        algorithm, budget, seed, args.population, args.p_stitch, args.steer_to,
                    )  # fmt: skip
                    trace = hv_trace(objectives, ref_point, box)
                    traces[algorithm].append(trace)
                    print(
                        f"  {name} {tag}: HV {trace[-1]:.4f} after {len(trace)}; "
                        f"{cached.fresh - fresh0} new evaluations, "
                        f"{time.perf_counter() - t0:.0f} s (started at {elapsed})",
                        flush=True,
                    )
            results[f"{name}/{budget}"] = traces
            lines += table(name, len(net.genotype_spec), budget, traces, args)
            print("\n".join(lines[-(len(algorithms) + 3) :]), flush=True)  # (or fewer rows)
        print(
            f"{name}: {cached.fresh} evaluations computed in this call "
            f"({cached.fresh_seconds / max(cached.fresh, 1):.3f} s each), "
            f"{cached.replayed} replayed from the cache",
            flush=True,
        )
    (OUT / "results.json").write_text(json.dumps(results))
    print("\n" + "\n".join(lines))
    print(f"\nwall time {time.perf_counter() - start:.0f} s")


def table(name: str, n_vars: int, budget: int, traces: dict, args) -> list[str]:
    traces = {a: runs for a, runs in traces.items() if runs}
    given = args.rs_target is not None
    rs_target = args.rs_target if given else None
    if not given and "rs" in traces:
        rs_target = statistics.median(t[-1] for t in traces["rs"])
    target_text = f"{rs_target:.4f}" if rs_target is not None else "-"
    seeds = "/".join(sorted({str(len(runs)) for runs in traces.values()})) or "0"
    out = [
        f"\n{name} ({n_vars} variables), budget {budget}, population {args.population}, "
        f"p_stitch {args.p_stitch:g}, steer_to {args.steer_to:g}, seeds per algorithm {seeds}"
        + (f", {args.val_subset} validation images" if args.val_subset else "")
        + ("; target HV (given) " if given else "; RS's median final HV ")
        + target_text,
        f"| algorithm | final HV median [min, max] | HV at {budget // 4} | HV at {budget // 2} "
        f"| evaluations to {'the target' if given else 'RS final HV'} (reached) |",
        "|---|---|---|---|---|",
    ]
    for algorithm, runs in traces.items():
        finals = [t[-1] for t in runs]
        if rs_target is None:
            needed = "-"
        else:
            hits = [reach(t, rs_target) for t in runs]
            med = statistics.median(hits)
            reached = sum(math.isfinite(h) for h in hits)
            needed = f"{'never' if math.isinf(med) else f'{med:.0f}'} ({reached}/{len(hits)})"
        out.append(
            f"| {algorithm} | {statistics.median(finals):.4f} [{min(finals):.4f}, "
            f"{max(finals):.4f}] | {statistics.median(at(t, budget // 4) for t in runs):.4f} "
            f"| {statistics.median(at(t, budget // 2) for t in runs):.4f} | {needed} |"
        )
    return out


if __name__ == "__main__":
    main()

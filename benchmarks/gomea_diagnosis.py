"""Why GOMEA and LK-GOMEA lose to NSGA-II on the demo segmentation supernetwork (issue 21).

Runs seeded searches exactly as benchmarks/search_stitching.py does (its supernetwork, its
persistent evaluation cache, the product's loop, serial backend, batch 8, steering 0.5),
in throw-away run folders, with the algorithm instance instrumented from outside (no
library change): it logs every restart (a new random population) and every generation
(a frozen donor population and, for GOMEA, a learned linkage tree), and classifies each
evaluation by where it came from (the initial population of an epoch, or mixing).

Printed per run: restarts and evaluations per epoch (an epoch: from one population
initialisation to the next); how many binary switches are 1 in an epoch's initial
population (raw and active); the epoch's closure (the distinct canonical networks that
recombining the initial population's values can make: all GOMEA can ever reach, it has
no mutation); the trials answered without an evaluation (neutral: only inactive variables
changed; memo: a network known before); how the hypervolume gains split between
initial-population and mixing evaluations; distinct canonical genotypes per generation;
and the linkage NMI on raw vs canonicalised genotypes.

`--restart-elites 0` gives GOMEA's fully random restart of before (the library's
default since this diagnosis: half the restarted population from the archive).

Run: nice -n 10 .venv/bin/python benchmarks/gomea_diagnosis.py [--algorithms gomea,lk-gomea]
        [--seeds 0] [--budget 2000] [--p-stitch 0.02] [--restart-elites 0]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search_stitching as ss  # noqa: E402
from evostitch.evolution.algorithms import make_algorithm  # noqa: E402
from evostitch.evolution.algorithms.linkage import normalised_mutual_information  # noqa: E402
from evostitch.evolution.archive import reference_point_from  # noqa: E402
from evostitch.evolution.backend import SerialBackend  # noqa: E402
from evostitch.evolution.loop import run_search  # noqa: E402
from evostitch.evolution.stitching import problem_from_spec, problem_spec  # noqa: E402
from evostitch.evolution.store import RunConfig, RunStore  # noqa: E402
from evostitch.results.findings import hypervolume_box  # noqa: E402


def setup():
    name = "segmentation"
    folder = ss.OUT / name
    data = ss.build_supernet(name, folder)
    spec = problem_spec(folder / "supernet", data)
    problem, net = problem_from_spec(spec, device="cpu")
    key = f"{ss.folder_hash(folder / 'supernet')}|{data}|val"
    db = ss.open_cache(ss.OUT / "cache.sqlite")
    cached = ss.CachedObjectives(problem, problem.evaluate, db, key)
    refs = cached.evaluate_many(problem.references)
    ref_point = reference_point_from(refs)
    return problem, spec, cached, ref_point, hypervolume_box(ref_point)


def closure_size(problem, pop: list, limit: int = 1 << 14) -> int | str:
    """Distinct canonical networks made of the population's values per variable."""
    x = np.array(pop)
    varying = np.flatnonzero((x != x[:1]).any(axis=0)).tolist()
    values = [np.unique(x[:, v]).tolist() for v in varying]
    total = 1
    for v in values:
        total *= len(v)
    if total > limit:
        return f">{limit}"
    seen, g = set(), list(pop[0])
    for combination in itertools.product(*values):
        for v, value in zip(varying, combination, strict=True):
            g[v] = value
        seen.add(problem.canonicalise(g))
    return len(seen)


def mean_nmi(rows: np.ndarray, cards) -> tuple[int, float, float]:
    """(varying variables, mean and max NMI over their off-diagonal pairs)."""
    nmi = normalised_mutual_information(rows.astype(np.int64), cards)
    varying = np.flatnonzero(np.diag(nmi) > 0)
    if len(varying) < 2:
        return len(varying), 0.0, 0.0
    block = nmi[np.ix_(varying, varying)]
    off = block[~np.eye(len(varying), dtype=bool)]
    return len(varying), float(off.mean()), float(off.max())


def instrument(algo, problem, log):
    """Wrap the instance's restart / generation hooks and its proposals (kind of each ask)."""
    log.update(epochs=[], gens=[], kind={}, nmi=[])

    def epoch_start():
        pop = list(algo.pop_g)
        canon = [problem.canonicalise(g) for g in pop]
        x, xc = np.array(pop)[:, 1:], np.array(canon)[:, 1:]
        log["epochs"].append(
            {
                "told": len(log["kind"]),
                "ones_raw": int((x.sum(axis=0) > 0).sum()),
                "ones_active": int((xc.sum(axis=0) > 0).sum()),
                "closure": closure_size(problem, pop),
                "distinct": len(set(canon)),
            }
        )

    epoch_start()
    restart = algo._restart

    def _restart():
        restart()
        epoch_start()

    algo._restart = _restart

    new_generation = algo._new_generation

    def _new_generation():
        new_generation()
        pop = np.array(algo.parents)
        canon = np.array([problem.canonicalise(g) for g in algo.parents])
        cards = algo.cards
        log["gens"].append(
            {"told": len(log["kind"]), "distinct": len({tuple(r) for r in canon.tolist()})}
        )
        log["nmi"].append((mean_nmi(pop, cards), mean_nmi(canon, cards)))

    algo._new_generation = _new_generation

    propose = algo._propose

    def _propose():
        out = propose()
        if out is not None:
            c = problem.canonicalise(out[0])
            log["kind"].setdefault(c, "init" if "init" in out[1] else "mix")
        return out

    algo._propose = _propose


def run(problem, spec, cached, ref_point, box, algorithm, seed, budget, p_stitch, elites=None):
    log: dict = {}
    params = {"pop_size": 16, "budget": budget, "p_stitch": p_stitch, "steer_to": 0.5}
    if elites is not None and "gomea" in algorithm:
        params["restart_elites"] = elites
    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig(
            algorithm=algorithm, budget=budget, seed=seed, params=params, problem=spec
        )
        with RunStore.create(Path(tmp) / "run", config) as store:
            algo = make_algorithm(algorithm, problem, seed, **params)
            if hasattr(algo, "_restart"):
                instrument(algo, problem, log)
            backend = SerialBackend(lambda: cached, batch_size=ss.EVAL_BATCH)
            t0 = time.perf_counter()
            result = run_search(problem, algo, store, backend, budget, progress=False)
            seconds = time.perf_counter() - t0
            records = [r for r in store.records() if r.ok]
    objectives = [r.objectives for r in records]
    trace = ss.hv_trace(objectives, ref_point, box)
    return algo, result, records, trace, log, seconds


def report(name, algo, result, records, trace, log, seconds, problem) -> dict:
    n = len(records)
    out = {"hv": trace[-1], "n": n}
    print(f"\n== {name}: final HV {trace[-1]:.4f} after {n} evaluations ({seconds:.0f} s)")
    print(
        f"  loop: requested {result.requested}, performed {result.performed}, "
        f"loop cache hits {result.cache_hits}; algorithm memo hits {algo.memo_hits}"
        + (f", neutral changes {algo.neutral}" if hasattr(algo, "neutral") else "")
    )
    if not log:
        return out
    trials = algo.memo_hits + getattr(algo, "neutral", 0) + result.requested
    print(
        f"  trials answered without an evaluation: {trials - result.performed} of {trials} "
        f"({(trials - result.performed) / trials:.1%}): neutral "
        f"{getattr(algo, 'neutral', 0) / trials:.1%}, memo {algo.memo_hits / trials:.1%}, "
        f"loop cache {result.cache_hits / trials:.1%}; new networks {result.performed / trials:.1%}"
    )
    epochs = log["epochs"]
    bounds = [e["told"] for e in epochs] + [len(log["kind"])]
    lengths = [b - a for a, b in itertools.pairwise(bounds)]
    print(
        f"  restarts {algo.restarts}; new networks asked per epoch median "
        f"{statistics.median(lengths):.0f} [{min(lengths)}, {max(lengths)}]"
    )
    closures = [e["closure"] for e in epochs]
    numeric = [c for c in closures if isinstance(c, int)]
    print(
        "  initial populations: binary switches set to 1 in any member, median "
        f"{statistics.median(e['ones_raw'] for e in epochs):.0f} raw / "
        f"{statistics.median(e['ones_active'] for e in epochs):.0f} active of "
        f"{len(problem.cardinalities) - 1}; distinct canonical networks median "
        f"{statistics.median(e['distinct'] for e in epochs):.0f} of {algo.pop_size}; closure "
        f"(networks recombination can reach) median "
        f"{statistics.median(numeric) if numeric else '-'}"
        f" [{min(numeric, default='-')}, {max(numeric, default='-')}]"
        f"{'' if len(numeric) == len(closures) else f', {len(closures) - len(numeric)} larger'}"
    )
    kinds = [log["kind"].get(problem.canonicalise(r.genotype), "?") for r in records]
    init = kinds.count("init")
    gains = {"init": 0.0, "mix": 0.0, "?": 0.0}
    prev = 0.0
    for k, v in zip(kinds, trace, strict=True):
        gains[k] += v - prev
        prev = v
    on_front = {problem.canonicalise(r.genotype) for r in result.front}
    canon = [problem.canonicalise(r.genotype) for r in records]
    front = [k for k, c in zip(kinds, canon, strict=True) if c in on_front]
    late = {"init": 0.0, "mix": 0.0, "?": 0.0}  # after the first population
    p = algo.pop_size
    for k, a, b in zip(kinds[p:], trace[p - 1 :], trace[p:], strict=False):
        late[k] += b - a
    print(
        f"  evaluations from initial populations {init} ({init / n:.0%}), from mixing "
        f"{n - init}; HV gained by initial {gains['init']:.4f}, by mixing {gains['mix']:.4f}; "
        f"final front: {front.count('init')} initial, {front.count('mix')} mixing; after the "
        f"first {p}: HV gained by initial {late['init']:.4f}, by mixing {late['mix']:.4f}"
    )
    mix_per_epoch = [max(0, length - algo.pop_size) for length in lengths]
    print(
        f"  mixing evaluations per epoch median {statistics.median(mix_per_epoch):.0f}; "
        f"epochs with none: {sum(m == 0 for m in mix_per_epoch)} of {len(lengths)}"
    )
    gens = log["gens"]
    if gens:
        per_gen = [b["told"] - a["told"] for a, b in itertools.pairwise(gens)]
        print(
            f"  generations {len(gens)}; evaluations per generation median "
            f"{statistics.median(per_gen) if per_gen else 0:.0f} (NSGA-II: {algo.pop_size}); "
            f"distinct canonical parents per generation median "
            f"{statistics.median(g['distinct'] for g in gens):.0f} of {algo.pop_size}"
        )
        raw = [r for r, _ in log["nmi"]]
        can = [c for _, c in log["nmi"]]
        print(
            "  linkage input per generation (median): varying variables raw "
            f"{statistics.median(r[0] for r in raw):.0f} / canonical "
            f"{statistics.median(c[0] for c in can):.0f}; mean off-diagonal NMI raw "
            f"{statistics.median(r[1] for r in raw):.3f} / canonical "
            f"{statistics.median(c[1] for c in can):.3f}; max NMI raw "
            f"{statistics.median(r[2] for r in raw):.3f} / canonical "
            f"{statistics.median(c[2] for c in can):.3f}"
        )
    out.update(restarts=algo.restarts, epoch=statistics.median(lengths), init_share=init / n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algorithms", default="gomea,lk-gomea,nsga2")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--budget", type=int, default=2000)
    ap.add_argument("--p-stitch", type=float, default=0.02)
    ap.add_argument(
        "--restart-elites",
        type=float,
        default=None,
        help="GOMEA's restart_elites (default: the library's; 0: the fully random restart"
        " of before)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    problem, spec, cached, ref_point, box = setup()
    finals: dict[str, list[float]] = {}
    for algorithm in args.algorithms.split(","):
        for seed in map(int, args.seeds.split(",")):
            fresh = cached.fresh
            algo, result, records, trace, log, seconds = run(
                problem, spec, cached, ref_point, box, algorithm, seed, args.budget,
                args.p_stitch, args.restart_elites,
            )  # fmt: skip
            elites = getattr(algo, "restart_elites", None)
            name = f"{algorithm} p_stitch {args.p_stitch:g} restart_elites {elites}"
            report(f"{name} seed {seed}", algo, result, records, trace, log, seconds, problem)
            print(f"  ({cached.fresh - fresh} networks new to the persistent cache)", flush=True)
            finals.setdefault(name, []).append(trace[-1])
    print()
    for name, values in finals.items():
        print(
            f"{name}: final HV median {statistics.median(values):.4f} "
            f"[{min(values):.4f}, {max(values):.4f}] over {len(values)} seeds"
        )


if __name__ == "__main__":
    main()

"""What a run shows, in numbers: ``findings.json`` and the Findings section of report.html.

Findings are measured on the held-out split when the run was re-evaluated
(``reevaluation_test.json``: its front and reference solutions only), otherwise on the
split the search used (every evaluated solution); each finding names its `split`. The
task metric is maximised, MACs are minimised. An offspring is any solution that is not a
reference solution (parent-a, parent-b, ... one per parent, ensemble, ensemble-prob: see
`evostitch.results.solutions.reference_names`).

- ``dominating_offspring``: offspring with a strictly better metric than a parent (any
  of the run's K parents) at no more MACs; their number per parent and the best of them
  (highest metric, then fewest MACs), compared with the strongest parent it dominates;
- ``ensemble_like``: the cheapest offspring whose metric is at least the better
  ensemble's (ensemble or ensemble-prob), and the MACs it saves against that ensemble;
- ``stitches_hold``: the figure stored beside the supernetwork when its stitches were
  fitted (`evaluation.holding`): random offspring at p = 0.02 and 0.1 against the same
  offspring with untrained stitches, as a fraction of the parents' mean;
- ``inactive_variables``: the share of the search's proposals answered by a lookup by
  canonical genotype instead of an evaluation (the loop's cache and the algorithm's
  memo, counted in checkpoint.json: the store keeps a row per distinct network, not per
  proposal), and the stored rows whose proposed genotype set inactive variables;
- ``val_test_gap``: per front member, its metric on the search split minus its metric on
  the held-out split (both from the re-evaluation), median and max; ECE on the held-out
  split where the re-evaluation recorded it, and its median after temperature scaling
  where it was calibrated (``reevaluate --calibrate``);
- ``hypervolume``: final hypervolume (a fraction of the box of `hypervolume_box`) and
  evaluations of each run given to `evostitch report`, by algorithm and seed;
- ``racing``: of a raced search (`search --fidelity race`), the offspring raced, those
  stopped early, the images scored and the images saved against scoring every raced
  offspring on the whole split (zeros for a run not raced).

Lists of solutions are cut to the first `MAX_LISTED` (best first); counts are complete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any

from ..evolution.archive import box_volume, hypervolume, nondominated
from ..evolution.race_front import race_counts
from ..evolution.stitching import IDEAL
from ..evolution.store import EvaluationRecord, RunConfig
from .findings_text import TEXTS
from .solutions import TWO_PARENTS, parent_names, reference_name

ENSEMBLES = ("ensemble", "ensemble-prob")
KEYS = (
    "dominating_offspring",
    "ensemble_like",
    "stitches_hold",
    "inactive_variables",
    "val_test_gap",
    "hypervolume",
    "racing",
)
MAX_LISTED = 100


@dataclass(frozen=True)
class Scored:
    """One solution scored on one split; `name` is its reference name (None: an offspring)."""

    label: str
    id: int | None
    name: str | None
    metric: float
    macs: float

    def brief(self) -> dict[str, Any]:
        return {"label": self.label, "id": self.id, "metric": self.metric, "macs": self.macs}


def scored_solutions(
    records: Sequence[EvaluationRecord],
    reeval: dict | None = None,
    search_split: str = "val",
    output_choices: Sequence[str] = TWO_PARENTS,
) -> tuple[str, list[Scored]]:
    """The split the findings are measured on and the solutions scored there: the
    re-evaluated ones on the held-out split, else every successful record on the search's
    (named by the supernetwork's `output_choices`)."""
    if reeval:
        split, metric = reeval["split"], reeval["metric"]
        return split, [
            Scored(s["label"], s["id"], s["name"], s[split][metric], s[split]["macs"])
            for s in reeval["solutions"]
        ]
    solutions = []
    for r in records:
        if r.ok:
            name = reference_name(r.canonical, output_choices)
            solutions.append(
                Scored(name or str(r.id), r.id, name, -r.objectives[0], r.objectives[1])
            )
    return search_split, solutions


def _rank(s: Scored) -> tuple:
    return (-s.metric, s.macs, s.label)


def _labels(solutions: list[Scored]) -> list[str]:
    return [s.label for s in solutions[:MAX_LISTED]]


def dominating_offspring(
    solutions: Sequence[Scored],
    split: str,
    pool: str = "evaluated",
    parents: Sequence[str] = parent_names(),
) -> dict[str, Any]:
    """Offspring with a strictly better metric than a parent at no more MACs than it;
    `pool` says which offspring were compared (for the sentence), `parents` the run's
    parents' reference names (`parent_names`)."""
    refs = {s.name: s for s in solutions if s.name}
    offspring = [s for s in solutions if s.name is None]
    by_parent, dominated = {}, {}
    for name in parents:
        if (parent := refs.get(name)) is None:
            continue
        beat = sorted(
            (o for o in offspring if o.metric > parent.metric and o.macs <= parent.macs), key=_rank
        )
        by_parent[name] = {"parent": parent.brief(), "count": len(beat), "solutions": _labels(beat)}
        for o in beat:
            dominated.setdefault(o.label, (o, []))[1].append(name)
    winners = sorted((o for o, _ in dominated.values()), key=_rank)
    best = None
    if winners:
        parents = dominated[winners[0].label][1]
        against = max((refs[n] for n in parents), key=lambda p: (p.metric, -p.macs))
        best = winners[0].brief() | {"dominates": parents, "against": against.name}
    return {
        "split": split,
        "pool": pool,
        "offspring": len(offspring),
        "count": len(winners),
        "solutions": _labels(winners),
        "by_parent": by_parent,
        "missing_parents": [n for n in parents if n not in refs],
        "best": best,
    }


def ensemble_like(
    solutions: Sequence[Scored], split: str, pool: str = "evaluated"
) -> dict[str, Any]:
    """The cheapest offspring at least as good as the better ensemble, and its saving."""
    offspring = [s for s in solutions if s.name is None]
    ensembles = [s for s in solutions if s.name in ENSEMBLES]
    out: dict[str, Any] = {
        "split": split,
        "pool": pool,
        "offspring": len(offspring),
        "ensembles": {e.name: e.brief() for e in ensembles},
        "best_offspring": min(offspring, key=_rank).brief() if offspring else None,
        "count": 0,
        "solutions": [],
    } | dict.fromkeys(("bar", "solution", "saving_macs", "saving_fraction"))
    if not ensembles:
        return out
    bar = max(ensembles, key=lambda e: (e.metric, -e.macs))
    reach = sorted(
        (o for o in offspring if o.metric >= bar.metric), key=lambda o: (o.macs, *_rank(o))
    )
    out |= {
        "bar": bar.brief() | {"name": bar.name},
        "count": len(reach),
        "solutions": _labels(reach),
    }
    if reach:
        saving = bar.macs - reach[0].macs
        out |= {
            "solution": reach[0].brief(),
            "saving_macs": saving,
            "saving_fraction": saving / bar.macs if bar.macs else None,
        }
    return out


def inactive_variables(
    stored: Sequence[EvaluationRecord], checkpoint: dict | None, split: str
) -> dict[str, Any]:
    """Proposals answered by canonical genotype (from the checkpoint's counters, None
    without one) and stored rows (failed ones too) proposed with inactive variables set."""
    changed = [r for r in stored if tuple(r.genotype) != tuple(r.canonical)]
    rows = len(stored)
    out: dict[str, Any] = {
        "split": split,
        "evaluations": rows,
        "noncanonical_evaluations": len(changed),
        "noncanonical_share": len(changed) / rows if rows else None,
        "solutions": [str(r.id) for r in changed[:MAX_LISTED]],
    } | dict.fromkeys(("proposals", "cache_hits", "memo_hits", "answered_from_cache", "share"))
    counters = (checkpoint or {}).get("counters")
    if counters and isinstance(counters, dict):
        # as the loop resumes: rows stored after the checkpoint were requested too
        requested = _count(counters.get("requested"))
        requested += max(0, rows - _count(checkpoint.get("rows")))
        state = checkpoint.get("state")
        memo = _count(state.get("memo_hits") if isinstance(state, dict) else 0)
        hits = _count(counters.get("cache_hits"))
        proposals = requested + memo
        out |= {
            "proposals": proposals,
            "cache_hits": hits,
            "memo_hits": memo,
            "answered_from_cache": hits + memo,
            "share": (hits + memo) / proposals if proposals else None,
        }
    return out


def _count(value: Any) -> int:
    """A counter read from a checkpoint: a non-negative integer, else 0 (never a crash)."""
    return value if type(value) is int and value >= 0 else 0


def val_test_gap(
    records: Sequence[EvaluationRecord], reeval: dict | None, search_split: str = "val"
) -> dict[str, Any]:
    """Search-split metric minus held-out metric of every re-evaluated front member."""
    out: dict[str, Any] = {"split": reeval["split"] if reeval else search_split}
    out |= {"search_split": search_split, "count": 0, "median_gap": None, "max_gap": None}
    out |= {"worst": None, "median_ece": None, "max_ece": None, "median_ece_calibrated": None}
    out |= {"members": [], "missing": []}
    if not reeval:
        return out
    split, search, metric = reeval["split"], reeval["search_split"], reeval["metric"]
    rows = {s["id"]: s for s in reeval["solutions"] if s["id"] is not None}
    for r in sorted(nondominated(records), key=lambda r: r.objectives[1]):
        if (row := rows.get(r.id)) is None:
            out["missing"].append(str(r.id))
            continue
        val, test = row.get(search, {}).get(metric, -r.objectives[0]), row[split][metric]
        member = {"label": row["label"], "id": r.id, "val": val, "test": test}
        member |= {"gap": val - test, "ece": row[split].get("ece")}
        out["members"].append(member | {"ece_calibrated": row[split].get("ece_calibrated")})
    members = out["members"]
    if members:
        gaps = [m["gap"] for m in members]
        eces = [m["ece"] for m in members if m["ece"] is not None]
        worst = max(members, key=lambda m: m["gap"])
        out |= {"count": len(members), "median_gap": median(gaps), "max_gap": worst["gap"]}
        out["worst"] = worst["label"]
        if eces:
            out |= {"median_ece": median(eces), "max_ece": max(eces)}
        if all(m["ece_calibrated"] is not None for m in members):
            out["median_ece_calibrated"] = median([m["ece_calibrated"] for m in members])
    return out


def hypervolume_box(ref_point: Sequence[float]) -> float:
    """The volume between (metric 1, 0 MACs) and the reference point (1.0 if that is 0)."""
    return box_volume(ref_point, IDEAL)


def hypervolume_by_run(
    runs: Sequence[tuple[str, RunConfig, Sequence[EvaluationRecord]]],
    ref_point: Sequence[float] | None,
    split: str = "val",
) -> dict[str, Any]:
    """Final hypervolume (fraction of `hypervolume_box`) and evaluations of each run
    (no run without a reference point)."""
    entries = []
    for label, config, records in runs if ref_point else ():
        box = hypervolume_box(ref_point)
        front = [r.objectives for r in nondominated(records)]
        volume = hypervolume(front, ref_point) / box if front else 0.0
        entries.append(
            {
                "label": label,
                "algorithm": config.algorithm,
                "seed": config.seed,
                "evaluations": len(records),
                "hypervolume": volume,
            }
        )
    by_algorithm: dict[str, dict[str, Any]] = {}
    for e in entries:
        group = by_algorithm.setdefault(e["algorithm"], {"seeds": [], "hypervolumes": []})
        group["seeds"].append(e["seed"])
        group["hypervolumes"].append(e["hypervolume"])
    for group in by_algorithm.values():
        group["median_hypervolume"] = median(group["hypervolumes"])
    return {
        "split": split,
        "ref_point": list(ref_point) if ref_point else None,
        "runs": entries,
        "by_algorithm": by_algorithm,
    }


def compute_findings(
    records: Sequence[EvaluationRecord],
    reeval: dict | None = None,
    *,
    search_split: str = "val",
    metric: str = "metric",
    stored: Sequence[EvaluationRecord] | None = None,
    checkpoint: dict | None = None,
    runs: Sequence[tuple[str, RunConfig, Sequence[EvaluationRecord]]] = (),
    ref_point: Sequence[float] | None = None,
    hold: dict | None = None,
    output_choices: Sequence[str] = TWO_PARENTS,
) -> dict[str, Any]:
    """Every finding of a run (`KEYS`), each with a one-sentence `text`.

    `records`: the run's successful evaluations; `stored`: all its rows, failed ones too
    (default `records`); `runs` (label, config, records) with `ref_point`: the runs whose
    hypervolumes are compared (none without a reference point); `hold`: the supernetwork's
    stored "stitches hold" figure (`evaluation.holding`), None if it has none;
    `output_choices`: the supernetwork's (they name the reference solutions and parents).
    """
    split, solutions = scored_solutions(records, reeval, search_split, output_choices)
    pool = "re-evaluated" if reeval else "evaluated"
    parents = parent_names(output_choices)
    findings = {
        "dominating_offspring": dominating_offspring(solutions, split, pool, parents),
        "ensemble_like": ensemble_like(solutions, split, pool),
        "stitches_hold": {**(hold or {}), "measured": hold is not None, "split": "val"},
        "inactive_variables": inactive_variables(
            records if stored is None else stored, checkpoint, search_split
        ),
        "val_test_gap": val_test_gap(records, reeval, search_split),
        "hypervolume": hypervolume_by_run(runs, ref_point, search_split),
        "racing": {**race_counts(records if stored is None else stored), "split": search_split},
    }
    for key, finding in findings.items():
        finding["text"] = TEXTS[key](finding, metric)
    head = {"format": "evostitch-findings", "version": 1, "split": split}
    return {**head, "search_split": search_split, "metric": metric, **findings}


def finding_texts(findings: dict[str, Any]) -> list[str]:
    """The findings' sentences, in the order of `KEYS`."""
    return [findings[key]["text"] for key in KEYS]

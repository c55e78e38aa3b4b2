"""The findings' sentences: one per finding, from its numbers (`evostitch.results.findings`)."""

from __future__ import annotations


def _m(value: float) -> str:
    return f"{value:.4g}"


def _mmacs(macs: float) -> str:
    return f"{macs / 1e6:.3g} MMACs"


def _pool(f: dict) -> str:
    return f"{f['offspring']} {f['pool']} offspring"


def _named(label: str) -> str:
    return f"#{label}" if label.isdigit() else label


def _dominating_text(f: dict, metric: str) -> str:
    if not f["by_parent"]:
        return f"No parent was evaluated on {f['split']}: no offspring to compare with them."
    counts = ", ".join(f"{p['count']} {name}" for name, p in f["by_parent"].items())
    if not f["count"]:
        return f"No offspring dominates a parent on {f['split']} ({_pool(f)} compared)."
    best = f["best"]
    parent = f["by_parent"][best["against"]]["parent"]
    verb = "dominates" if f["count"] == 1 else "dominate"
    return (
        f"{f['count']} of {_pool(f)} {verb} a parent on {f['split']} ({counts}); the best,"
        f" #{best['label']}, reaches {metric} {_m(best['metric'])} at {_mmacs(best['macs'])}"
        f" against {best['against']}'s {_m(parent['metric'])} at {_mmacs(parent['macs'])}."
    )


def _ensemble_text(f: dict, metric: str) -> str:
    if f["bar"] is None:
        return f"No ensemble was evaluated on {f['split']}: no ensemble-like offspring."
    bar = f["bar"]
    ens = f"the {bar['name']} ({metric} {_m(bar['metric'])} at {_mmacs(bar['macs'])})"
    if f["solution"] is None:
        best = f["best_offspring"]
        reached = f"; the best offspring reaches {_m(best['metric'])}" if best else ""
        return f"No offspring is as good as {ens} on {f['split']}{reached}."
    s, verb = f["solution"], "reaches" if f["count"] == 1 else "reach"
    share = f["saving_fraction"]  # None when the ensemble costs no MACs (a crafted run)
    return (
        f"{f['count']} offspring {verb} {ens} on {f['split']}; the cheapest,"
        f" #{s['label']}, reaches {_m(s['metric'])} at {_mmacs(s['macs'])}:"
        f" {_mmacs(f['saving_macs'])}" + (f" ({share:.0%})" if share is not None else "") + " less."
    )


def _inactive_text(f: dict, metric: str) -> str:
    rows = (
        f"{f['noncanonical_evaluations']} of the {f['evaluations']} evaluated networks were"
        " proposed with inactive variables set"
    )
    if f["proposals"] is None:
        return f"The run has no checkpoint: its cache hits are unknown; {rows}."
    share = f"{f['share']:.0%}" if f["share"] is not None else "none"
    return (
        f"{share} of {f['proposals']} proposals were answered by canonical genotype without"
        f" an evaluation ({f['cache_hits']} by the run's cache, {f['memo_hits']} by the"
        f" algorithm's memo); {rows}."
    )


def _gap_text(f: dict, metric: str) -> str:
    if f["split"] == f["search_split"]:
        return "Not re-evaluated: no validation -> test gap (`evostitch reevaluate RUN`)."
    if not f["count"]:
        return f"No front member was re-evaluated on {f['split']}."
    text = (
        f"Validation -> test gap of {f['count']} front members ({metric} on"
        f" {f['search_split']} minus on {f['split']}): median {f['median_gap']:+.4f},"
        f" max {f['max_gap']:+.4f} ({_named(f['worst'])})"
    )
    if f["median_ece"] is not None:
        text += f"; ECE on {f['split']}: median {f['median_ece']:.4f}, max {f['max_ece']:.4f}"
    if f.get("median_ece_calibrated") is not None:
        text += f"; median ECE {f['median_ece']:.4f} -> {f['median_ece_calibrated']:.4f} after"
        text += f" temperature scaling fitted on {f['search_split']}"
    return text + "."


def _hypervolume_text(f: dict, metric: str) -> str:
    if not f["runs"]:
        return "No hypervolume: no reference point."
    parts = [f"{r['label']}: {r['hypervolume']:.4f} after {r['evaluations']}" for r in f["runs"]]
    return "Final hypervolume (fraction of the box) after evaluations: " + "; ".join(parts) + "."


def _hold_text(f: dict, metric: str) -> str:
    if f["measured"]:
        text = f.get("text")  # the figure's own sentence, read from the supernetwork folder
        text = " ".join(text.split())[:300] if isinstance(text, str) else "(no summary stored)"
        crossings = f.get("transitions")
        more = f" {' '.join(crossings.split())[:400]}" if isinstance(crossings, str) else ""
        return f"Stitches hold (stored at stitch time): {text}{more}"
    return "Stitches hold: not measured for this supernetwork (`evostitch stitch --hold-samples`)."


def _racing_text(f: dict, metric: str) -> str:
    if not f["raced"]:
        return "Racing: off (every offspring scored on the whole split)."
    full = f["images"] + f["saved"]
    share = f["saved"] / full if full else 0.0
    return (
        f"Racing: {f['stopped']} of {f['raced']} raced offspring stopped early, "
        f"{f['saved']:,} images saved ({share:.0%} of scoring all of them in full)."
    )


TEXTS = {
    "dominating_offspring": _dominating_text,
    "ensemble_like": _ensemble_text,
    "stitches_hold": _hold_text,
    "inactive_variables": _inactive_text,
    "val_test_gap": _gap_text,
    "hypervolume": _hypervolume_text,
    "racing": _racing_text,
}

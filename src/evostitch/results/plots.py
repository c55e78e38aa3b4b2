"""The report's PNG plots and the view of the front that they and report.html share.

- ``front.png``: the region that matters (`front_view`): the front, the parents and
  ensembles and the offspring near them; the offspring below it are counted on the figure;
- ``front_full.png``: every evaluated offspring;
- ``hypervolume.png``: hypervolume over evaluations, one line per run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path
from typing import Any

import numpy as np

from ..evolution.archive import dominates, hypervolume, nondominated, weakly_dominates
from ..evolution.store import EvaluationRecord
from ..files import save_output
from .findings import hypervolume_box

PARENT_MARKERS = "s^<>ph*XP8"  # one per parent (cycled past ten), in their order
ENSEMBLE_MARKERS = "Dv"  # the ensembles of all parents ("ensemble", "ensemble (prob...)")
SUB_ENSEMBLE_MARKER = "d"  # a subset's ("ensemble A+B", K >= 3)
HV_POINTS = 300  # evaluations at which the hypervolume is computed
BELOW = 1.0  # the view reaches below the lowest front/reference metric by their metric span
PAD = 0.06  # margin around the points shown, a fraction of their range (as report.html's)


def save_figure(fig: Any, path: Path) -> Path:
    """`fig` as a PNG at `path` (`save_output`; the format is given: the temporary file's
    name ends in .tmp)."""
    return save_output(path, lambda tmp: fig.savefig(tmp, format="png"))


@dataclass(frozen=True)
class FrontView:
    """Limits of the front plot (MACs, metric) and how many offspring lie below them."""

    x: tuple[float, float]
    y: tuple[float, float]
    outside: int


def _padded(lo: float, hi: float) -> tuple[float, float]:
    d = (hi - lo) * PAD or abs(hi) * PAD or 1.0
    return lo - d, hi + d


def front_view(
    records: Sequence[EvaluationRecord],
    references: dict[str, tuple],
    keep: Sequence[EvaluationRecord] = (),
) -> FrontView:
    """The region that matters: every metric from `BELOW` spans under the lowest of the
    front and the references (and `keep`, e.g. other runs' fronts) up to the best, padded;
    MACs over everything shown. A search spends most evaluations on poor offspring, and
    drawn, they squash the front into a line; they are counted in `outside` instead.
    Without a front or references (every full evaluation failed, only offspring stopped
    early by racing are left), every offspring is shown."""
    marks = [r.objectives for r in [*nondominated(records), *keep]] + list(references.values())
    marks = marks or [r.objectives for r in records if r.ok]
    if not marks:
        return FrontView((0.0, 1.0), (0.0, 1.0), 0)
    metrics = [-o[0] for o in marks]
    lo, hi = min(metrics), max(metrics)
    span = (hi - lo) or abs(hi) * 0.02 or 1.0  # one point (or equal ones): 2% of its metric
    lowest = min([-r.objectives[0] for r in records if r.ok] + [lo])
    y = _padded(max(lo - BELOW * span, lowest), hi)
    inside = [r.objectives for r in records if r.ok and -r.objectives[0] >= y[0]]
    macs = [o[1] for o in inside + marks]
    return FrontView(_padded(min(macs), max(macs)), y, len(records) - len(inside))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _markers(labels: Sequence[str]) -> list[str]:
    """A marker per reference label: the parents' in order, then the ensembles' (for two
    parents: square, triangle, diamond, triangle down)."""
    parents, ensembles = cycle(PARENT_MARKERS), cycle(ENSEMBLE_MARKERS)
    return [
        SUB_ENSEMBLE_MARKER
        if "+" in s
        else next(ensembles if s.startswith("ensemble") else parents)
        for s in labels
    ]


def plot_front(
    records: list[EvaluationRecord],
    references: dict[str, tuple],
    path: Path,
    others: list[tuple[str, list[EvaluationRecord]]] = (),
    *,
    zoom: bool = True,
) -> Path:
    """The offspring (faded), the front (highlighted), the references marked: in the
    region that matters (`front_view`, the offspring below it counted) or, without
    `zoom`, every offspring."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    drawn = records
    if zoom:
        view = front_view(records, references, [f for _, o in others for f in nondominated(o)])
        drawn = [r for r in records if -r.objectives[0] >= view.y[0]]
        ax.set_xlim(view.x[0] / 1e6, view.x[1] / 1e6)
        ax.set_ylim(*view.y)
        if view.outside:
            ax.set_title(
                f"{view.outside} of {len(records)} offspring below this view "
                f"(all in {path.stem}_full{path.suffix})",
                fontsize=9,
            )
    ax.scatter(
        [r.objectives[1] / 1e6 for r in drawn],
        [-r.objectives[0] for r in drawn],
        s=8,
        alpha=0.25,
        color="grey",
        label="offspring",
    )
    for (label, recs), color in zip(
        [("front", records), *others], plt.cm.tab10.colors, strict=False
    ):
        front = sorted(nondominated(recs), key=lambda r: r.objectives[1])
        xs, ys = [r.objectives[1] / 1e6 for r in front], [-r.objectives[0] for r in front]
        ax.step(xs, ys, where="post", color=color, marker="o", ms=4, label=label)
    for (name, objectives), marker in zip(references.items(), _markers(references), strict=True):
        ax.scatter(objectives[1] / 1e6, -objectives[0], marker=marker, s=60, zorder=3, label=name)
    ax.set_xlabel("MMACs per input")
    ax.set_ylabel("validation metric")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def hypervolume_trace(
    records: list[EvaluationRecord], ref_point: tuple[float, ...], points: int = HV_POINTS
) -> tuple[list[int], list[float]]:
    """Hypervolume of the front after each of up to `points` evaluation counts (row ids)."""
    marks = set(np.linspace(0, len(records) - 1, min(len(records), points)).round().astype(int))
    front: list[tuple[float, ...]] = []
    xs, ys = [], []
    for k, r in enumerate(records):
        f = r.objectives
        if not any(weakly_dominates(q, f) for q in front):
            front = [q for q in front if not dominates(f, q)] + [f]
        if k in marks:
            xs.append(r.id)
            ys.append(hypervolume(front, ref_point))
    return xs, ys


def plot_hypervolume(
    runs: list[tuple[str, list[EvaluationRecord]]], ref_point: tuple[float, ...], path: Path
) -> tuple[Path, dict[str, float]]:
    """One line per run; returns the path and each run's final (normalised) hypervolume."""
    plt = _pyplot()
    box = hypervolume_box(ref_point)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    final = {}
    for label, recs in runs:
        xs, ys = hypervolume_trace(recs, ref_point)
        ax.plot(xs, [y / box for y in ys], label=label, drawstyle="steps-post")
        final[label] = ys[-1] / box if ys else 0.0
    ax.set_xlabel("evaluations")
    ax.set_ylabel("hypervolume (fraction of box)")
    ax.set_title(
        f"reference point: metric {-ref_point[0]:.4g}, {ref_point[1] / 1e6:.4g} MMACs", fontsize=9
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        return save_figure(fig, path), final
    finally:
        plt.close(fig)

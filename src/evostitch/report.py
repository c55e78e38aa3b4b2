"""Reports of a search run: the front as CSV and as a plot (metric against MACs)."""

from __future__ import annotations

import csv
from pathlib import Path

from .search.loop import nondominated
from .search.store import EvaluationRecord, RunStore


def load_records(run: str | Path) -> list[EvaluationRecord]:
    with RunStore.open(run, readonly=True) as store:
        return [r for r in store.records() if r.ok]


def write_front_csv(records: list[EvaluationRecord], path: Path) -> Path:
    front = sorted(nondominated(records), key=lambda r: r.objectives[1])
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "metric", "macs", "genotype"])
        for r in front:
            genotype = "".join(map(str, r.canonical))
            writer.writerow([r.id, -r.objectives[0], r.objectives[1], genotype])
    return path


def plot_front(records: list[EvaluationRecord], references: dict[str, tuple], path: Path) -> Path:
    """Every evaluated offspring (faded), the front (highlighted), the references marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter(
        [r.objectives[1] / 1e6 for r in records],
        [-r.objectives[0] for r in records],
        s=8,
        alpha=0.25,
        color="grey",
        label="offspring",
    )
    front = sorted(nondominated(records), key=lambda r: r.objectives[1])
    ax.step(
        [r.objectives[1] / 1e6 for r in front],
        [-r.objectives[0] for r in front],
        where="post",
        color="tab:blue",
        marker="o",
        ms=4,
        label="front",
    )
    for (name, objectives), marker in zip(references.items(), "s^Dv", strict=False):
        ax.scatter(objectives[1] / 1e6, -objectives[0], marker=marker, s=60, zorder=3, label=name)
    ax.set_xlabel("MMACs per input")
    ax.set_ylabel("validation metric")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(run: str | Path, references: dict[str, tuple] | None = None) -> list[Path]:
    """Write front.csv and front.png into the run folder; return their paths."""
    run = Path(run)
    records = load_records(run)
    references = references or {}
    return [
        write_front_csv(records, run / "front.csv"),
        plot_front(records, references, run / "front.png"),
    ]

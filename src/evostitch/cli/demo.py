"""The demo command: the whole pipeline on bundled real data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .. import api
from ..demo import run_demo
from ..devices import torch_threads
from ..errors import EvostitchError
from ..files import expand_user
from ..training import TrainSettings
from .app import ALGORITHM_HELP, app

DEFAULT_ALGORITHM = api.DEFAULT_ALGORITHM
TASKS = ("classification", "segmentation")


@app.command()
def demo(
    task: Annotated[str, typer.Option(help="classification (MNIST) or segmentation (nuclei).")] = (
        "classification"
    ),
    out: Annotated[Path, typer.Option("--out", help="Output folder.", callback=expand_user)] = Path(
        "evostitch-demo"
    ),
    algorithm: Annotated[str, typer.Option(help=ALGORITHM_HELP)] = DEFAULT_ALGORITHM,
    budget: Annotated[int, typer.Option(help="Offspring evaluations in the search.")] = 250,
    steps: Annotated[
        int, typer.Option(help="Gradient steps of stitch training after the least-squares fit.")
    ] = 0,
    downstream_steps: Annotated[
        int | None,
        typer.Option(
            help="Steps training all stitches together on random offspring toward the "
            "parents' output (default 0: none; docs/METHOD.md section 4)."
        ),
    ] = None,
    population: Annotated[int, typer.Option(help="Search population size.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of stitch training and search.")] = 0,
    cache: Annotated[
        Path | None, typer.Option(help="Where trained parents are cached.", callback=expand_user)
    ] = None,
    threads: Annotated[
        int, typer.Option(help="CPU threads for torch (0: torch's default; small models: 1).")
    ] = 1,
) -> None:
    """Train two small parents on bundled real data, stitch them, search, report
    (about 4 minutes on two CPU cores with the parents cached, 1-2 more to train them)."""
    if task not in TASKS:
        raise EvostitchError(f"unknown --task {task!r}: classification or segmentation")
    if budget < 1 or steps < 0 or population < 2 or threads < 0 or (downstream_steps or 0) < 0:
        raise EvostitchError(
            "need --budget >= 1, --steps >= 0, --downstream-steps >= 0, --population >= 2 "
            "and --threads >= 0"
        )
    # the models are small: on a busy CPU more threads mostly wait for each other (10x seen)
    with torch_threads(threads or None):
        summary = run_demo(
            task,
            out,
            algorithm=algorithm,
            budget=budget,
            population=population,
            training=TrainSettings(steps=steps, downstream=downstream_steps),
            seed=seed,
            cache_dir=cache,
        )
    print_summary(summary)


def print_summary(summary: dict) -> None:
    out = Console()
    metric = summary["metric"]
    title = f"evostitch demo ({summary['task']})"
    table = Table("", f"validation {metric}", f"test {metric}", "MMACs", title=title)
    rows = {**summary["references"], "best offspring": summary["best"]}
    for name, row in rows.items():
        table.add_row(
            name, f"{row['metric']:.4f}", f"{row['test_metric']:.4f}", f"{row['macs'] / 1e6:.3f}"
        )
    out.print(table)
    best = summary["best"]
    where = "on the front" if best["on_front"] else "dominated, not on the front"
    out.print(f"best offspring ({where}): {best['description']}", soft_wrap=True)
    out.print(
        f"front: {summary['front_size']} networks, {summary['front_stitched']} of them "
        f"stitched offspring; {summary['evaluations']} evaluations; "
        f"{summary['seconds']:.0f} s in all."
    )
    if summary.get("findings"):
        out.print("[bold]findings[/bold] (test split; the search saw only validation):")
        for text in summary["findings"].values():
            out.print(f"  - {text}", soft_wrap=True, highlight=False)
    out.print("files:")
    for name, path in summary["files"].items():
        out.print(f"  {name}: {path}", soft_wrap=True, highlight=False)

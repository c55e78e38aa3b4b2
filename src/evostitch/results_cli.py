"""Commands for the results of a search: report, reevaluate, finetune, export.

`register(app)` adds them to the `evostitch` command line (a thin layer: the work is
done in `report`, `reevaluate`, `finetune` and `export`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .errors import EvostitchError
from .paths import expand_user

RunArg = Annotated[Path, typer.Argument(help="A search run folder.", callback=expand_user)]
SolutionOpt = Annotated[
    str,
    typer.Option(
        "--solution", help="Row id in the run store, or parent-a, parent-b, ensemble(-prob)."
    ),
]
DeviceOpt = Annotated[str | None, typer.Option(help="torch device; default: cuda if available.")]


def report(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="Run folders; files go into the first, others compared.", callback=expand_user
        ),
    ],
) -> None:
    """Write front.csv, front.png, hypervolume.png and report.html into the (first) run."""
    from .report import write_report

    for path in write_report(runs[0], others=runs[1:]):
        Console().print(f"  {path}")


def reevaluate(
    run: RunArg,
    split: Annotated[str, typer.Option(help="Held-out split to score on.")] = "test",
    batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 256,
    device: DeviceOpt = None,
) -> None:
    """Score the front and the reference solutions on a held-out split (with ECE)."""
    from .reevaluate import reevaluate as run_reevaluation

    if batch_size < 1:
        raise EvostitchError("need --batch-size >= 1")
    data = _read_json(run_reevaluation(run, split, batch_size=batch_size, device=device))
    metric, searched = data["metric"], data["search_split"]
    columns = ["solution", f"{metric} ({searched})", f"{metric} ({split})", "gap"]
    if data["task"] == "classification":
        columns += [f"ECE ({searched})", f"ECE ({split})"]
    table = Table(*columns, "MMACs", title=f"re-evaluated on {split}")
    for row in data["solutions"]:
        val, test = row[searched], row[split]
        cells = [row["label"], f"{val[metric]:.4f}", f"{test[metric]:.4f}"]
        cells.append(f"{test[metric] - val[metric]:+.4f}")
        if data["task"] == "classification":
            cells += [f"{val['ece']:.4f}", f"{test['ece']:.4f}"]
        table.add_row(*cells, f"{test['macs'] / 1e6:.3f}")
    Console().print(table)
    Console().print(f"written to {Path(run) / f'reevaluation_{split}.json'}")


def finetune(
    run: RunArg,
    solution: SolutionOpt,
    epochs: Annotated[float, typer.Option(help="Passes over the train split.")] = 1.0,
    max_batches: Annotated[
        int | None, typer.Option(help="Stop after this many batches (the paper: 1000).")
    ] = None,
    stitches_only: Annotated[
        bool, typer.Option("--stitches-only", help="Train only the stitches.")
    ] = False,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-4,
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the batch order.")] = 0,
    device: DeviceOpt = None,
) -> None:
    """Fine-tune one offspring on the train split; save its weights under RUN/finetuned/."""
    from .finetune import finetune_solution

    if epochs <= 0 or batch_size < 1 or lr <= 0 or (max_batches is not None and max_batches < 1):
        raise EvostitchError("need --epochs > 0, --batch-size >= 1, --lr > 0, --max-batches >= 1")
    summary = finetune_solution(
        run,
        solution,
        device=device,
        epochs=epochs,
        max_batches=max_batches,
        stitches_only=stitches_only,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
    )
    table = Table("split", "metric", "before", "after", title=f"fine-tuned {summary['solution']}")
    for split, before in summary["before"].items():
        for name, value in before.items():
            if name != "n":
                table.add_row(split, name, f"{value:.4f}", f"{summary['after'][split][name]:.4f}")
    Console().print(table)
    Console().print(f"{summary['batches']} batches; weights in {summary['folder']}")


def export(
    run: RunArg,
    solution: SolutionOpt,
    out: Annotated[
        Path, typer.Option("--out", help="Folder to write the offspring to.", callback=expand_user)
    ],
    finetuned: Annotated[
        bool, typer.Option("--finetuned", help="Export the weights saved by `finetune`.")
    ] = False,
    onnx: Annotated[
        bool, typer.Option("--onnx", help="Also write offspring.onnx (needs onnx, onnxscript).")
    ] = False,
) -> None:
    """Export one offspring as PyTorch code + safetensors weights (loads with torch alone)."""
    from .export import export_solution

    if (out / "offspring.py").exists():
        raise EvostitchError(f"{out} already holds an exported offspring: choose another --out")
    for path in export_solution(run, solution, out, finetuned=finetuned, onnx=onnx):
        Console().print(f"  {path}")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def register(app: typer.Typer) -> None:
    """Add the result commands to `app` (once: calling it again changes nothing)."""
    known = {c.name or c.callback.__name__ for c in app.registered_commands}
    for command in (report, reevaluate, finetune, export):
        if command.__name__ not in known:
            app.command()(command)

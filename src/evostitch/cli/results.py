"""Commands for the results of a search: report, reevaluate, finetune, export
(argument parsing and printing over `evostitch.api.Run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .. import api
from ..errors import EvostitchError
from ..files import expand_user
from .app import Amp, Device, TrustCode, app

RunArg = Annotated[Path, typer.Argument(help="A search run folder.", callback=expand_user)]
SolutionOpt = Annotated[
    str,
    typer.Option(
        "--solution",
        help="Row id in the run store, or parent-a, parent-b, ... (one per parent),"
        " ensemble(-prob).",
    ),
]


@app.command()
def report(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="Run folders; files go into the first, others compared.", callback=expand_user
        ),
    ],
    trust_code: TrustCode = False,
) -> None:
    """Write front.csv, front.png, hypervolume.png and report.html into the (first) run."""
    for path in api.load_run(runs[0], trust_code=trust_code).report(others=runs[1:]):
        Console().print(f"  {path}")


@app.command()
def reevaluate(
    run: RunArg,
    split: Annotated[str, typer.Option(help="Held-out split to score on.")] = "test",
    batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 256,
    device: Device = None,
    amp: Amp = None,
    trust_code: TrustCode = False,
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate",
            help="Also temperature-scale each solution (T fitted on the search split by"
            " NLL; classifiers only, else exit 2) and show its ECE before -> after.",
        ),
    ] = False,
) -> None:
    """Score the front and the reference solutions on a held-out split (with ECE)."""
    if batch_size < 1:
        raise EvostitchError("need --batch-size >= 1")
    data = api.load_run(run, trust_code=trust_code).reevaluate(
        split, batch_size=batch_size, device=device, amp=amp, calibrate=calibrate
    )
    metric, searched = data["metric"], data["search_split"]
    columns = ["solution", f"{metric} ({searched})", f"{metric} ({split})", "gap"]
    if calibrate:  # the held-out ECE before -> after, at T fitted on the search split
        columns += [f"ECE ({split})\nbefore -> after", f"T ({searched})"]
    elif data["task"] == "classification":
        columns += [f"ECE ({searched})", f"ECE ({split})"]
    table = Table(*columns, "MMACs", title=f"re-evaluated on {split}")
    if calibrate:
        table.columns[4].no_wrap = True  # "before -> after" on one line
    for row in data["solutions"]:
        val, test = row[searched], row[split]
        cells = [row["label"], f"{val[metric]:.4f}", f"{test[metric]:.4f}"]
        cells.append(f"{test[metric] - val[metric]:+.4f}")
        if calibrate:
            cells += [f"{test['ece']:.4f} -> {test['ece_calibrated']:.4f}"]
            cells.append(f"{row['temperature']:.3g}")
        elif data["task"] == "classification":
            cells += [f"{val['ece']:.4f}", f"{test['ece']:.4f}"]
        table.add_row(*cells, f"{test['macs'] / 1e6:.3f}")
    Console().print(table)
    Console().print(f"written to {Path(run) / f'reevaluation_{split}.json'}")


@app.command()
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
    device: Device = None,
    amp: Amp = None,
    trust_code: TrustCode = False,
) -> None:
    """Fine-tune one offspring on the train split; save its weights under RUN/finetuned/.

    Scored on the search's validation split before, during and after: the best state is
    kept, the starting one included, so the saved network is never worse there."""
    if epochs <= 0 or batch_size < 1 or lr <= 0 or (max_batches is not None and max_batches < 1):
        raise EvostitchError("need --epochs > 0, --batch-size >= 1, --lr > 0, --max-batches >= 1")
    summary = api.load_run(run, trust_code=trust_code).finetune(
        solution,
        device=device,
        amp=amp,
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
    val = summary["validation"]
    kept = val["kept_batch"]
    Console().print(
        f"{summary['batches']} batches; kept "
        + (f"batch {kept}" if kept else "the starting network (no batch scored higher)")
        + f", the best on {val['split']} ("
        + ", ".join(f"batch {k}: {v:.4f}" for k, v in val["scores"].items())
        + f"); weights in {summary['folder']}"
    )


@app.command()
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
    trust_code: TrustCode = False,
) -> None:
    """Export one offspring as PyTorch code + safetensors weights (loads with torch alone)."""
    if (out / "offspring.py").exists():
        raise EvostitchError(f"{out} already holds an exported offspring: choose another --out")
    for path in api.load_run(run, trust_code=trust_code).export(
        solution, out, finetuned=finetuned, onnx=onnx
    ):
        Console().print(f"  {path}")

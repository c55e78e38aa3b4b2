"""The search command: a new run, or `--resume` of an interrupted one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .. import api
from ..errors import EvostitchError
from ..files import expand_user
from .app import ALGORITHM_HELP, Amp, Device, TrustCode, app


@app.command()
def search(
    ctx: typer.Context,
    supernet: Annotated[
        Path | None,
        typer.Argument(
            help="A saved supernetwork folder (not with --resume).", callback=expand_user
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="New run folder.", callback=expand_user)
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue this run folder (after a crash, or with a larger --budget to "
            "search further); the run keeps its other settings.",
            callback=expand_user,
        ),
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Dataset spec; default: the one the stitches trained on.")
    ] = None,
    val_subset: Annotated[
        int | None,
        typer.Option(
            help="Search on a seeded subset of this many validation samples (faster; "
            "reevaluate scores the front on all of test). Default: the whole split."
        ),
    ] = None,
    fidelity: Annotated[
        str,
        typer.Option(
            help="race (default): stop an offspring after 64, 128, 256, ... images once a "
            "confidence bound shows it can enter neither the front nor above the steering "
            "floor (front members always see every image); full: every offspring on the "
            "whole split."
        ),
    ] = api.DEFAULT_FIDELITY,
    confidence: Annotated[
        float, typer.Option(help="Racing: the chance an offspring is not stopped wrongly.")
    ] = api.DEFAULT_CONFIDENCE,
    algorithm: Annotated[str, typer.Option(help=ALGORITHM_HELP)] = api.DEFAULT_ALGORITHM,
    budget: Annotated[
        int, typer.Option(help="Evaluations to perform (cache hits are free).")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the search.")] = 0,
    population: Annotated[
        int,
        typer.Option(
            help="Population size (16: measured best at up to 2,000 evaluations, docs/METHOD.md"
            " section 8; on Ray, at least the evaluations in flight, workers x batch, keeps"
            " every worker busy)."
        ),
    ] = 16,
    p_stitch: Annotated[
        float, typer.Option(help="Initial probability that a switch takes the stitched input.")
    ] = 0.02,
    steer_to: Annotated[
        float,
        typer.Option(
            help="Final floor on the metric, rising from 0 over the budget, never above the "
            "hypervolume reference point (90% of the weakest parent's or ensemble's metric); "
            "0: none."
        ),
    ] = 0.5,
    backend: Annotated[str, typer.Option(help="inprocess (default) or ray.")] = "inprocess",
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            "--ray-address",
            help="With --backend ray, join a running Ray cluster: auto (the one this node"
            " belongs to) or HOST:PORT (its head); absent: a local Ray for the run. Each"
            " worker asks for --cpus-per-worker CPUs and --gpus-per-worker GPUs; nodes that"
            " cannot read the supernetwork's folder get it from the driver, once per node.",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Ray workers.")] = 2,
    gpus_per_worker: Annotated[float, typer.Option(help="GPU share per Ray worker.")] = 0.0,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs per Ray worker.")] = 1.0,
    batch: Annotated[
        int,
        typer.Option(
            help="Offspring a worker evaluates together, computing what they share once "
            "(1: one at a time)."
        ),
    ] = api.DEFAULT_EVAL_BATCH,
    trust_code: TrustCode = False,
    device: Device = None,
    amp: Amp = None,
) -> None:
    """Search a supernetwork's offspring for accuracy (or mIoU) against MACs; the run
    folder keeps every evaluation and the front (front.csv)."""
    options = {
        "backend": backend,
        "batch": batch,
        "workers": workers,
        "gpus_per_worker": gpus_per_worker,
        "cpus_per_worker": cpus_per_worker,
        "address": address,
        "trust_code": trust_code,
        "device": device,
    }
    ray_only = [n for n in ("address", "workers", "gpus_per_worker", "cpus_per_worker")
                if _on_command_line(ctx, n)]  # fmt: skip
    if backend != "ray" and ray_only:
        names = ", ".join("--" + n.replace("_", "-") for n in ray_only)
        raise EvostitchError(f"{names}: the Ray backend's; add --backend ray")
    if resume is not None:
        if supernet is not None or out is not None:
            raise EvostitchError("--resume takes the run folder alone (no SUPERNET or --out)")
        given = [n for n in api.RUN_OWN if _on_command_line(ctx, n)]
        if given:
            names = ", ".join("--" + n.replace("_", "-") for n in given)
            raise EvostitchError(
                f"{names}: the run's own on --resume (see {resume / 'config.json'});"
                " only --budget and how to run (--backend, --batch, --device...) can change"
            )
        given_budget = budget if _on_command_line(ctx, "budget") else None
        run = api.resume(resume, budget=given_budget, **options)
    else:
        if supernet is None or out is None:
            raise EvostitchError("give a SUPERNET folder and --out RUN (or --resume RUN)")
        if data is None:
            api.supernet_data(supernet)  # a missing or unsaved folder fails here, in one line
        run = api.search(
            supernet,
            out=out,
            data=data,
            algorithm=algorithm,
            budget=budget,
            seed=seed,
            population=population,
            p_stitch=p_stitch,
            steer_to=steer_to,
            amp=amp,
            val_subset=val_subset,
            fidelity=fidelity,
            confidence=confidence,
            **options,
        )
    print_search(run)


def _on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether the user typed this option (not its default or an environment variable)."""
    source = ctx.get_parameter_source(name)
    return getattr(source, "name", None) == "COMMANDLINE"  # typer vendors click's enum


def print_search(run: api.Run) -> None:
    """Counters of the search, the front as a table, and where front.csv is."""
    result, out = run.result, Console()
    out.print(
        f"{result.performed} evaluations performed, {result.cache_hits + result.memo_hits} "
        f"known networks skipped ({result.memo_hits} by the algorithm's memo, "
        f"{result.cache_hits} by the run's cache), {result.failed} failed; "
        f"stopped: {result.stopped}; run in {run.path}"
    )
    if result.raced:
        out.print(
            f"racing: {result.raced_stopped} of {result.raced} offspring stopped early, "
            f"{result.images_saved:,} images saved"
        )
    table = Table("metric", "MMACs", "genotype (stitched switches[:value])", title="front")
    for r in sorted(result.front, key=lambda r: r.objectives[1]):
        on = [i if v == 1 else f"{i}:{v}" for i, v in enumerate(r.canonical) if v and i > 0]
        table.add_row(
            f"{-r.objectives[0]:.4f}",
            f"{r.objectives[1] / 1e6:.3f}",
            f"out={r.canonical[0]} switches={on}",
        )
    out.print(table)
    out.print(f"front and reference solutions: {run.path / 'front.csv'}")

"""Commands that make a supernetwork: match, stitch, inspect."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import api
from ..errors import EvostitchError, SupernetError
from ..evaluation.transitions import POOR
from ..files import expand_user
from ..options import check_match_options
from ..supernet import side_names
from ..training import DEFAULT_FIT_SAMPLES
from .app import (
    Amp,
    AsJson,
    Data,
    Device,
    InputShape,
    Leaf,
    MaxRatio,
    Parents,
    ParentWeights,
    Similarity,
    SpecA,
    SpecB,
    TrustCode,
    WeightsA,
    WeightsB,
    app,
    console,
    parse_shape,
)


def parent_list(
    a: str | None,
    b: str | None,
    more: Sequence[str] | None,
    a_weights: Path | None,
    b_weights: Path | None,
    more_weights: Sequence[Path] | None,
) -> tuple[list[str], list[Path | None]]:
    """The CLI's parents in side order (--a, --b, then each --parent) and their weights:
    --a/--b are sugar for the first two of the API's list."""
    more, more_weights = list(more or ()), list(more_weights or ())
    if more_weights and len(more_weights) != len(more):
        raise SupernetError(f"{len(more_weights)} --parent-weights for {len(more)} --parent")
    given = [(a, a_weights, "--a"), (b, b_weights, "--b")]
    for spec, weights, flag in given:
        if spec is None and weights is not None:
            raise SupernetError(f"{flag}-weights without {flag}")
    listed = [(spec, w) for spec, w, _ in given if spec is not None]
    listed += zip(more, more_weights or [None] * len(more), strict=True)
    if len(listed) < 2:
        raise SupernetError("need at least two parents: --a and --b, and/or --parent")
    return [spec for spec, _ in listed], [w for _, w in listed]


@app.command()
def match(
    input_shape: InputShape,
    a: SpecA = None,
    b: SpecB = None,
    parent: Parents = None,
    a_weights: WeightsA = None,
    b_weights: WeightsB = None,
    parent_weights: ParentWeights = None,
    data: Data = None,
    similarity: Similarity = "uniform",
    max_ratio: MaxRatio = 1,
    leaf_module: Leaf = None,
    time_limit: Annotated[
        float | None, typer.Option(help="Seconds for matching two parents.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Trace the parents and match their layers without creating cycles (pairs for two
    parents, groups for more)."""
    from ..graph import example_input, trace
    from ..models import load_model

    shape = parse_shape(input_shape)
    check_match_options(max_ratio, time_limit)  # before the parents are traced
    specs, weights = parent_list(a, b, parent, a_weights, b_weights, parent_weights)
    start = time.perf_counter()
    graphs = [
        trace(load_model(spec, w), example_input(shape), leaf_module or ())
        for spec, w in zip(specs, weights, strict=True)
    ]
    if similarity == "uniform" and data is None:
        console.print("[dim]uniform weights: no data needed[/dim]")
    result = api.match(
        graphs,
        shape,
        data=data,
        similarity=similarity,
        max_ratio=max_ratio,
        time_limit=time_limit,
    )
    seconds = time.perf_counter() - start
    sides, rows = side_names(len(graphs)), result.rows()
    report = {
        **dict(zip(sides, specs, strict=True)),
        "candidates": {s: len(g.candidates()) for s, g in zip(sides, graphs, strict=True)},
        "matches": [{**dict(zip(sides, r[:-1], strict=True)), "score": r[-1]} for r in rows],
        "total": result.total,
        "optimal": result.optimal,
        "seconds": {
            "weights": result.weight_seconds,
            "matching": result.seconds,
            "all": seconds,
        },
    }
    if as_json:
        print(json.dumps(report, indent=1))
        return
    what = "matches" if len(graphs) == 2 else "groups"
    table = Table(*(f"{s.upper()} node" for s in sides), "score", title=f"{len(rows)} {what}")
    for *nodes, score in rows:
        table.add_row(*(n or "-" for n in nodes), f"{score:.3f}")
    Console().print(table)
    candidates = ", ".join(f"{s.upper()} {n}" for s, n in report["candidates"].items())
    timing = f"weights {result.weight_seconds:.1f}s, matching {result.seconds:.1f}s, "
    timing += f"all {seconds:.1f}s"
    Console().print(
        f"candidates: {candidates}; total {result.total:.3f} "
        f"({'optimal' if result.optimal else 'not proven optimal'}); {timing}"
    )


@app.command()
def stitch(
    input_shape: InputShape,
    out: Annotated[
        Path,
        typer.Option("--out", help="Folder to write the supernetwork to.", callback=expand_user),
    ],
    a: SpecA = None,
    b: SpecB = None,
    parent: Parents = None,
    a_weights: WeightsA = None,
    b_weights: WeightsB = None,
    parent_weights: ParentWeights = None,
    data: Data = None,
    similarity: Similarity = "uniform",
    max_ratio: MaxRatio = 1,
    leaf_module: Leaf = None,
    fit_samples: Annotated[
        int,
        typer.Option(help="Train images the stitches are fitted on by least squares (0: none)."),
    ] = DEFAULT_FIT_SAMPLES,
    steps: Annotated[
        int | None,
        typer.Option(help="Gradient steps after the fit (default: none; see docs/METHOD.md)."),
    ] = None,
    epochs: Annotated[
        float | None,
        typer.Option(help="Gradient steps as passes over the train split, instead of --steps."),
    ] = None,
    downstream_steps: Annotated[
        int | None,
        typer.Option(
            help="Steps that then train all stitches together on random offspring toward "
            "the parents' output (at most 3 passes over the train split; default 0: with "
            "the poor stitches left out, the fit alone gave the better fronts; 100 is a "
            "typical value; see docs/METHOD.md section 4)."
        ),
    ] = None,
    fit_memory: Annotated[
        int | None,
        typer.Option(
            help="MiB the least-squares fit's equations may take at once; beyond it the fit "
            "walks its images in several passes, same result (default: the stitches' own "
            "weights, at least 256)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Stitch-training batch size.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the stitch training.")] = 0,
    hold_samples: Annotated[
        int,
        typer.Option(
            help="Random offspring per p (0.02, 0.1) scored on 256 val images before and "
            "after fitting, to show the stitches hold (0: skip)."
        ),
    ] = 16,
    keep_poor_stitches: Annotated[
        bool,
        typer.Option(
            help=f"Keep stitches whose single crossing keeps less than {POOR:g} of the lower "
            "parent on val (by default no offspring takes them: chains through them break; "
            "see docs/METHOD.md section 4)."
        ),
    ] = False,
    device: Device = None,
    amp: Amp = None,
) -> None:
    """Build a supernetwork of two or more parents (match, insert stitches, train them on
    --data) and save it."""
    parents, weights = parent_list(a, b, parent, a_weights, b_weights, parent_weights)
    api.stitch(
        parents,
        parse_shape(input_shape),
        weights=weights,
        data=data,
        out=out,
        similarity=similarity,
        max_ratio=max_ratio,
        leaf_modules=leaf_module or (),
        fit_samples=fit_samples,
        fit_memory=fit_memory,
        steps=steps,
        epochs=epochs,
        downstream=downstream_steps,
        batch_size=batch_size,
        seed=seed,
        device=device,
        amp=amp,
        hold_samples=hold_samples,
        keep_poor_stitches=keep_poor_stitches,
    )


MAX_INSPECT_SAMPLES = 10_000  # each is costed from the table: a few ms


@app.command()
def inspect(
    folder: Annotated[
        Path, typer.Argument(help="A saved supernetwork folder.", callback=expand_user)
    ],
    samples: Annotated[int, typer.Option(help="Random offspring to cost.")] = 8,
    as_json: AsJson = False,
    trust_code: TrustCode = False,
) -> None:
    """Parents, matches, variables and the cost of a sample of offspring."""
    if not 0 <= samples <= MAX_INSPECT_SAMPLES:
        raise EvostitchError(f"need 0 <= --samples <= {MAX_INSPECT_SAMPLES}")
    report = api.inspect(folder, samples, trust_code=trust_code)
    if as_json:
        print(json.dumps(report, indent=1))
        return
    out = Console()
    for p in report["parents"]:
        out.print(
            f"parent {p['side'].upper()}: {p.get('spec')}  {p['macs'] / 1e6:.2f} MMACs, "
            f"{p['params'] / 1e6:.2f} M params"
        )
    out.print(
        f"task {report['task']}; {len(report['matches'])} matched "
        f"{'points' if len(report['parents']) == 2 else 'groups'}; "
        f"{report['variables']} variables (output switch first)"
    )
    table = Table("MMACs", "M params", "offspring", title="sample of offspring")
    for row in report["offspring_sample"]:
        table.add_row(
            f"{row['macs'] / 1e6:.2f}", f"{row['params'] / 1e6:.2f}", row["description"][:100]
        )
    out.print(table)
    if report["transitions"] is not None:
        out.print(escape(report["transitions"]["text"]), soft_wrap=True)
    if report["left_out"]:
        out.print(
            f"{len(report['left_out'])} stitches left out (no offspring takes them: their "
            f"single crossing was poor): {escape(', '.join(report['left_out']))}",
            soft_wrap=True,
        )

"""The typer application, the options several commands share, and the entry point."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..errors import EvostitchError
from ..files import expand_user

app = typer.Typer(
    help="Recombine trained networks by stitching, then search their offspring.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

SpecA = Annotated[str | None, typer.Option("--a", help="Parent A, e.g. torchvision:resnet50.")]
SpecB = Annotated[
    str | None, typer.Option("--b", help="Parent B, e.g. torchvision:resnext50_32x4d.")
]
Parents = Annotated[
    list[str] | None,
    typer.Option(
        "--parent",
        help="A further parent (repeat it: --a/--b and every --parent, in order, make the "
        "K >= 2 parents; more than two are matched into groups).",
    ),
]
ParentWeights = Annotated[
    list[Path] | None,
    typer.Option(
        "--parent-weights",
        help="Weights of each --parent, in order (give one per --parent, or none).",
        callback=expand_user,
    ),
]
WeightsA = Annotated[
    Path | None,
    typer.Option(
        "--a-weights", help="Weights of A (.safetensors or state dict).", callback=expand_user
    ),
]
WeightsB = Annotated[
    Path | None, typer.Option("--b-weights", help="Weights of B.", callback=expand_user)
]
InputShape = Annotated[str, typer.Option("--input-shape", help="One input's shape: C,H,W.")]
Data = Annotated[
    str | None,
    typer.Option("--data", help="Dataset spec for real inputs (e.g. mnist5k); random if absent."),
]
Similarity = Annotated[
    str, typer.Option("--similarity", help="Pair weights: uniform (paper) or cka (needs data).")
]
MaxRatio = Annotated[
    int,
    typer.Option("--max-ratio", help="Allow feature maps whose sizes differ up to this factor."),
]
Leaf = Annotated[
    list[str] | None,
    typer.Option("--leaf-module", help="Module class or path to keep opaque when tracing."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")]
TrustCode = Annotated[
    bool,
    typer.Option(
        "--trust-code",
        help="Rebuild parents named by package.module:factory (runs that code): only for "
        "folders from people you trust.",
    ),
]
Device = Annotated[
    str | None, typer.Option(help="cpu, cuda, cuda:N or mps; default: cuda when available.")
]
Amp = Annotated[
    str | None,
    typer.Option("--amp", help="bf16 or fp16: run the networks in mixed precision (autocast)."),
]
ALGORITHM_HELP = (
    "auto (nsga2: the best measured in docs/METHOD.md section 8), "
    "rs (random search), ga, gomea, lk-gomea (kernel GOMEA) or nsga2."
)


def parse_shape(text: str) -> tuple[int, ...]:
    """`3,224,224` -> (3, 224, 224); one-line error otherwise."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(v <= 0 for v in shape):
        raise EvostitchError(f"bad --input-shape {text!r}: expected positive ints like 3,224,224")
    return shape


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    from ..execution.allocator import keep_freed_memory

    keep_freed_memory()
    try:
        app()
    except EvostitchError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)

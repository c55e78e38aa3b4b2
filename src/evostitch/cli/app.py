"""The typer application, the options several commands share, and the entry point."""

from __future__ import annotations

import errno
import sqlite3
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from ..errors import EvostitchError
from ..files import expand_user
from ..versions import report

app = typer.Typer(
    help="Recombine trained networks by stitching, then search their offspring.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        print(report())
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the versions of evostitch, torch, torchvision, timm, ray and Python.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Recombine trained networks by stitching, then search their offspring."""


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


# a full disk, a quota, a file size limit (`ulimit -f`: Python ignores SIGXFSZ, so the
# write fails with EFBIG), a read-only place or a missing permission: the user's to fix
WRITE_ERRORS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
)


def os_error_line(exc: OSError) -> str | None:
    """One line for an OSError the user can fix (`WRITE_ERRORS`), naming the file when
    the error does; None for another (a bug: its traceback is shown)."""
    if exc.errno not in WRITE_ERRORS:
        return None
    where = f" {exc.filename}" if exc.filename is not None else ""
    return f"cannot write{where} ({exc.strerror or errno.errorcode.get(exc.errno, exc.errno)})"


def sqlite_error_line(exc: sqlite3.Error) -> str | None:
    """One line for a run database that cannot be written (a full disk: SQLITE_FULL, a
    file size limit: SQLITE_IOERR_WRITE, a read-only place: SQLITE_READONLY), else None."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    if not name.startswith(("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY")):
        return None
    return f"cannot write the run database ({' '.join(str(exc).split())}: {name})"


def fail(message: str) -> None:
    """Print `message` as one error line on stderr (its brackets are text, not markup) and
    exit with code 2."""
    console.print(Text("error: ", style="red") + Text(message), soft_wrap=True)
    sys.exit(2)


def main() -> None:
    """Entry point: user errors (and a full disk) become one line on stderr and exit code 2."""
    from ..execution.allocator import keep_freed_memory

    keep_freed_memory()
    try:
        app()
    except EvostitchError as exc:
        fail(str(exc))
    except OSError as exc:
        if (line := os_error_line(exc)) is None:
            raise
        fail(line)
    except sqlite3.Error as exc:
        if (line := sqlite_error_line(exc)) is None:
            raise
        fail(line)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)

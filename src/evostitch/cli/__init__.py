"""The `evostitch` command line: argument parsing and printing over `evostitch.api`.

Each module adds its commands to one typer app: `build` (match, stitch, inspect),
`searching` (search), `results` (report, reevaluate, finetune, export), `demo`.
"""

from . import build, demo, results, searching  # noqa: F401 - they register the commands
from .app import app, main

__all__ = ["app", "main"]

"""evostitch: recombine trained neural networks by stitching, then search the offspring.

The public API, loaded on first use (``import evostitch`` stays light)::

    stitch, search, resume, load_run, match, inspect   one call per CLI command (api)
    register_algorithm                                 search with your own algorithm
    Run                                                a search run folder (api)
    Supernet                                           the supernetwork (supernet)
    load_model, trace, Graph                           parents and their graphs
    EvostitchError and its kinds                       errors (errors)
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "stitch": "api",
    "search": "api",
    "resume": "api",
    "load_run": "api",
    "match": "api",
    "inspect": "api",
    "Run": "api",
    "register_algorithm": "evolution.algorithms",
    "Supernet": "supernet",
    "load_model": "models",
    "trace": "graph",
    "Graph": "graph",
    "EvostitchError": "errors",
    "ModelError": "errors",
    "DataError": "errors",
    "MatchingError": "errors",
    "SupernetError": "errors",
    "SearchError": "errors",
    "RunError": "errors",
    "ExportError": "errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'evostitch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

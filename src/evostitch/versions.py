"""Versions of the installed packages a result depends on, from their metadata (nothing
is imported: `ray` alone takes a second to import)."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib import metadata

# The libraries that build and trace parents: fx node names, shapes and outputs depend on
# them, so a saved supernetwork records them (supernet/io.py).
BUILD = ("torch", "torchvision", "timm")
# What `evostitch --version` reports.
REPORTED = ("evostitch", *BUILD, "ray")


def installed(names: Iterable[str]) -> dict[str, str]:
    """`{package: version}` of those of `names` that are installed."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def report() -> str:
    """One line per package of `REPORTED` ("not installed" for an absent extra) and Python."""
    found = installed(REPORTED)
    lines = [f"{name} {found.get(name, 'not installed')}" for name in REPORTED]
    return "\n".join([*lines, f"python {platform.python_version()}"])


def changed(recorded: dict[str, str], now: dict[str, str]) -> list[str]:
    """`name old -> new` for each recorded package whose version differs now (a package
    recorded but no longer installed reads "absent"); empty if none."""
    return [
        f"{name} {old} -> {now.get(name, 'absent')}"
        for name, old in sorted(recorded.items())
        if now.get(name) != old
    ]

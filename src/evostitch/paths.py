"""Paths as users write them: relative to the working directory, with `~`, with spaces."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def user_path(path: str | os.PathLike[str]) -> Path:
    """`path` with `~` expanded (a shell leaves `--out=~/x` and quoted `~` alone)."""
    return Path(path).expanduser()


def absolute(path: str | os.PathLike[str]) -> Path:
    """The absolute form of a user's path, to record in a file or hand to another process."""
    return user_path(path).resolve()


def expand_user(value: Any) -> Any:
    """`user_path` of a path, or of each path of a list; None stays None (a CLI callback)."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return [user_path(v) for v in value]
    return user_path(value)

"""Files and paths: paths as users type them, and writes that are never half done."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def user_path(path: str | os.PathLike[str]) -> Path:
    """`path` with `~` expanded (a shell leaves `--out=~/x` and a quoted `~` alone);
    relative paths stay relative to the working directory."""
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


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], Any]) -> None:
    """`write(tmp)` fills a temporary file beside `path`, which then replaces `path` in one
    rename (after an fsync; the rename is made durable too): `path` holds the old or the
    new content, never a mix, whatever kills the process."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; others may read what we write
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """`atomic_write` of a UTF-8 text."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

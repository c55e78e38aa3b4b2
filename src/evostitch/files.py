"""Files and paths: paths as users type them, writes that are never half done, and the
checks that keep a folder someone sent us from steering our reads and writes."""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import EvostitchError, RunError


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


def readable_json(data: Any, indent: str = "") -> str:
    """JSON text with one line per dict item and per item of a list of containers (by its
    first item); other lists (a genotype, objectives) stay on one line. The leaves are
    written by the C encoder, which `json.dump(indent=...)` does not use (a checkpoint
    took ~20 ms)."""
    inner = indent + " "
    if isinstance(data, dict) and data and all(isinstance(k, str) for k in data):
        items = (f"{inner}{json.dumps(k)}: {readable_json(v, inner)}" for k, v in data.items())
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(data, list | tuple) and data and isinstance(data[0], dict | list | tuple):
        items = (inner + readable_json(v, inner) for v in data)
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    return json.dumps(data)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that `path` holds either the old or the new content, never a mix."""
    write_text_atomic(path, readable_json(data))


def save_output(path: str | os.PathLike[str], write: Callable[[str], Any]) -> Path:
    """`atomic_write` of an output file (a link at `path` is replaced, never written
    through; a reader sees the old file or the new one), with a full disk, a file size
    limit or a read-only place as one line naming the file."""
    path = Path(path)
    try:
        atomic_write(path, write)
    except OSError as e:
        raise RunError(f"cannot write {path} ({e.strerror or e})") from None
    return path


def writable_folder(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Check, before any work, that `path` is a folder we can create files in, or that its
    nearest existing parent is one (nothing is created): a one-line error for an existing
    file, a read-only place or a missing permission, instead of a traceback after the work."""
    path = user_path(path)
    probe = path
    while not probe.exists():
        if probe.is_symlink():  # a dangling link: creating through it writes elsewhere
            raise EvostitchError(f"{what} {path}: {probe} is a broken symbolic link")
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise EvostitchError(f"{what} {path}: {probe} exists and is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".evostitch-probe.", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise EvostitchError(f"{what} {path}: cannot write in {probe} ({e.strerror})") from None
    return path


def open_no_follow(path: str | os.PathLike[str], flags: int, mode: int = 0o644) -> int:
    """`os.open` that refuses a symbolic link at `path` (a received folder's `run.lock`
    linking elsewhere must not make us create or truncate the file it points to)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise EvostitchError(f"{path} is a symbolic link: refusing to open it") from None
        raise


def regular_file(path: str | os.PathLike[str]) -> Path:
    """`path` if it is a regular file (or a link to one); a one-line error for a FIFO, a
    device, a socket or a folder, which would hang or fail deep inside a reader."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise EvostitchError(f"{path}: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise EvostitchError(f"{path} is not a regular file")
    return path


def inside(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """`path` if it resolves (links followed) inside `root`; a one-line error otherwise,
    so that a link in a received folder cannot send a write outside it."""
    root, path = Path(root).resolve(), Path(path)
    if not path.resolve().is_relative_to(root):
        raise EvostitchError(f"{path} leads outside {root} (a symbolic link?): refusing it")
    return path

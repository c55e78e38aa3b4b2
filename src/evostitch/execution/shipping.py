"""A saved supernetwork sent through Ray's object store to workers that cannot read its folder.

The driver puts the folder's files (supernet.json, the stitches' and the parents' weights)
in the object store once (`ship`). A worker's factory (`Shipped`) uses the folder itself
when it reads there the same supernet.json (a shared file system, or the same path on
every node); otherwise it writes the files from the object store into a private temporary
folder, builds its evaluator from it and deletes the folder. Ray moves an object to a
node once, however many of the node's actors read it, so a node receives the
supernetwork once. `Supernet.load` checks every file against the sha256 that
supernet.json records, as for any folder.

Only the supernetwork travels: a dataset named by a path (`imagefolder:`, `voc:`) must be
at that path on every node; the bundled datasets (`mnist5k`, `digits`, `nuclei`) are
rebuilt from their spec.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SearchError
from ..evolution.backend import EvaluateFn, FolderFactory
from ..supernet.io import JSON_NAME, PARENTS, STITCHES

FILES = (JSON_NAME, STITCHES, PARENTS)
PREFIX = "evostitch-supernet-"  # + the pid of the worker that holds the copy


@dataclass(frozen=True)
class Receipt:
    """Where a worker's supernetwork came from: "folder" (read in place) or "object
    store" (and how many bytes)."""

    source: str
    bytes: int = 0


@dataclass(frozen=True)
class Shipped:
    """The evaluator factory Ray actors call: `load` on the supernetwork's folder when
    they read it, else on a copy of the files the driver put in the object store."""

    folder: str
    digest: str  # sha256 of the folder's supernet.json when it was shipped
    files: tuple[tuple[str, Any], ...]  # (file name, object reference to its bytes)
    size: int
    load: Callable[[str], EvaluateFn]

    def __call__(self) -> EvaluateFn:
        return self.receive()[0]

    def receive(self) -> tuple[EvaluateFn, Receipt]:
        """The evaluator, built from the folder in place or from the object store."""
        if _digest(Path(self.folder) / JSON_NAME) == self.digest:
            return self.load(self.folder), Receipt("folder")
        import ray

        _sweep()
        copy = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        try:
            for name, ref in self.files:
                with open(copy / name, "wb") as f:
                    f.write(ray.get(ref))  # a read-only view of the node's object store
            return self.load(str(copy)), Receipt("object store", self.size)
        finally:  # the network is in memory now
            shutil.rmtree(copy, ignore_errors=True)


def ship(factory: FolderFactory, put: Any) -> Shipped:
    """Put the folder's files in the object store (`put`: `ray.put`) for `factory.load`."""
    import numpy as np

    folder = Path(factory.folder)
    files, size, digest = [], 0, ""
    for name in FILES:
        try:
            data = np.fromfile(folder / name, dtype=np.uint8)  # out of band: no pickle copy
        except OSError as e:
            raise SearchError(f"cannot send {folder / name} to the Ray workers: {e}") from None
        files.append((name, put(data)))
        size += data.nbytes
        if name == JSON_NAME:
            digest = hashlib.sha256(data.tobytes()).hexdigest()
    return Shipped(str(folder), digest, tuple(files), size, factory.load)


def _sweep() -> None:
    """Delete the copies of workers that died before deleting theirs (killed, out of
    memory): a copy's folder is named after its process."""
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        pid = folder.name[len(PREFIX) :].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process
        return True
    return True


def _digest(path: Path) -> str | None:
    """sha256 of a small file, None when it cannot be read here."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None

"""The run store's writer thread: queued writes committed in order, off the search loop."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evostitch.errors import RunError


class Writer:
    """A thread that runs writes one at a time, in the order they were queued. After a
    write fails, the later ones are dropped (a checkpoint must not get ahead of the
    rows), and `put()` and `flush()` raise it as one line naming the run folder (a full
    disk must not end a search in a traceback)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None]
        self._queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="evostitch-store", daemon=True)
        self._thread.start()

    def put(self, write: Callable[..., Any], *args: Any) -> None:
        self._raise()
        self._queue.put((write, args))

    def flush(self) -> None:
        self._queue.join()
        self._raise()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            e = self._error
            raise RunError(
                f"could not write to the run folder {self._root}: {_why(e)}; the rows stored"
                f" before are intact (`evostitch search --resume {self._root}` goes on)"
            ) from e

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                if self._error is None:
                    item[0](*item[1])
            except BaseException as e:  # handed to the caller by flush() or put()
                self._error = e
            finally:
                self._queue.task_done()
        self._queue.task_done()


def _why(e: BaseException) -> str:
    """What went wrong, on one line: an OSError's own words (No space left on device, File
    too large), SQLite's with its code (a full disk surfaces as SQLITE_FULL, a file size
    limit as SQLITE_IOERR_WRITE "disk I/O error")."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    why = " ".join(str(e).split()) or type(e).__name__
    name = getattr(e, "sqlite_errorname", None)
    if name and name.startswith(("SQLITE_IOERR", "SQLITE_FULL")):
        why += f" ({name}: a full disk or a file size limit?)"
    return why

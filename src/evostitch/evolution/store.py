"""A durable run folder: what was asked, every finished evaluation, the algorithm's state.

Layout of a run folder::

    config.json         what was asked (algorithm, params, seed, budget, problem spec, versions)
    evaluations.sqlite  one row per evaluated canonical genotype (WAL mode, a commit per row)
    checkpoint.json     the algorithm's last saved state (atomic replace; may lag the database)
    run.lock            held (flock) by the one process that writes the run

The database is the source of truth: a process killed at any point loses at most the
evaluations that were still running, never a stored one, and the UNIQUE constraint on the
canonical genotype means a resumed run can never store a genotype twice. Commits are not
fsynced one by one (WAL with synchronous=NORMAL): a killed process loses nothing it
committed, and the database stays consistent through a power loss, which may take back
the last commits since the WAL's latest checkpoint (an fsync per row cost ~0.3 ms, 3%
of a 10 ms evaluation; see benchmarks/search_algorithms.py).

The search loop queues its rows and checkpoints (`add_later`, `save_checkpoint_later`)
for the store's writer thread, which commits them in order while the next evaluation
runs (a commit right after an evaluation cost ~0.25 ms of a cold CPU). Every read, `add`,
`save_checkpoint` and `close` waits for the queue first; a killed process may also lose
the rows still queued (normally none or one), and a checkpoint is only written after the
rows queued before it, so it never gets ahead of the database.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from evostitch.errors import RunError
from evostitch.evolution.base import Genotype, Objectives
from evostitch.evolution.writer import Writer
from evostitch.files import user_path, write_text_atomic

try:  # POSIX only; without it the run is simply not locked.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

FORMAT = "evostitch-run"
CONFIG, DATABASE, CHECKPOINT, LOCK = (
    "config.json",
    "evaluations.sqlite",
    "checkpoint.json",
    "run.lock",
)
_VERSIONED = ("evostitch", "torch", "torchvision", "numpy", "ray")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    genotype    TEXT NOT NULL,
    canonical   TEXT NOT NULL UNIQUE,
    objectives  TEXT,
    status      TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error       TEXT,
    seconds     REAL NOT NULL,
    worker      TEXT NOT NULL,
    started_at  REAL NOT NULL,
    finished_at REAL NOT NULL,
    stored_at   REAL NOT NULL,
    images      INTEGER,
    bound       REAL
)
"""
_RACE = {"images": "INTEGER", "bound": "REAL"}  # added to old databases when written to
_COLUMNS = (
    "id, genotype, canonical, objectives, status, error, seconds, worker, started_at, finished_at"
)


@dataclass
class RunConfig:
    """What a run was asked to do. `problem` is a JSON spec the caller can rebuild it from."""

    algorithm: str
    budget: int
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    problem: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass(frozen=True)
class EvaluationRecord:
    """One stored evaluation. `objectives` is None when the evaluation failed."""

    genotype: Genotype
    canonical: Genotype
    objectives: Objectives | None
    error: str | None = None
    seconds: float = 0.0
    worker: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    id: int | None = None
    images: int | None = None  # racing: images scored (None: not raced, all of them)
    bound: float | None = None  # racing, stopped early: the upper bound on its metric

    @property
    def ok(self) -> bool:
        return self.objectives is not None

    @property
    def stopped(self) -> bool:
        """Stopped early by racing: scored on `images` images only, never on the front."""
        return self.bound is not None


def genotype_key(genotype: Sequence[int]) -> str:
    """The JSON text a genotype is stored (and made unique) under: `[0,1,2]`, no spaces
    (what `json.dumps(..., separators=(",", ":"))` writes, built without the encoder)."""
    return "[" + ",".join(map(str, map(int, genotype))) + "]"


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


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide what an evaluation returns (installed ones only)."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that `path` holds either the old or the new content, never a mix."""
    write_text_atomic(path, readable_json(data))


class RunStore:
    """The run folder; use `RunStore.create` or `RunStore.open`, then `close()` (or `with`)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, config: RunConfig, lock: Any) -> None:
        self.path = path
        self.config = config
        self._conn = conn
        self._lock = lock
        self._writer: Writer | None = None
        have = {row[1] for row in conn.execute("PRAGMA table_info(evaluations)")}
        self._race = ", ".join(c if c in have else "NULL" for c in _RACE)  # old, read only

    def set_budget(self, budget: int) -> None:
        """Change the run's budget (config.json), never below the evaluations stored."""
        if budget < max(1, stored := self.count()):
            raise RunError(f"{self.path}: a budget of {budget} is below the {stored} stored")
        data = json.loads((self.path / CONFIG).read_text())
        write_json_atomic(self.path / CONFIG, {**data, "budget": budget})
        self.config.budget = budget

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def create(
        cls, path: str | os.PathLike[str], config: RunConfig | dict[str, Any], resume: bool = False
    ) -> RunStore:
        """Start a new run in `path`; an existing non-empty folder is reopened only if `resume`."""
        root = user_path(path)
        if isinstance(config, dict):
            config = RunConfig.from_dict(config)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            if resume:
                return cls.open(root)
            raise RunError(
                f"{root} already exists and is not empty: choose a new run folder or resume it"
            )
        root.mkdir(parents=True, exist_ok=True)
        data = asdict(config)
        data["versions"] = data["versions"] or package_versions()
        data["created"] = data["created"] or datetime.now(UTC).isoformat(timespec="seconds")
        lock = _lock(root)
        conn = sqlite3.connect(root / DATABASE, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_SCHEMA)
        write_json_atomic(root / CONFIG, {"format": FORMAT, **data})
        return cls(root, conn, RunConfig.from_dict(data), lock)

    @classmethod
    def open(cls, path: str | os.PathLike[str], readonly: bool = False) -> RunStore:
        """Open an existing run folder; `readonly` reads it without taking the writer's lock."""
        root = user_path(path)
        config = _read_config(root)
        db = root / DATABASE
        if not db.is_file():
            raise RunError(f"{root} is not an evostitch run: {DATABASE} is missing")
        lock, conn = (None if readonly else _lock(root)), None
        try:
            if readonly:
                # a file: URI needs an absolute path (spaces and "?" are escaped by as_uri)
                uri = f"{db.resolve().as_uri()}?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None)
            else:
                conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                _add_race_columns(conn)
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(check)
            conn.execute(f"SELECT {_COLUMNS} FROM evaluations LIMIT 1").fetchall()
        except sqlite3.DatabaseError as e:
            if conn is not None:
                conn.close()
            _unlock(lock)
            msg = " ".join(str(e).replace("*** in database main ***", "").split())[:200]
            msg = msg or type(e).__name__
            raise RunError(f"{db} is not a usable run database: {msg}") from None
        return cls(root, conn, config, lock)

    def close(self) -> None:
        """Finish the queued writes, close the database and release the run's lock."""
        try:
            self.flush()
        finally:
            if self._writer is not None:
                self._writer.stop()
                self._writer = None
            self._conn.close()
            _unlock(self._lock)
            self._lock = None

    # -- writes queued for the writer thread ------------------------------------------------
    def add_later(self, record: EvaluationRecord) -> None:
        """`add` on the store's writer thread, after the writes queued before it; the
        caller goes on at once (the commit overlaps the next evaluation)."""
        self._queue(self._insert, record)

    def save_checkpoint_later(self, state: dict[str, Any]) -> None:
        """`save_checkpoint` on the writer thread, after the rows queued before it (so the
        checkpoint never gets ahead of the database); `state` is serialised now."""
        self._queue(write_text_atomic, self.path / CHECKPOINT, readable_json(state))

    def flush(self) -> None:
        """Wait for the queued writes; raise what the first failed one raised."""
        if self._writer is not None:
            self._writer.flush()

    def _queue(self, write: Callable[..., Any], *args: Any) -> None:
        if self._writer is None:
            self._writer = Writer(self.path)
        self._writer.put(write, *args)

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- evaluations -----------------------------------------------------------------------
    def add(self, record: EvaluationRecord) -> bool:
        """Store one evaluation in its own transaction; False if its canonical is already in."""
        self.flush()
        return self._insert(record)

    def _insert(self, record: EvaluationRecord) -> bool:
        status = "ok" if record.ok else "failed"
        objectives = None if record.objectives is None else json.dumps(list(record.objectives))
        key = genotype_key(record.genotype)
        canonical = key if record.canonical == record.genotype else genotype_key(record.canonical)
        cur = self._conn.execute(
            "INSERT OR IGNORE INTO evaluations (genotype, canonical, objectives, status, error,"
            " seconds, worker, started_at, finished_at, stored_at, images, bound)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                canonical,
                objectives,
                status,
                record.error,
                float(record.seconds),
                record.worker,
                float(record.started_at),
                float(record.finished_at),
                time.time(),
                record.images,
                record.bound,
            ),
        )
        return cur.rowcount == 1

    def records(self) -> Iterator[EvaluationRecord]:
        """Every stored evaluation, in the order they were stored."""
        self.flush()
        sql = f"SELECT {_COLUMNS}, {self._race} FROM evaluations ORDER BY id"
        for row in self._conn.execute(sql):
            rid, g, c, obj, _status, err, sec, worker, t0, t1, images, bound = row
            yield EvaluationRecord(
                genotype=tuple(json.loads(g)),
                canonical=tuple(json.loads(c)),
                objectives=None if obj is None else tuple(float(v) for v in json.loads(obj)),
                error=err,
                seconds=sec,
                worker=worker,
                started_at=t0,
                finished_at=t1,
                id=rid,
                images=images,
                bound=bound,
            )

    def count(self, status: str | None = None) -> int:
        """Number of stored evaluations (optionally only 'ok' or 'failed' ones)."""
        self.flush()
        if status is None:
            return self._conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
        sql = "SELECT COUNT(*) FROM evaluations WHERE status = ?"
        return self._conn.execute(sql, (status,)).fetchone()[0]

    def journal_mode(self) -> str:
        self.flush()
        return self._conn.execute("PRAGMA journal_mode").fetchone()[0]

    # -- checkpoint ------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Replace checkpoint.json atomically (temp file, fsync, rename)."""
        self.flush()
        write_json_atomic(self.path / CHECKPOINT, state)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last saved checkpoint, or None if the run has none yet."""
        self.flush()
        file = self.path / CHECKPOINT
        if not file.is_file():
            return None
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise RunError(f"{file} is unreadable: {e}") from None


def _read_config(root: Path) -> RunConfig:
    file = root / CONFIG
    if not root.is_dir() or not file.is_file():
        raise RunError(f"{root} is not an evostitch run: {CONFIG} is missing")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT!r}")  # reported below as a RunError
        return RunConfig.from_dict(data)
    except (OSError, ValueError, TypeError) as e:
        raise RunError(f"{file} is not an evostitch run config: {e}") from None


def _add_race_columns(conn: sqlite3.Connection) -> None:
    """Racing's columns in a database written before they existed (NULL: full)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(evaluations)")}
    for name, kind in _RACE.items():
        if have and name not in have:
            conn.execute(f"ALTER TABLE evaluations ADD COLUMN {name} {kind}")


def _lock(root: Path) -> Any:
    if fcntl is None:  # pragma: no cover
        return None
    f = open(root / LOCK, "a")  # noqa: SIM115 - held open for the life of the store
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise RunError(f"{root} is in use by another process") from None
    return f


def _unlock(lock: Any) -> None:
    if lock is not None:
        lock.close()  # closing the file releases the flock

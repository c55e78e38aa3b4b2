"""A durable run folder: what was asked, every finished evaluation, the algorithm's state.

What the folder holds, and the checks on what is read from it, are `evolution.schema`'s;
symbolic links and special files are refused where the store opens a file in place
(run.lock, the database and its WAL).

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

import json
import os
import platform
import sqlite3
import stat
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evostitch.errors import EvostitchError, RunError
from evostitch.evolution import schema
from evostitch.evolution.base import Genotype, Objectives
from evostitch.evolution.schema import CHECKPOINT, CONFIG, DATABASE, FORMAT, LOCK, RACE
from evostitch.evolution.writer import Writer
from evostitch.files import (
    open_no_follow,
    readable_json,
    regular_file,
    user_path,
    write_json_atomic,
    write_text_atomic,
)
from evostitch.versions import installed

try:  # POSIX only; without it the run is simply not locked.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

_VERSIONED = ("evostitch", "torch", "torchvision", "numpy", "ray")


@dataclass(frozen=True)
class RunConfig:
    """What a run was asked to do (config.json), frozen: a new budget is a new config.
    `problem` is a JSON spec the caller can rebuild it from (a stitching run's is
    `evolution.stitching.ProblemSpec.to_dict()`); `params` are the algorithm's, its
    `budget` the one its steering was paced for (a resume may raise the run's)."""

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


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide what an evaluation returns (installed ones only)."""
    return {"python": platform.python_version(), **installed(_VERSIONED)}


class RunStore:
    """The run folder; use `RunStore.create` or `RunStore.open`, then `close()` (or `with`)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, config: RunConfig, lock: Any) -> None:
        self.path = path
        self.config = config
        self._conn = conn
        self._lock = lock
        self._writer: Writer | None = None
        have = {row[1] for row in conn.execute("PRAGMA table_info(evaluations)")}
        self._race = ", ".join(c if c in have else "NULL" for c in RACE)  # old, read only
        # a stitching run scores (-metric, MACs); another problem's rows agree with each other
        self._n_objectives = 2 if config.problem.get("kind") == "stitching" else None

    def set_budget(self, budget: int) -> None:
        """Change the run's budget (config.json), never below the evaluations stored."""
        if budget < max(1, stored := self.count()):
            raise RunError(f"{self.path}: a budget of {budget} is below the {stored} stored")
        data = json.loads((self.path / CONFIG).read_text())
        write_json_atomic(self.path / CONFIG, {**data, "budget": budget})
        self.config = replace(self.config, budget=budget)

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
        conn.execute("PRAGMA trusted_schema=OFF")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(schema.SCHEMA)
        write_json_atomic(root / CONFIG, {"format": FORMAT, **data})
        return cls(root, conn, RunConfig.from_dict(data), lock)

    @classmethod
    def open(cls, path: str | os.PathLike[str], readonly: bool = False) -> RunStore:
        """Open an existing run folder; `readonly` reads it without taking the writer's lock."""
        root = user_path(path)
        config = RunConfig.from_dict(schema.read_config(root))
        db = root / DATABASE
        if not os.path.lexists(db):
            raise RunError(f"{root} is not an evostitch run: {DATABASE} is missing")
        _check_database_files(db)
        lock = None if readonly else _lock(root)
        try:
            conn = _connect(db, readonly)
        except BaseException:
            _unlock(lock)
            raise
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
        values = schema.row_values(record)[:-1]  # the last is the WHERE of `_replace`
        return self._conn.execute(schema.INSERT, values).rowcount == 1

    def replace_later(self, record: EvaluationRecord) -> None:
        """Queue the new evaluation of a stored *failed* genotype (a retry on resume): it
        replaces the failed row in place (same id, same canonical genotype); an ok row is
        never replaced. Committed on the writer thread, in order, as `add_later`."""
        self._queue(self._replace, record)

    def _replace(self, record: EvaluationRecord) -> bool:
        return self._conn.execute(schema.REPLACE, schema.row_values(record)).rowcount == 1

    def records(self) -> Iterator[EvaluationRecord]:
        """Every stored evaluation, in the order they were stored; a row that is not one
        of ours (crafted or damaged) raises a one-line RunError naming its id."""
        self.flush()
        sql = f"SELECT {schema.COLUMNS}, {self._race} FROM evaluations ORDER BY id"
        rows = self._conn.execute(sql)
        db = self.path / DATABASE
        yield from schema.checked_records(rows, EvaluationRecord, self._n_objectives, db)

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
        """The last saved checkpoint, or None if the run has none yet; one that is not a
        checkpoint (damaged, crafted) is a one-line RunError saying how to restart."""
        self.flush()
        return schema.read_checkpoint(self.path / CHECKPOINT)


# -- the database --------------------------------------------------------------------------
def _check_database_files(db: Path) -> None:
    """The database and its WAL files must be regular files in the folder: sqlite opens
    them for writing in place, so a link would send our writes elsewhere."""
    for path in (db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal"))):
        if path.is_symlink():
            raise RunError(f"{path} is a symbolic link: refusing to open it")
        if path != db and not os.path.lexists(path):
            continue
        try:
            regular_file(path)
        except EvostitchError as e:
            raise RunError(str(e)) from None


def _connect(db: Path, readonly: bool) -> sqlite3.Connection:
    """A connection to a run database checked to be ours (schema, then integrity)."""
    conn = None
    try:
        if readonly:
            conn = sqlite3.connect(_read_only_uri(db), uri=True, isolation_level=None)
        else:
            conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA trusted_schema=OFF")  # no SQL function runs from the schema
        schema.check_schema(conn, db)  # before any statement reads or writes the table
        if not readonly:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            schema.add_race_columns(conn)
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(check)
        conn.execute(f"SELECT {schema.COLUMNS} FROM evaluations LIMIT 1").fetchall()
    except BaseException as e:
        if conn is not None:
            conn.close()
        if not isinstance(e, sqlite3.DatabaseError):
            raise
        msg = " ".join(str(e).replace("*** in database main ***", "").split())[:200]
        msg = msg or type(e).__name__
        raise RunError(f"{db} is not a usable run database: {msg}") from None
    return conn


def _read_only_uri(db: Path) -> str:
    """The URI that reads `db` without writing: a file: URI needs an absolute path (spaces
    and "?" are escaped by as_uri). In a folder nobody can write (a read-only mount) and
    without a WAL to read, sqlite could not make its shared-memory file: `immutable`
    reads the file as it is (no writer can be changing it there)."""
    uri = f"{db.resolve().as_uri()}?mode=ro"
    wal = db.with_name(db.name + "-wal")
    if not os.access(db.parent, os.W_OK) and not os.path.lexists(wal):
        uri += "&immutable=1"
    return uri


def _lock(root: Path) -> Any:
    """Take the run's lock: run.lock opened without following a link (a received folder's
    run.lock linking elsewhere must not make us create or touch that file), then flock."""
    if fcntl is None:  # pragma: no cover
        return None
    path = root / LOCK
    try:
        fd = open_no_follow(path, os.O_CREAT | os.O_RDWR | os.O_NONBLOCK)
    except EvostitchError as e:
        raise RunError(str(e)) from None
    except OSError as e:
        raise RunError(f"{path}: cannot open the run's lock ({e.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RunError(f"{path} is not a regular file: refusing to use it as the lock")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise RunError(f"{root} is in use by another process") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlock(lock: Any) -> None:
    if lock is not None:
        os.close(lock)  # closing the descriptor releases the flock

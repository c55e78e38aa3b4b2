"""A durable run folder: what was asked, every finished evaluation, the algorithm's state.

Layout of a run folder::

    config.json         what was asked (algorithm, params, seed, budget, problem spec, versions)
    evaluations.sqlite  one row per evaluated canonical genotype (WAL mode, a commit per row)
    checkpoint.json     the algorithm's last saved state (atomic replace; may lag the database)
    run.lock            held (flock) by the one process that writes the run

A run folder may come from someone else, so what is read from it is checked before use
(one-line `RunError`s): config.json against the fields' types and ranges, every row as
it is read (genotypes as canonical JSON lists of non-negative integers, objectives as
finite numbers, a known status), checkpoint.json's counters, and the database's schema,
which must be exactly ours (no trigger, view, other table or index: a trigger would run
someone else's SQL on our writes, a view on our reads); symbolic links and special files
are refused where the store opens a file in place (run.lock, the database and its WAL).

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
import math
import os
import platform
import re
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from evostitch.errors import EvostitchError, RunError
from evostitch.evolution.base import Genotype, Objectives
from evostitch.evolution.writer import Writer
from evostitch.files import open_no_follow, regular_file, user_path, write_text_atomic

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
# the evaluations table's (name, type), in order; a database older than racing lacks the last two
_TABLE = (
    *(("id", "INTEGER"), ("genotype", "TEXT"), ("canonical", "TEXT"), ("objectives", "TEXT")),
    *(("status", "TEXT"), ("error", "TEXT"), ("seconds", "REAL"), ("worker", "TEXT")),
    *(("started_at", "REAL"), ("finished_at", "REAL"), ("stored_at", "REAL")),
    *_RACE.items(),
)
# everything sqlite_master may hold: our table, its AUTOINCREMENT counter, its UNIQUE index
_OURS = {
    ("table", "evaluations"),
    ("table", "sqlite_sequence"),
    ("index", "sqlite_autoindex_evaluations_1"),
}
MAX_BUDGET = 10**9  # evaluations; far above any search, far below what overflows a counter
MAX_SEED = 2**63 - 1


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
        # a stitching run scores (-metric, MACs); another problem's rows agree with each other
        self._n_objectives = 2 if config.problem.get("kind") == "stitching" else None

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
        conn.execute("PRAGMA trusted_schema=OFF")
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
        cur = self._conn.execute(
            "INSERT OR IGNORE INTO evaluations (genotype, canonical, objectives, status, error,"
            " seconds, worker, started_at, finished_at, stored_at, images, bound)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _values(record)[:-1],  # the last is the WHERE of `_replace`
        )
        return cur.rowcount == 1

    def replace_later(self, record: EvaluationRecord) -> None:
        """Queue the new evaluation of a stored *failed* genotype (a retry on resume): it
        replaces the failed row in place (same id, same canonical genotype); an ok row is
        never replaced. Committed on the writer thread, in order, as `add_later`."""
        self._queue(self._replace, record)

    def _replace(self, record: EvaluationRecord) -> bool:
        cur = self._conn.execute(
            "UPDATE evaluations SET genotype = ?, canonical = ?, objectives = ?, status = ?,"
            " error = ?, seconds = ?, worker = ?, started_at = ?, finished_at = ?,"
            " stored_at = ?, images = ?, bound = ? WHERE canonical = ? AND status = 'failed'",
            _values(record),
        )
        return cur.rowcount == 1

    def records(self) -> Iterator[EvaluationRecord]:
        """Every stored evaluation, in the order they were stored; a row that is not one
        of ours (crafted or damaged) raises a one-line RunError naming its id."""
        self.flush()
        sql = f"SELECT {_COLUMNS}, {self._race} FROM evaluations ORDER BY id"
        shape = _Shape(self._n_objectives)
        for row in self._conn.execute(sql):
            try:
                record = _record(row)
                shape.check(record)
            except (ValueError, TypeError, OverflowError) as e:
                raise RunError(
                    f"{self.path / DATABASE}: row id {row[0]} is not an evostitch evaluation ({e})"
                ) from None
            yield record

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
        file = self.path / CHECKPOINT
        if not os.path.lexists(file):
            return None
        try:
            data = json.loads(regular_file(file).read_text(encoding="utf-8"))
            why = _checkpoint_problem(data)
        except (OSError, ValueError, EvostitchError) as e:
            why = " ".join(str(e).split())[:200]
        if why is not None:
            raise RunError(
                f"{file} is unusable: {why}; delete it to restart the algorithm from the"
                " stored evaluations (none is lost)"
            )
        return data


def _values(record: EvaluationRecord) -> tuple[Any, ...]:
    """A record as the columns `_insert` writes, then its canonical key again (the WHERE
    of `_replace`). Objectives must be finite: a row we write is one we can read back."""
    if record.objectives is not None and not all(map(math.isfinite, record.objectives)):
        raise RunError(
            f"objectives {record.objectives} are not finite: a failed evaluation has none"
        )
    objectives = None if record.objectives is None else json.dumps(list(record.objectives))
    key = genotype_key(record.genotype)
    canonical = key if record.canonical == record.genotype else genotype_key(record.canonical)
    status = "ok" if record.ok else "failed"
    times = (float(record.seconds), record.worker, float(record.started_at))
    times += (float(record.finished_at), time.time())
    extra = (record.images, record.bound, canonical)
    return (key, canonical, objectives, status, record.error, *times, *extra)


# -- checking what a received folder holds --------------------------------------------------
def _is_int(value: Any, low: int = 0, high: int = MAX_SEED) -> bool:
    return type(value) is int and low <= value <= high


def _is_number(value: Any, low: float = -math.inf, high: float = math.inf) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and low <= value <= high


_GENOTYPE = re.compile(r"\[(?:0|[1-9][0-9]*)(?:,(?:0|[1-9][0-9]*))*\]")


def _genotype(text: Any, what: str) -> Genotype:
    """A stored genotype: the canonical JSON list of non-negative integers `genotype_key`
    writes (matched and parsed without the JSON decoder: records() is read often)."""
    if type(text) is not str or _GENOTYPE.fullmatch(text) is None:
        shown = repr(text[:40]) if isinstance(text, str) else type(text).__name__
        raise ValueError(f"its {what} {shown} is not a JSON list of non-negative integers")
    return tuple(map(int, text[1:-1].split(",")))


def _objectives(text: Any) -> Objectives:
    """Stored objectives: a JSON list of finite numbers."""
    try:
        values = json.loads(text)
    except (TypeError, ValueError):
        values = None
    if type(values) is not list or not values or not all(map(_is_number, values)):
        raise ValueError(f"its objectives {str(text)[:40]!r} are not a list of finite numbers")
    return tuple(map(float, values))


def _record(row: tuple[Any, ...]) -> EvaluationRecord:
    """A stored row as a record, each column checked (a ValueError naming the column)."""
    rid, g, c, obj, status, err, sec, worker, t0, t1, images, bound = row
    genotype = _genotype(g, "genotype")
    canonical = genotype if c == g else _genotype(c, "canonical genotype")
    if status == "ok":
        objectives = _objectives(obj)
    elif status == "failed" and obj is None:
        objectives = None
    else:
        raise ValueError(f"status {str(status)[:20]!r} with objectives {str(obj)[:40]!r}")
    if not (err is None or type(err) is str) or type(worker) is not str:
        raise ValueError("its error or worker is not text")
    if not (_is_number(sec) and _is_number(t0) and _is_number(t1)):
        raise ValueError("its seconds, started_at or finished_at is not a finite number")
    if not (images is None or _is_int(images)) or not (bound is None or _is_number(bound)):
        raise ValueError("its racing images or bound is not a number")
    times = {"seconds": sec, "worker": worker, "started_at": t0, "finished_at": t1}
    return EvaluationRecord(
        genotype, canonical, objectives, err, **times, id=rid, images=images, bound=bound
    )


class _Shape:
    """The rows of one run agree: one genotype length, one number of objectives (2 for a
    stitching run), so that a crafted row fails here, naming itself, not deep in a caller."""

    def __init__(self, n_objectives: int | None) -> None:
        self.variables: int | None = None
        self.objectives = n_objectives

    def check(self, record: EvaluationRecord) -> None:
        if self.variables is None:
            self.variables = len(record.genotype)
        if not len(record.genotype) == len(record.canonical) == self.variables:
            raise ValueError(f"its genotypes do not have the run's {self.variables} variables")
        if record.objectives is not None:
            if self.objectives is None:
                self.objectives = len(record.objectives)
            if (n := len(record.objectives)) != self.objectives:
                raise ValueError(f"it has {n} objectives, not {self.objectives}")


def _checkpoint_problem(data: Any) -> str | None:
    """What makes `data` unusable as a checkpoint (the types of what the loop reads), or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    counters = data.get("counters", {})
    checks = {
        "format": isinstance(data.get("format", ""), str),
        "algorithm": isinstance(data.get("algorithm", ""), str),
        "rows": _is_int(data.get("rows", 0)),
        "state": isinstance(data.get("state", {}), dict),
        "counters": isinstance(counters, dict) and all(map(_is_int, counters.values())),
    }
    bad = [k for k, ok in checks.items() if not ok]
    return f"its {bad[0]} has the wrong type" if bad else None


def _read_config(root: Path) -> RunConfig:
    file = root / CONFIG
    if not root.is_dir() or not os.path.lexists(file):
        raise RunError(f"{root} is not an evostitch run: {CONFIG} is missing")
    try:
        data = json.loads(regular_file(file).read_text(encoding="utf-8"))
        why = _config_problem(data)
    except (OSError, ValueError, EvostitchError) as e:
        why = " ".join(str(e).split())[:200]
    if why is not None:
        raise RunError(f"{file} is not an evostitch run config: {why}")
    return RunConfig.from_dict(data)


_EXPECTED = {
    "algorithm": "an algorithm name",
    "budget": f"an integer from 1 to {MAX_BUDGET}",
    "seed": f"an integer from 0 to {MAX_SEED}",
    "params": "an object",
    "problem": "an object",
    "versions": "an object",
    "created": "text",
}


def _config_problem(data: Any) -> str | None:
    """What makes `data` unusable as a run's config, or None: each field the run is
    rebuilt from, by type and range (`problem` as text must fail here, not deep inside)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return f"format is not {FORMAT!r}"
    algorithm = data.get("algorithm")
    checks = {
        "algorithm": isinstance(algorithm, str) and 0 < len(algorithm) <= 100,
        "budget": _is_int(data.get("budget"), 1, MAX_BUDGET),
        "seed": _is_int(data.get("seed", 0)),
        "params": _str_dict(data.get("params", {})),
        "problem": _str_dict(data.get("problem", {})),
        "versions": _str_dict(data.get("versions", {})),
        "created": isinstance(data.get("created", ""), str),
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        value = json.dumps(data.get(bad[0]))
        return f"{bad[0]} {value[:40]} is not {_EXPECTED[bad[0]]}"
    return _params_problem(data.get("params", {})) or _spec_problem(data.get("problem", {}))


def _str_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(type(k) is str for k in value)


def _unit(value: Any) -> bool:
    return value is None or _is_number(value, 0.0, 1.0)


def _scalar(value: Any) -> bool:
    return value is None or type(value) in (bool, str, int) or _is_number(value)


def _json_param(value: Any) -> bool:
    return _scalar(value) or (isinstance(value, list) and all(map(_scalar, value)))


# the built-in algorithms' parameters (evolution.algorithms); others' are JSON scalars
_PARAMS: dict[str, Callable[[Any], bool]] = {
    "pop_size": lambda v: _is_int(v, 2, 10**6),
    "budget": lambda v: v is None or _is_int(v, 1, MAX_BUDGET),
    "steer_to": _unit,
    "p_stitch": _unit,
    "mutation_rate": _unit,
    "restart_elites": lambda v: _is_number(v, 0.0, 1.0),
    "crossover": lambda v: isinstance(v, str),
    "neighbours": lambda v: v is None or _is_int(v, 1, 10**6),
}


def _params_problem(params: dict[str, Any]) -> str | None:
    for name, value in params.items():
        if not _PARAMS.get(name, _json_param)(value):
            return f"params: {name} {json.dumps(value)[:40]} is not a valid value"
    return None


def _spec_problem(spec: dict[str, Any]) -> str | None:
    """A stitching problem's spec: the fields `problem_from_spec` and the results read."""
    if spec.get("kind") != "stitching":
        return None
    texts = all(isinstance(spec.get(k), str) for k in ("supernet", "data", "split"))
    choices = spec.get("output_choices", [])
    if not texts or not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
        return "problem: supernet, data and split must be text, output_choices a list of text"
    if not (spec.get("subset") is None or _is_int(spec["subset"], 1)):
        return f"problem: subset {json.dumps(spec['subset'])[:40]} is not a positive integer"
    if not all(spec.get(k) is None or isinstance(spec[k], str) for k in ("amp", "fidelity")):
        return "problem: amp and fidelity must be text or null"
    if not (spec.get("confidence") is None or _is_number(spec["confidence"], 0.0, 1.0)):
        return "problem: confidence must be a number from 0 to 1"
    return None


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
        _check_schema(conn, db)  # before any statement reads or writes the table
        if not readonly:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            _add_race_columns(conn)
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(check)
        conn.execute(f"SELECT {_COLUMNS} FROM evaluations LIMIT 1").fetchall()
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


def _check_schema(conn: sqlite3.Connection, db: Path) -> None:
    """Refuse a database whose schema is not exactly ours: a trigger would rewrite the
    rows we store, a view would answer (or hang) our reads, another table or index is
    not something we made. Reading sqlite_master runs none of them."""

    def refuse(what: str) -> RunError:
        return RunError(f"{db} {what}: not an evostitch run database; refusing to open it")

    order = "CASE type WHEN 'trigger' THEN 0 WHEN 'view' THEN 1 WHEN 'table' THEN 2 ELSE 3 END"
    for kind, name in conn.execute(f"SELECT type, name FROM sqlite_master ORDER BY {order}, name"):
        if (kind, name) not in _OURS:
            article = "an" if str(kind)[:1] in "aeiou" else "a"
            raise refuse(f"holds {article} {kind} {str(name)[:60]!r}")
    columns = [
        (name, str(kind).upper(), hidden)
        for _, name, kind, _, _, _, hidden in conn.execute("PRAGMA table_xinfo(evaluations)")
    ]
    ours = [(name, kind, 0) for name, kind in _TABLE]
    if columns not in (ours, ours[: -len(_RACE)], ours[: 1 - len(_RACE)]):
        raise refuse("has no evaluations table" if not columns else "has other evaluations columns")
    unique = [row[2] for row in conn.execute("PRAGMA index_info(sqlite_autoindex_evaluations_1)")]
    if unique != ["canonical"]:
        raise refuse("lacks the UNIQUE index on the canonical genotype")


def _add_race_columns(conn: sqlite3.Connection) -> None:
    """Racing's columns in a database written before they existed (NULL: full)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(evaluations)")}
    for name, kind in _RACE.items():
        if have and name not in have:
            conn.execute(f"ALTER TABLE evaluations ADD COLUMN {name} {kind}")


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

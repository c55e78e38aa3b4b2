"""What a run folder may hold: config.json, checkpoint.json, rows and the database's
schema, checked before use.

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
someone else's SQL on our writes, a view on our reads). The store (`evolution.store`)
opens and writes the folder; this module says what it may hold.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evostitch.errors import EvostitchError, RunError
from evostitch.evolution.base import Genotype, Objectives
from evostitch.files import regular_file

if TYPE_CHECKING:  # the store's record, made by the store (`make`): hints only
    from evostitch.evolution.store import EvaluationRecord

FORMAT = "evostitch-run"
CONFIG, DATABASE, CHECKPOINT, LOCK = (
    "config.json",
    "evaluations.sqlite",
    "checkpoint.json",
    "run.lock",
)

SCHEMA = """
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
RACE = {"images": "INTEGER", "bound": "REAL"}  # added to old databases when written to
COLUMNS = (
    "id, genotype, canonical, objectives, status, error, seconds, worker, started_at, finished_at"
)
# a row written: the values `row_values` gives (INSERT: all but the last, the WHERE of REPLACE)
INSERT = (
    "INSERT OR IGNORE INTO evaluations (genotype, canonical, objectives, status, error,"
    " seconds, worker, started_at, finished_at, stored_at, images, bound)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
REPLACE = (  # a failed row evaluated again (a retry on resume); an ok row is never replaced
    "UPDATE evaluations SET genotype = ?, canonical = ?, objectives = ?, status = ?,"
    " error = ?, seconds = ?, worker = ?, started_at = ?, finished_at = ?,"
    " stored_at = ?, images = ?, bound = ? WHERE canonical = ? AND status = 'failed'"
)
# the evaluations table's (name, type), in order; a database older than racing lacks the last two
_TABLE = (
    *(("id", "INTEGER"), ("genotype", "TEXT"), ("canonical", "TEXT"), ("objectives", "TEXT")),
    *(("status", "TEXT"), ("error", "TEXT"), ("seconds", "REAL"), ("worker", "TEXT")),
    *(("started_at", "REAL"), ("finished_at", "REAL"), ("stored_at", "REAL")),
    *RACE.items(),
)
# everything sqlite_master may hold: our table, its AUTOINCREMENT counter, its UNIQUE index
_OURS = {
    ("table", "evaluations"),
    ("table", "sqlite_sequence"),
    ("index", "sqlite_autoindex_evaluations_1"),
}
MAX_BUDGET = 10**9  # evaluations; far above any search, far below what overflows a counter
MAX_SEED = 2**63 - 1


def read_config(root: Path) -> dict[str, Any]:
    """The run's config.json, checked (a one-line RunError if it is not a run's config)."""
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
    return data


def read_checkpoint(file: Path) -> dict[str, Any] | None:
    """The checkpoint in `file`, or None if there is none yet; one that is not a
    checkpoint (damaged, crafted) is a one-line RunError saying how to restart."""
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


# -- rows ---------------------------------------------------------------------------------
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


def genotype_key(genotype: Sequence[int]) -> str:
    """The JSON text a genotype is stored (and made unique) under: `[0,1,2]`, no spaces
    (what `json.dumps(..., separators=(",", ":"))` writes, built without the encoder)."""
    return "[" + ",".join(map(str, map(int, genotype))) + "]"


def row_values(record: EvaluationRecord) -> tuple[Any, ...]:
    """A record as the columns INSERT writes, then its canonical key again (the WHERE
    of REPLACE). Objectives must be finite: a row we write is one we can read back."""
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


def _record(row: tuple[Any, ...], make: type[EvaluationRecord]) -> EvaluationRecord:
    """A stored row as a record made by `make` (the store's `EvaluationRecord`), each
    column checked (a ValueError naming the column)."""
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
    return make(genotype, canonical, objectives, err, **times, id=rid, images=images, bound=bound)


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


def checked_records(
    rows: Iterable[tuple[Any, ...]],
    make: type[EvaluationRecord],
    n_objectives: int | None,
    db: Path,
) -> Iterator[EvaluationRecord]:
    """The rows of `db` as records made by `make` (the store's `EvaluationRecord`), each
    checked as it is read: a row that is not one of ours (crafted or damaged) raises a
    one-line RunError naming its id. `n_objectives`: None when any number will do, as
    long as the rows agree."""
    shape = _Shape(n_objectives)
    for row in rows:
        try:
            record = _record(row, make)
            shape.check(record)
        except (ValueError, TypeError, OverflowError) as e:
            raise RunError(f"{db}: row id {row[0]} is not an evostitch evaluation ({e})") from None
        yield record


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
def check_schema(conn: sqlite3.Connection, db: Path) -> None:
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
    if columns not in (ours, ours[: -len(RACE)], ours[: 1 - len(RACE)]):
        raise refuse("has no evaluations table" if not columns else "has other evaluations columns")
    unique = [row[2] for row in conn.execute("PRAGMA index_info(sqlite_autoindex_evaluations_1)")]
    if unique != ["canonical"]:
        raise refuse("lacks the UNIQUE index on the canonical genotype")


def add_race_columns(conn: sqlite3.Connection) -> None:
    """Racing's columns in a database written before they existed (NULL: full)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(evaluations)")}
    for name, kind in RACE.items():
        if have and name not in have:
            conn.execute(f"ALTER TABLE evaluations ADD COLUMN {name} {kind}")

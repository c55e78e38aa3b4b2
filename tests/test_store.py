"""The run folder: config, evaluations database, checkpoint."""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pytest

from evostitch.errors import EvostitchError
from evostitch.evolution.schema import genotype_key
from evostitch.evolution.store import EvaluationRecord, RunConfig, RunStore
from evostitch.files import readable_json


def config(**overrides) -> RunConfig:
    base = dict(algorithm="ga", budget=10, seed=3, params={"p": 0.02}, problem={"kind": "toy"})
    return RunConfig(**{**base, **overrides})


def record(genotype, canonical=None, objectives=(1.0, 2.0), error=None) -> EvaluationRecord:
    canonical = tuple(genotype) if canonical is None else canonical
    return EvaluationRecord(tuple(genotype), canonical, objectives, error, 0.5, "w:1", 1.0, 1.5)


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def test_create_writes_config_and_wal_database(tmp_path):
    with RunStore.create(tmp_path / "run", config()) as store:
        assert store.journal_mode() == "wal"
    data = json.loads((tmp_path / "run" / "config.json").read_text())
    assert data["algorithm"] == "ga" and data["seed"] == 3 and data["budget"] == 10
    assert data["params"] == {"p": 0.02} and data["problem"] == {"kind": "toy"}
    assert data["versions"]["evostitch"] and data["versions"]["python"] and data["created"]
    conn = sqlite3.connect(tmp_path / "run" / "evaluations.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persisted in the file
    conn.close()


def test_one_row_per_canonical_genotype(tmp_path):
    with RunStore.create(tmp_path / "run", config()) as store:
        assert store.add(record((1, 0, 1), canonical=(1, 0, 0)))
        assert not store.add(record((1, 0, 0), canonical=(1, 0, 0), objectives=(9.0, 9.0)))
        assert store.add(record((0, 0, 0), objectives=None, error="RuntimeError: boom"))
        with pytest.raises(EvostitchError, match="not finite"):  # could not be read back
            store.add(record((0, 1, 0), objectives=(-math.inf, math.inf)))
        assert store.add(record((0, 1, 0), objectives=(-1.0, 1.0)))
        rows = list(store.records())
        assert store.count() == 3 and store.count("failed") == 1 and store.count("ok") == 2
    assert rows[0].genotype == (1, 0, 1) and rows[0].objectives == (1.0, 2.0)  # first one kept
    assert rows[1].objectives is None and rows[1].error == "RuntimeError: boom"
    assert not rows[1].ok and rows[2].objectives == (-1.0, 1.0)
    conn = sqlite3.connect(tmp_path / "run" / "evaluations.sqlite")
    with pytest.raises(sqlite3.IntegrityError):  # the constraint is in the schema itself
        conn.execute(
            "INSERT INTO evaluations (genotype, canonical, status, seconds, worker, started_at,"
            " finished_at, stored_at) VALUES ('[1,1,1]', '[1,0,0]', 'ok', 0, '', 0, 0, 0)"
        )
    conn.close()


def test_rows_are_durable_without_close(tmp_path):
    store = RunStore.create(tmp_path / "run", config())
    store.add(record((1, 1)))
    conn = sqlite3.connect(tmp_path / "run" / "evaluations.sqlite")  # another connection
    assert conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 1
    conn.close()
    store.close()


def test_create_refuses_a_non_empty_folder_unless_resuming(tmp_path):
    RunStore.create(tmp_path / "run", config()).close()
    with pytest.raises(EvostitchError) as excinfo:
        RunStore.create(tmp_path / "run", config())
    assert "not empty" in one_line_error(excinfo)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(EvostitchError):
        RunStore.create(tmp_path / "other", config())
    with RunStore.create(tmp_path / "run", config(seed=99), resume=True) as store:
        assert store.config.seed == 3  # the stored config wins
    empty = tmp_path / "empty"
    empty.mkdir()
    RunStore.create(empty, config()).close()


def test_open_rejects_folders_that_are_not_runs(tmp_path):
    for make in (
        lambda p: None,  # missing
        lambda p: p.mkdir(),  # empty
        lambda p: (p.mkdir(), (p / "config.json").write_text("{not json")),
        lambda p: (p.mkdir(), (p / "config.json").write_text('{"format": "other"}')),
    ):
        path = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        make(path)
        with pytest.raises(EvostitchError) as excinfo:
            RunStore.open(path)
        assert str(path) in one_line_error(excinfo)


def test_open_rejects_a_missing_or_corrupt_database(tmp_path):
    RunStore.create(tmp_path / "run", config()).close()
    db = tmp_path / "run" / "evaluations.sqlite"
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    db.write_bytes(b"this is not a database, just some junk bytes " * 100)
    with pytest.raises(EvostitchError) as excinfo:
        RunStore.open(tmp_path / "run")
    assert "evaluations.sqlite" in one_line_error(excinfo)
    db.unlink()
    with pytest.raises(EvostitchError) as excinfo:
        RunStore.open(tmp_path / "run")
    assert "missing" in one_line_error(excinfo)


def test_open_rejects_a_database_without_the_table(tmp_path):
    RunStore.create(tmp_path / "run", config()).close()
    conn = sqlite3.connect(tmp_path / "run" / "evaluations.sqlite")
    conn.execute("DROP TABLE evaluations")
    conn.commit()
    conn.close()
    with pytest.raises(EvostitchError) as excinfo:
        RunStore.open(tmp_path / "run")
    one_line_error(excinfo)


def test_one_writer_at_a_time(tmp_path):
    with RunStore.create(tmp_path / "run", config()) as store:
        store.add(record((1,)))
        with pytest.raises(EvostitchError) as excinfo:
            RunStore.open(tmp_path / "run")
        assert "in use" in one_line_error(excinfo)
        with RunStore.open(tmp_path / "run", readonly=True) as reader:
            assert reader.count() == 1
    RunStore.open(tmp_path / "run").close()  # released on close


def test_checkpoint_roundtrip_is_atomic(tmp_path):
    with RunStore.create(tmp_path / "run", config()) as store:
        assert store.load_checkpoint() is None
        store.save_checkpoint({"state": {"x": [1, 2]}, "best": math.inf})
        store.save_checkpoint({"state": {"x": [3]}, "best": 1.0})
        assert store.load_checkpoint() == {"state": {"x": [3]}, "best": 1.0}
    leftovers = [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    (tmp_path / "run" / "checkpoint.json").write_text("{trunc")
    with RunStore.open(tmp_path / "run") as store, pytest.raises(EvostitchError) as excinfo:
        store.load_checkpoint()
    one_line_error(excinfo)


def test_genotype_key_is_compact_json():
    assert genotype_key((0, 1, 2)) == json.dumps([0, 1, 2], separators=(",", ":"))
    assert genotype_key(np.array([2, 0], dtype=np.int8)) == "[2,0]"


def test_readable_json_reads_back_and_keeps_flat_lists_on_one_line():
    data = {"a": [1, 2], "b": {"c": [[0, 1], [1, None]], "d": {}}, "e": [], "f": math.inf}
    text = readable_json(data)
    assert json.loads(text) == json.loads(json.dumps(data))
    assert '"a": [1, 2]' in text and "[1, null]" in text


def test_queued_writes_are_committed_in_order(tmp_path):
    with RunStore.create(tmp_path / "run", config()) as store:
        store.add_later(record((1, 1)))
        store.add_later(record((0, 1), objectives=None, error="failed"))
        store.save_checkpoint_later({"rows": 2})
        assert store.count() == 2  # a read waits for the queue
        assert store.load_checkpoint() == {"rows": 2}
        store.add_later(record((0, 0)))
    with RunStore.open(tmp_path / "run") as store:  # close() committed the last one
        assert [r.genotype for r in store.records()] == [(1, 1), (0, 1), (0, 0)]


def test_a_failed_queued_write_is_raised_and_stops_the_later_ones(tmp_path):
    store = RunStore.create(tmp_path / "run", config())
    store.add_later(record((1, 1), objectives=(object(),)))  # json fails in the writer
    store.save_checkpoint_later({"rows": 1})
    with pytest.raises(EvostitchError, match="could not write to the run folder") as info:
        store.flush()
    assert isinstance(info.value.__cause__, TypeError)
    with pytest.raises(EvostitchError, match="could not write to the run folder"):
        store.close()
    assert not (tmp_path / "run" / "checkpoint.json").exists()

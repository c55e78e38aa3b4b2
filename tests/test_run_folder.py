"""A run folder someone sent us (issue 41, defects 1, 2, 3 and 8): a `run.lock` link, a
database with a trigger or a (recursive) view, crafted config, rows and checkpoint, and
failed evaluations retried on `--resume`. Each case ends in success or in one line (exit
2 through the CLI), touches nothing outside the folder and changes no stored row."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import evostitch
from conftest import tiny_run
from evostitch.errors import RunError
from evostitch.evolution.algorithms import make_algorithm
from evostitch.evolution.loop import resume_search, run_search
from evostitch.evolution.store import EvaluationRecord, RunStore
from evostitch.results.findings import compute_findings, finding_texts
from toys import RandomSearch, new_store, toy_objectives, toy_problem

TRIGGER = (
    "CREATE TRIGGER cheat AFTER INSERT ON evaluations BEGIN UPDATE evaluations"
    " SET objectives = '[-1.0, 1.0]' WHERE id = NEW.id; END"
)
# `evaluations` replaced by a view that never ends: our reads would run forever
RECURSIVE_VIEW = (
    "ALTER TABLE evaluations RENAME TO kept",
    "CREATE VIEW evaluations AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1"
    " FROM n) SELECT kept.* FROM kept, n",
)


def one_line(error: BaseException | str) -> str:
    message = str(error)
    assert message and "\n" not in message and "Traceback" not in message
    return message


def db_rows(run: Path, table: str = "evaluations") -> list[tuple]:
    """Every stored row, read straight from SQLite (a SELECT runs no trigger)."""
    conn = sqlite3.connect(f"{(run / 'evaluations.sqlite').as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
    finally:
        conn.close()


def execute(run: Path, *statements: str) -> None:
    conn = sqlite3.connect(run / "evaluations.sqlite", isolation_level=None)
    try:
        for sql in statements:
            conn.execute(sql)
    finally:
        conn.close()


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, **changes}))


def toy_run(path: Path, budget: int = 20, evaluate=toy_objectives) -> Path:
    """A finished toy run (12 bits, milliseconds), with its checkpoint."""
    problem = toy_problem(evaluate)
    with new_store(path, budget=budget) as store:
        run_search(problem, RandomSearch(problem, seed=1), store, progress=False)
    return path


def toy_resume(run: Path, budget: int | None = None, evaluate=toy_objectives):
    problem = toy_problem(evaluate)
    return resume_search(
        run, problem, lambda c: RandomSearch(problem, c.seed), budget=budget, progress=False
    )


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real entry point (`main()`: an EvostitchError is one line and exit 2)."""
    command = [sys.executable, "-m", "evostitch.cli", *map(str, args)]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def refused(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode == 2, result.stderr
    line = one_line(result.stderr.strip())
    for word in words:
        assert word in line, line
    return line


# -- defect 1: run.lock ------------------------------------------------------------------
@pytest.mark.parametrize("existing", [False, True])
def test_a_run_lock_link_is_refused_and_its_target_untouched(tmp_path, existing):
    run = toy_run(tmp_path / "run")
    before = db_rows(run)
    target = tmp_path / "users-file.txt"
    if existing:
        target.write_text("the user's own words")
    (run / "run.lock").unlink()
    (run / "run.lock").symlink_to(target)
    for open_it in (
        lambda: RunStore.open(run),
        lambda: RunStore.create(run, {"algorithm": "x", "budget": 1}, resume=True),
        lambda: toy_resume(run, budget=30),
    ):
        with pytest.raises(RunError) as info:
            open_it()
        assert "symbolic link" in one_line(info.value)
    assert target.read_text() == "the user's own words" if existing else not target.exists()
    assert db_rows(run) == before
    with RunStore.open(run, readonly=True) as store:  # a reader takes no lock: fine
        assert store.count() == len(before)


@pytest.mark.parametrize("name", ["evaluations.sqlite", "evaluations.sqlite-wal"])
def test_a_linked_database_file_is_refused(tmp_path, name):
    run = toy_run(tmp_path / "run")
    other = toy_run(tmp_path / "other")
    before = db_rows(other)
    (run / name).unlink(missing_ok=True)
    (run / name).symlink_to(other / "evaluations.sqlite")
    with pytest.raises(RunError) as info:
        toy_resume(run, budget=30)
    assert "symbolic link" in one_line(info.value)
    assert db_rows(other) == before


# -- defect 3: the database's schema is exactly ours --------------------------------------
@pytest.mark.parametrize(
    "statements, named",
    [
        ((TRIGGER,), "trigger 'cheat'"),
        (("CREATE VIEW best AS SELECT * FROM evaluations",), "view 'best'"),
        (RECURSIVE_VIEW, "view 'evaluations'"),
        (("CREATE TABLE notes (x)",), "table 'notes'"),
        (("CREATE INDEX by_status ON evaluations (status)",), "index 'by_status'"),
        (("ALTER TABLE evaluations ADD COLUMN extra TEXT",), "other evaluations columns"),
    ],
)
def test_a_database_that_is_not_exactly_ours_is_refused(tmp_path, statements, named):
    run = toy_run(tmp_path / "run")
    table = "kept" if statements is RECURSIVE_VIEW else "evaluations"
    execute(run, *statements)
    before = db_rows(run, table)
    for readonly in (True, False):
        with pytest.raises(RunError) as info:
            RunStore.open(run, readonly=readonly)
        message = one_line(info.value)
        assert named in message and "not an evostitch run database" in message
    with pytest.raises(RunError):
        toy_resume(run, budget=40)
    assert db_rows(run, table) == before


def test_a_database_older_than_racing_is_still_ours(tmp_path):
    run = toy_run(tmp_path / "run")
    execute(
        run,
        "ALTER TABLE evaluations DROP COLUMN bound",
        "ALTER TABLE evaluations DROP COLUMN images",
    )
    with RunStore.open(run, readonly=True) as store:
        assert store.count() == 20 and all(r.images is None for r in store.records())
    assert toy_resume(run, budget=25).performed == 25  # the writer adds racing's columns
    assert len(db_rows(run)[0]) == 13


# -- defect 8: what is read from the folder is checked ------------------------------------
@pytest.mark.parametrize(
    "column, value, why",
    [
        ("genotype", "not json", "genotype"),
        ("genotype", "[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]", "genotype"),
        ("genotype", "[-1,0,0,0,0,0,0,0,0,0,0,0]", "non-negative"),
        ("genotype", "[1,0]", "variables"),
        ("canonical", '["a"]', "canonical"),
        ("objectives", '["0.9", "1e6"]', "finite numbers"),
        ("objectives", "[NaN, 1.0]", "finite numbers"),
        ("objectives", "[-Infinity, 1.0]", "finite numbers"),
        ("objectives", "[1e999, 1.0]", "finite numbers"),
        ("objectives", "[1.0, 2.0, 3.0]", "objectives"),
        ("objectives", "NULL", "objectives"),
        ("seconds", "'slow'", "seconds"),
        ("images", "'many'", "racing"),
    ],
)
def test_a_crafted_row_is_one_line_naming_its_id(tmp_path, column, value, why):
    run = toy_run(tmp_path / "run")
    rid = db_rows(run)[5][0]
    literal = value if value in ("NULL",) or value.startswith("'") else f"'{value}'"
    execute(run, f"UPDATE evaluations SET {column} = {literal} WHERE id = {rid}")
    before = db_rows(run)
    with pytest.raises(RunError) as info, RunStore.open(run, readonly=True) as store:
        list(store.records())
    message = one_line(info.value)
    assert f"row id {rid} " in message and why in message, message
    with pytest.raises(RunError, match=f"row id {rid} "):
        toy_resume(run, budget=30)
    assert db_rows(run) == before


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"problem": "a string"}, "problem"),
        ({"budget": "10"}, "budget"),
        ({"budget": 0}, "budget"),
        ({"budget": 2e10}, "budget"),
        ({"budget": 10**12}, "budget"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"algorithm": 5}, "algorithm"),
        ({"params": [1, 2]}, "params"),
        ({"params": {"pop_size": "8"}}, "pop_size"),
        ({"params": {"p_stitch": float("nan")}}, "p_stitch"),
        ({"problem": {"kind": "stitching", "supernet": 1, "data": "d", "split": "val"}}, "problem"),
        (
            {
                "problem": {
                    "kind": "stitching",
                    "supernet": "s",
                    "data": "d",
                    "split": "val",
                    "output_choices": "ab",
                }
            },
            "output_choices",
        ),  # fmt: skip
    ],
)
def test_a_crafted_config_is_one_line(tmp_path, changes, field):
    run = toy_run(tmp_path / "run")
    edit_json(run / "config.json", **changes)
    before = db_rows(run)
    for open_it in (lambda: RunStore.open(run, readonly=True), lambda: toy_resume(run)):
        with pytest.raises(RunError) as info:
            open_it()
        message = one_line(info.value)
        assert "config.json" in message and field in message, message
    assert db_rows(run) == before


def test_special_files_in_a_run_are_refused_not_read(tmp_path):
    run = toy_run(tmp_path / "run")
    for name in ("config.json", "checkpoint.json"):
        saved = (run / name).read_bytes()
        (run / name).unlink()
        os.mkfifo(run / name)  # reading it would wait for a writer forever
        with pytest.raises(RunError) as info:
            toy_resume(run, budget=30)
        assert "not a regular file" in one_line(info.value)
        (run / name).unlink()
        (run / name).write_bytes(saved)
    assert toy_resume(run, budget=30).performed == 30


@pytest.mark.parametrize(
    "changes",
    [
        {"counters": {"requested": "5", "cache_hits": 0}},
        {"counters": [1, 2]},
        {"rows": "20"},
        {"state": "x"},
        {"algorithm": 3},
    ],
)
def test_a_checkpoint_of_the_wrong_types_says_how_to_restart(tmp_path, changes):
    run = toy_run(tmp_path / "run")
    edit_json(run / "checkpoint.json", **changes)
    before = db_rows(run)
    with pytest.raises(RunError) as info:
        toy_resume(run, budget=30)
    assert "delete it to restart the algorithm" in one_line(info.value)
    assert db_rows(run) == before
    (run / "checkpoint.json").unlink()  # what the message says: the stored rows are kept
    assert toy_resume(run, budget=30).performed == 30
    assert db_rows(run)[:20] == before


def test_a_checkpoint_that_is_not_an_object_says_how_to_restart(tmp_path):
    run = toy_run(tmp_path / "run")
    (run / "checkpoint.json").write_text("[1, 2]")
    with pytest.raises(RunError, match="delete it to restart"):
        toy_resume(run, budget=30)


def test_objectives_that_are_not_finite_are_never_stored(tmp_path):
    with new_store(tmp_path / "run", budget=5) as store:
        for bad in ((math.nan, 1.0), (-math.inf, 1.0)):
            record = EvaluationRecord((0,) * 12, (0,) * 12, bad)
            with pytest.raises(RunError) as info:
                store.add(record)
            assert "not finite" in one_line(info.value)
        assert store.count() == 0


# -- defect 2: failed evaluations are retried on resume -----------------------------------
def flaky(genotype):
    """Fails for a third of the networks (a bad image in their data, say)."""
    if sum(genotype) % 3 == 1:
        raise OSError("image file is truncated")
    return toy_objectives(genotype)


@pytest.mark.parametrize("algorithm", ["test-random", "ga"])
def test_failed_evaluations_are_retried_on_resume_in_their_rows(tmp_path, algorithm):
    def make(problem, config):
        if algorithm == "test-random":
            return RandomSearch(problem, config.seed)
        return make_algorithm("ga", problem, config.seed, pop_size=8, budget=config.budget)

    problem = toy_problem(flaky)
    with new_store(tmp_path / "run", budget=30) as store:
        first = run_search(problem, make(problem, store.config), store, progress=False)
    before = db_rows(tmp_path / "run")  # (id, genotype, canonical, objectives, status, error...)
    failed = {row[0] for row in before if row[4] == "failed"}
    assert first.failed == len(failed) > 0 and len(before) == 30

    problem = toy_problem()  # the data was fixed
    result = resume_search(tmp_path / "run", problem, lambda c: make(problem, c), progress=False)
    after = db_rows(tmp_path / "run")
    assert result.retried == len(failed) and result.failed == 0
    assert result.performed == 30 and result.evaluated_now == 0  # the budget counts rows
    assert [row[0] for row in after] == [row[0] for row in before]  # same ids, none added
    assert len({row[2] for row in after}) == 30  # one row per canonical genotype
    for old, new in zip(before, after, strict=True):
        if old[0] in failed:
            assert new[1:3] == old[1:3] and new[4] == "ok" and new[5] is None
            assert json.loads(new[3]) == list(toy_objectives(json.loads(new[2])))
        else:
            assert new == old  # nothing else touched


def test_a_retry_that_fails_again_stays_failed_and_is_counted_once(tmp_path):
    problem = toy_problem(flaky)
    with new_store(tmp_path / "run", budget=20) as store:
        run_search(problem, RandomSearch(problem, 1), store, progress=False)
    before = db_rows(tmp_path / "run")
    result = toy_resume(tmp_path / "run", evaluate=flaky)  # not fixed yet
    after = db_rows(tmp_path / "run")
    assert result.retried == result.failed == sum(row[4] == "failed" for row in before) > 0
    assert [(r[0], r[2], r[4]) for r in after] == [(r[0], r[2], r[4]) for r in before]


# -- findings on a run with failures only ------------------------------------------------
def test_findings_of_a_run_with_failed_rows_only(tmp_path):
    def broken(genotype):
        raise OSError("image file is truncated")

    problem = toy_problem(broken)
    with new_store(tmp_path / "run", budget=10) as store:
        run_search(problem, RandomSearch(problem, 1), store, progress=False)
        stored, checkpoint = list(store.records()), store.load_checkpoint()
    assert stored and not any(r.ok for r in stored)
    findings = compute_findings([], stored=stored, checkpoint=checkpoint, ref_point=None)
    texts = finding_texts(findings)
    assert all(isinstance(t, str) and t for t in texts)
    assert findings["inactive_variables"]["evaluations"] == 10
    crafted = {"counters": {"requested": "x"}, "state": {"memo_hits": "y"}}
    compute_findings([], stored=stored, checkpoint=crafted, hold={"p": 1, "text": 5})


# -- end to end on a tiny stitching run: the CLI and the API ------------------------------
@pytest.fixture(scope="module")
def stitched(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory, "run-folder")


def fresh(stitched: Path, tmp_path: Path) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(stitched, run)
    return run


@pytest.mark.slow
def test_cli_resume_with_a_trigger_is_refused_and_rows_unchanged(stitched, tmp_path):
    run = fresh(stitched, tmp_path)
    execute(run, TRIGGER)
    before = db_rows(run)
    refused(cli("search", "--resume", run, "--budget", "34"), "trigger 'cheat'")
    with pytest.raises(RunError, match="trigger 'cheat'"):
        evostitch.resume(run, budget=34, progress=False)
    with pytest.raises(RunError, match="trigger 'cheat'"):
        evostitch.load_run(run)
    assert db_rows(run) == before and len(before) == 30


@pytest.mark.slow
def test_cli_report_on_a_recursive_view_ends_in_one_line(stitched, tmp_path):
    run = fresh(stitched, tmp_path)
    execute(run, *RECURSIVE_VIEW)
    before = db_rows(run, "kept")
    refused(cli("report", run, timeout=60), "not an evostitch run database")
    assert db_rows(run, "kept") == before
    assert not (run / "report.html").exists()


@pytest.mark.slow
def test_cli_resume_with_a_run_lock_link_creates_nothing(stitched, tmp_path):
    run = fresh(stitched, tmp_path)
    target = tmp_path / "elsewhere" / "created-by-us"
    target.parent.mkdir()
    (run / "run.lock").unlink(missing_ok=True)
    (run / "run.lock").symlink_to(target)
    before = db_rows(run)
    refused(cli("search", "--resume", run, "--budget", "34"), "symbolic link")
    assert not target.exists() and list(target.parent.iterdir()) == []
    assert db_rows(run) == before


@pytest.mark.slow
def test_cli_problem_as_text_is_one_line(stitched, tmp_path):
    run = fresh(stitched, tmp_path)
    edit_json(run / "config.json", problem="digits")
    refused(cli("report", run), "config.json", "problem")
    refused(cli("search", "--resume", run), "config.json", "problem")


@pytest.mark.slow
def test_api_resume_retries_a_stitching_runs_failures(stitched, tmp_path):
    run = fresh(stitched, tmp_path)
    execute(
        run,
        "UPDATE evaluations SET status = 'failed', objectives = NULL, images = NULL,"
        " bound = NULL, error = 'OSError: image file is truncated' WHERE id % 4 = 0",
    )
    before = db_rows(run)
    failed = [row[0] for row in before if row[4] == "failed"]
    assert len(failed) == 7
    resumed = evostitch.resume(run, progress=False)
    after = db_rows(run)
    assert resumed.result.retried == 7 and resumed.result.failed == 0
    assert [row[0] for row in after] == [row[0] for row in before]
    assert all(row[4] == "ok" for row in after)
    assert [row[:3] for row in after] == [row[:3] for row in before]
    assert (run / "front.csv").is_file()


# -- a run on a read-only mount (a real one: chmod does not stop root) --------------------
@pytest.fixture
def read_only_view(tmp_path):
    """`tmp_path/ro`: a read-only bind mount of `tmp_path/src` (skipped where mounting
    is not allowed)."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    bind = subprocess.run(["mount", "--bind", src, ro], capture_output=True)
    if bind.returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", ro], check=True, capture_output=True)
        yield src, ro
    finally:
        subprocess.run(["umount", ro], check=True)


def test_a_run_on_a_read_only_mount_is_read_and_refused_for_writing(read_only_view):
    src, ro = read_only_view
    toy_run(src / "run")
    with RunStore.open(ro / "run", readonly=True) as store:
        assert store.count() == 20 and store.load_checkpoint() is not None
    with pytest.raises(RunError) as info:
        toy_resume(ro / "run", budget=30)
    assert "Read-only file system" in one_line(info.value)

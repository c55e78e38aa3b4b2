"""Folders someone sent us, damaged at random: `inspect`, `report` and `search --resume`
end in success or in one line with exit 2, never a traceback, never a hang, and never
write outside the folder (issue 41: the person who is sent a folder, USERS.md story 4).

Each case copies a tiny real supernetwork and run, applies one seeded mutation (a JSON
field given another type or range, a file truncated, deleted, replaced by garbage, a
FIFO or a link to a file of the user's, an extra file, a row of the run database
rewritten), then runs the commands through the real entry point (`cli.app.main`)."""

from __future__ import annotations

import collections
import faulthandler
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from conftest import tiny_run
from evostitch import load_run
from evostitch.cli.app import main

pytestmark = pytest.mark.slow

# mutations in all, supernetwork and run folders alternating (more: FUZZ_CASES=1000)
CASES = int(os.environ.get("FUZZ_CASES", 110))
HANG = 30  # seconds a command may take before it counts as a hang
VALUES = [
    None,
    True,
    -1,
    0,
    2e10,
    10**30,
    float("nan"),
    float("inf"),
    -0.5,
    "",
    "x",
    "<!--<script>",
    "../../etc",
    [],
    [1, 2],
    ["a"],
    [[1, 200000, 200000]],
    {},
    {"a": 1},
]


# -- mutations ----------------------------------------------------------------------------
def _paths(data, prefix=()):
    """Every path into a JSON value (keys and indices), the root excluded."""
    items = (
        data.items()
        if isinstance(data, dict)
        else enumerate(data)
        if isinstance(data, list)
        else ()
    )
    for key, value in items:
        yield (*prefix, key)
        yield from _paths(value, (*prefix, key))


def mutate_json(file: Path, rng: random.Random) -> str:
    data = json.loads(file.read_text())
    paths = list(_paths(data))
    path = rng.choice(paths)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if rng.random() < 0.2 and isinstance(parent, dict):
        del parent[path[-1]]
        what = "deleted"
    else:
        parent[path[-1]] = rng.choice(VALUES)
        what = f"= {parent[path[-1]]!r}"
    file.write_text(json.dumps(data))  # NaN and Infinity as Python's json writes them
    return f"{file.name}{list(path)} {what}"


def mutate_file(file: Path, rng: random.Random, outside: Path) -> str:
    kind = rng.choice(["truncate", "garbage", "delete", "fifo", "link-out", "empty", "folder"])
    if kind == "truncate":
        data = file.read_bytes()
        file.write_bytes(data[: rng.randrange(max(len(data), 1))])
    elif kind == "garbage":
        file.write_bytes(rng.randbytes(rng.randrange(1, 4096)))
    elif kind == "empty":
        file.write_bytes(b"")
    else:
        file.unlink()
        if kind == "fifo":
            os.mkfifo(file)
        elif kind == "link-out":
            file.symlink_to(outside / "victim.txt")
        elif kind == "folder":
            file.mkdir()
    return f"{file.name} {kind}"


def mutate_database(db: Path, rng: random.Random) -> str:
    conn = sqlite3.connect(db)
    ids = [r[0] for r in conn.execute("SELECT id FROM evaluations")]
    column = rng.choice(["genotype", "canonical", "objectives", "status", "seconds", "worker"])
    value = rng.choice(["[", "abc", "[1e999, 5]", "[NaN, 3]", '["a", "b"]', "[-1]", None, 3.5])
    kind = rng.choice(["row", "row", "row", "trigger", "view", "drop", "extra-table"])
    try:
        if kind == "row":
            conn.execute(
                f"UPDATE evaluations SET {column} = ? WHERE id = ?", (value, rng.choice(ids))
            )
            what = f"row {column} = {value!r}"
        elif kind == "trigger":
            conn.execute(
                "CREATE TRIGGER t AFTER INSERT ON evaluations BEGIN UPDATE evaluations"
                " SET objectives = '[-1.0, 1.0]' WHERE id = new.id; END"
            )
            what = "trigger"
        elif kind == "view":
            conn.execute(
                "CREATE VIEW v AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1"
                " FROM c) SELECT x FROM c"
            )
            what = "recursive view"
        elif kind == "drop":
            conn.execute("DROP TABLE evaluations")
            what = "table dropped"
        else:
            conn.execute("CREATE TABLE extra (x)")
            what = "extra table"
        conn.commit()
    except sqlite3.DatabaseError as e:  # a CHECK or NOT NULL constraint: mutation refused
        what = f"{kind} refused by sqlite ({e})"
    conn.close()
    return f"evaluations.sqlite {what}"


def mutate(folder: Path, rng: random.Random, outside: Path) -> str:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    roll = rng.random()
    if roll < 0.1:
        (folder / rng.choice(["extra.json", "stitches.bin", "x"])).write_bytes(b"{}")
        return "extra file"
    if roll < 0.15:  # a file the commands write, linked to one of the user's
        name = rng.choice(["front.csv", "report.html", "front.png", "run.lock"])
        (folder / name).unlink(missing_ok=True)
        (folder / name).symlink_to(outside / "victim.txt")
        return f"{name} link-out"
    if roll < 0.3:
        return mutate_file(rng.choice(files), rng, outside)
    if (folder / "evaluations.sqlite").is_file() and roll < 0.6:
        return mutate_database(folder / "evaluations.sqlite", rng)
    jsons = [p for p in files if p.suffix == ".json"]
    return mutate_json(rng.choice(jsons), rng)


# -- running a command as a user does -----------------------------------------------------
class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang


def cli(args: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of `evostitch ARGS` through the real entry point."""
    argv = sys.argv
    sys.argv = ["evostitch", *args]
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG)
    # a hang inside C code (which the alarm cannot break) ends the tests with its traceback
    faulthandler.dump_traceback_later(HANG * 2, exit=True, file=sys.__stderr__)
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.alarm(0)
        sys.argv = argv
    return code, capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny supernetwork folder and a run of it (re-evaluated on test) whose config names
    that folder."""
    run = tiny_run(tmp_path_factory, "fuzz")
    sn = run.parent / "sn"
    config = json.loads((run / "config.json").read_text())
    shutil.copytree(config["problem"]["supernet"], sn)
    config["problem"]["supernet"] = str(sn)
    (run / "config.json").write_text(json.dumps(config))
    load_run(run).reevaluate("test")  # its file is read by report: damaged too
    return sn, run


def fresh(pristine: tuple[Path, Path], where: Path) -> tuple[Path, Path]:
    """A copy of the pristine pair in `where`, the run naming its own supernetwork."""
    sn, run = where / "sn", where / "run"
    shutil.copytree(pristine[0], sn)
    shutil.copytree(pristine[1], run)
    config = json.loads((run / "config.json").read_text())
    config["problem"]["supernet"] = str(sn)
    (run / "config.json").write_text(json.dumps(config))
    return sn, run


def commands(sn: Path, run: Path, case: int) -> list[list[str]]:
    """The commands that read the damaged folder: a damaged supernetwork through `inspect`
    and, in turn, `report` or `search --resume` of a run over it; a damaged run through both."""
    report, resume = ["report", str(run)], ["search", "--resume", str(run), "--budget", "33"]
    if case % 2:
        return [["inspect", str(sn), "--json"], report if case % 4 == 1 else resume]
    return [report, resume]


def run_case(args: list[str], what: str, capsys, codes: collections.Counter) -> str | None:
    """What went wrong running one command on a damaged folder, or None."""
    try:
        code, err = cli(args, capsys)
    except Hang:
        return f"{what}: {args[0]} hung over {HANG} s"
    except Exception as e:  # escaped the entry point: a traceback for a user
        return f"{what}: {args[0]} raised {type(e).__name__}: {e}"[:300]
    codes[args[0], code] += 1
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    if code not in (0, 2) or (code == 2 and len(lines) != 1):
        return f"{what}: {args[0]} exit {code}: {err[-300:]!r}"
    return None


def test_random_damage_ends_in_one_line_and_never_writes_outside(pristine, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("the user's own file\n")
    before = snapshot(outside)
    control = fresh(pristine, tmp_path / "control")  # undamaged: every command succeeds
    for args in [["inspect", str(control[0]), "--json"], *commands(*control, 0)]:
        assert cli(args, capsys)[0] == 0, args
    shutil.rmtree(tmp_path / "control")
    rng, failures, codes = random.Random(41), [], collections.Counter()
    for case in range(CASES):
        where = tmp_path / "case"
        sn, run = fresh(pristine, where)
        what = mutate(sn if case % 2 else run, rng, outside)
        for args in commands(sn, run, case):
            failures.append(run_case(args, what, capsys, codes))
        if snapshot(outside) != before or sorted(os.listdir(tmp_path)) != ["case", "outside"]:
            failures.append(f"{what}: wrote outside its folder")
            (outside / "victim.txt").write_text("the user's own file\n")
            before = snapshot(outside)
        shutil.rmtree(where)
    failures = [f for f in failures if f]
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:40])
    # the damage is not all fatal: some cases still succeed, so the commands really ran
    assert all(codes[command, 0] > 0 for command in ("inspect", "report", "search")), codes

"""`evostitch search` on a small real stitching problem: two tiny CNNs on 8x8 digits."""

from __future__ import annotations

import csv
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evostitch.cli import main
from evostitch.evolution.archive import hypervolume, nondominated, reference_point_from
from evostitch.evolution.base import Algorithm, Candidate
from evostitch.evolution.store import RunStore
from evostitch.results.findings import hypervolume_box
from evostitch.supernet import Supernet

ALGORITHMS = ["rs", "ga", "gomea", "lk-gomea", "nsga2"]
BUDGET = 30  # evaluations take ~0.1-1 s each here


@pytest.fixture(scope="module")
def supernet(tmp_path_factory) -> tuple[Path, Supernet]:
    """A saved supernetwork (111 variables) whose stitches had a few training steps."""
    from evostitch.data import load_dataset
    from evostitch.training import train_stitches

    net = Supernet.build(["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8))
    net.data = "digits"
    train_stitches(net, load_dataset("digits", "train"), samples=64, downstream=0, progress=False)
    folder = tmp_path_factory.mktemp("stitching") / "sn"
    net.save(folder)
    return folder, net


def cli(*args: str | Path) -> int:
    """Run `evostitch ARGS` in this process; its exit code."""
    argv = sys.argv
    sys.argv = ["evostitch", *map(str, args)]
    try:
        main()
    except SystemExit as exc:
        return exc.code or 0
    finally:
        sys.argv = argv
    return 0


def stored(run: Path) -> list:
    with RunStore.open(run, readonly=True) as store:
        return list(store.records())


def db_rows(run: Path) -> list[tuple]:
    """(id, canonical, objectives, status) of every stored row, straight from SQLite
    (none while the database is still missing)."""
    try:
        conn = sqlite3.connect(f"{(run / 'evaluations.sqlite').as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return []
    try:
        sql = "SELECT id, canonical, objectives, status FROM evaluations ORDER BY id"
        return conn.execute(sql).fetchall()
    except sqlite3.Error:
        return []
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_search_spends_its_budget_on_new_networks(
    supernet, tmp_path, capsys, monkeypatch, algorithm
):
    folder, net = supernet
    monkeypatch.setenv("COLUMNS", "200")  # the whole progress line, not cut to 80
    run = tmp_path / "run"
    args = ["--algorithm", algorithm, "--budget", str(BUDGET), "--population", "8"]
    # no steering: these parents are untrained (accuracy ~0.1), and a floor above them
    # would empty the archive the progress bar's hypervolume is taken from
    args += ["--steer-to", "0"]
    assert cli("search", folder, "--out", run, *args) == 0
    out, err = capsys.readouterr()
    assert f"{BUDGET} evaluations performed" in out and "stopped: budget" in out
    records = stored(run)
    assert len(records) == len({r.canonical for r in records}) == BUDGET
    assert set(net.reference_genotypes) <= {r.canonical for r in records}
    checkpoint = json.loads((run / "checkpoint.json").read_text())
    counters = checkpoint["counters"]
    # hits are free (with --batch 8 a network can be asked again while it is in flight;
    # how often depends on the trained stitches, so only the accounting is checked)
    assert counters["performed"] == BUDGET
    assert counters["requested"] == counters["performed"] + counters["cache_hits"]
    if algorithm != "nsga2":  # few-ones genotypes: many known networks
        # (NSGA-II's 3 generations may or may not recombine into a known network; its
        # memo is checked deterministically in test_search_algorithms)
        assert checkpoint["state"]["memo_hits"] > 0
    with open(run / "front.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"parent-a", "parent-b", "ensemble", "ensemble-prob"} <= {r["solution"] for r in rows}
    front = {r.objectives for r in nondominated(records)}
    assert {(-float(r["metric"]), float(r["macs"])) for r in rows if not r["solution"]} <= front
    # progress bar: evaluations, hits, rate, busy workers and the hypervolume as the
    # report shows it (a fraction of the box), the stored front's at the end
    assert f"{BUDGET}/{BUDGET}" in err and "/s busy" in err
    refs = [r.objectives for r in records if r.canonical in set(net.reference_genotypes)]
    point = reference_point_from(refs)
    final = hypervolume([r.objectives for r in records if r.ok], point) / hypervolume_box(point)
    assert 0 < final < 1
    assert float(re.findall(r"HV ([\d.]+)", err)[-1]) == pytest.approx(final, abs=6e-5)


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    """Checked before anything is loaded or created (no supernetwork needed)."""
    missing = tmp_path / "missing"
    cases = [
        ["search", missing, "--out", tmp_path / "a", "--algorithm", "sa"],
        ["search", missing, "--out", tmp_path / "b"],
        ["search", missing, "--out", tmp_path / "b", "--data", "digits"],
        ["search", "--resume", tmp_path / "a", "--out", tmp_path / "c"],
        ["search", "--resume", tmp_path / "no-run"],
        ["search", missing, "--out", tmp_path / "d", "--budget", "0"],
        ["search", missing, "--out", tmp_path / "d", "--batch", "0"],
        ["search", "--resume", tmp_path / "d", "--batch", "0"],
        ["search", missing],
    ]
    for args in cases:
        assert cli(*args) == 2, args
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), (args, err)
    assert not any((tmp_path / name).exists() for name in "abcd")


@pytest.mark.slow
def test_resume_after_sigkill_keeps_every_evaluation_once(supernet, tmp_path, capsys, sigkill_when):
    folder, net = supernet
    run, budget = tmp_path / "run", BUDGET
    command = [sys.executable, "-m", "evostitch.cli", "search", str(folder), "--out", str(run)]
    command += ["--algorithm", "lk-gomea", "--budget", str(budget), "--population", "8"]
    command += ["--steer-to", "0.05"]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def ready() -> bool:
        return len(db_rows(run)) >= 10 and (run / "checkpoint.json").exists()

    sigkill_when(child, ready, 300, "the search stored nothing")
    before = db_rows(run)
    assert 10 <= len(before) < budget

    assert cli("search", "--resume", run) == 0
    out = capsys.readouterr().out
    assert f"{budget} evaluations performed" in out and "stopped: budget" in out
    after = db_rows(run)
    assert after[: len(before)] == before  # every stored row kept, unchanged
    assert len(after) == len({r[1] for r in after}) == budget  # none twice
    # the algorithm's archive is the stored front above the final metric floor
    state = json.loads((run / "checkpoint.json").read_text())["state"]
    records = {r.canonical: r for r in stored(run)}
    floor = state["archive"]["floor"]
    archive = [(net.canonical(g), tuple(f)) for g, f in state["archive"]["solutions"]]
    assert all(records[c].objectives == f for c, f in archive)
    above = [r for r in records.values() if r.ok and -r.objectives[0] >= floor]
    assert {f for _, f in archive} == {r.objectives for r in nondominated(above)}


def test_val_subset_is_searched_and_recorded(supernet, tmp_path):
    """--val-subset N: every evaluation scores N seeded validation digits (accuracies are
    multiples of 1/N), the run records N (what --resume rebuilds), and --resume refuses
    another N."""
    import evostitch
    from evostitch.data import load_dataset, subset

    folder, net = supernet
    run_dir = tmp_path / "run"
    assert cli("search", folder, "--out", run_dir, "--budget", "6", "--val-subset", "40",
               "--population", "4", "--algorithm", "rs") == 0  # fmt: skip
    run = evostitch.load_run(run_dir)
    assert run.config.problem["subset"] == 40
    records = stored(run_dir)
    assert records and all(abs(-r.objectives[0] * 40 - round(-r.objectives[0] * 40)) < 1e-6
                           for r in records)  # fmt: skip
    full = load_dataset("digits", "val")
    assert len(subset(full, 40)) == 40 and subset(full, 40).indices == subset(full, 40).indices
    assert cli("search", "--resume", run_dir, "--val-subset", "40") == 2  # the run's own
    assert cli("search", folder, "--out", tmp_path / "run2", "--budget", "1",
               "--val-subset", "0") == 2  # fmt: skip


def test_resume_with_a_larger_budget_searches_further(supernet, tmp_path, capsys):
    """A finished run given --budget N on --resume goes on to N evaluations (config.json
    records N, so a later --resume stops there), keeping every stored row; a budget under
    the stored evaluations, and settings that are the run's own, fail in one line and
    change nothing."""
    folder, _ = supernet
    run = tmp_path / "run"
    assert cli("search", folder, "--out", run, "--budget", "8", "--population", "4",
               "--algorithm", "ga") == 0  # fmt: skip
    before = db_rows(run)
    assert len(before) == 8
    capsys.readouterr()
    for args in (["--budget", "5"], ["--seed", "1"], ["--population", "8", "--steer-to", "0"]):
        assert cli("search", "--resume", run, *args) == 2, args
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("error:"), (args, err)
    assert "--population, --steer-to" in err[0]
    assert db_rows(run) == before
    assert json.loads((run / "config.json").read_text())["budget"] == 8

    assert cli("search", "--resume", run, "--budget", "14") == 0
    assert "14 evaluations performed" in capsys.readouterr().out
    after = db_rows(run)
    assert after[:8] == before and len(after) == len({r[1] for r in after}) == 14
    config = json.loads((run / "config.json").read_text())
    assert config["budget"] == 14 and config["params"]["budget"] == 8  # algorithm's own
    assert cli("search", "--resume", run) == 0  # done: nothing more
    assert "14 evaluations performed" in capsys.readouterr().out and len(db_rows(run)) == 14


def test_auto_runs_nsga2_and_records_it(supernet, tmp_path):
    """The default (`auto`): NSGA-II at every measured size; the run records the
    algorithm it ran (what --resume rebuilds), not `auto`."""
    import evostitch
    from evostitch.evolution.algorithms import AUTO_RUNS

    assert AUTO_RUNS == "nsga2"
    folder, net = supernet
    assert len(net.genotype_spec) == 111
    run_dir = tmp_path / "run"
    assert cli("search", folder, "--out", run_dir, "--budget", "3", "--population", "4") == 0
    assert evostitch.load_run(run_dir).config.algorithm == "nsga2"


def test_a_population_below_the_backends_capacity_is_noted(supernet, tmp_path, capsys):
    """A generation smaller than what the backend runs at once leaves workers idle: the
    search says so in one line, and not when the population fills the backend."""
    folder, _ = supernet
    assert cli("search", folder, "--out", tmp_path / "r1", "--budget", "2", "--population",
               "4", "--batch", "8") == 0  # fmt: skip
    assert "population 4 is below the 16 evaluations" in capsys.readouterr().err
    assert cli("search", folder, "--out", tmp_path / "r2", "--budget", "2", "--population",
               "16", "--batch", "8") == 0  # fmt: skip
    assert "is below the" not in capsys.readouterr().err


def one_flip(references, seed: int, i: int) -> tuple[int, ...]:
    """OneFlip's i-th genotype."""
    if i < len(references):
        return tuple(references[i])
    g = list(references[0])
    g[int(np.random.default_rng([seed, i]).integers(1, len(g)))] = 1
    return tuple(g)


class OneFlip(Algorithm):
    """A user's own ask/tell algorithm: the references, then a reference with one seeded
    switch flipped at a time (what a researcher plugs in through `register_algorithm`)."""

    def __init__(self, problem, seed=0, *, pop_size, **rest):
        super().__init__(problem, seed)
        self.asked, self.told = 0, {}

    def ask(self):
        self.asked += 1
        return Candidate(
            self.asked - 1, one_flip(self.problem.references, self.seed, self.asked - 1)
        )

    def tell(self, ticket, objectives):
        self.told[ticket] = list(objectives)

    def state_dict(self):
        return {"asked": self.asked}

    def load_state_dict(self, state):
        self.asked = state["asked"]


@pytest.fixture
def registry():
    """Algorithms a test registers are gone after it."""
    from evostitch.evolution.algorithms import ALGORITHMS, BUILTIN

    yield ALGORITHMS
    for name in set(ALGORITHMS) - set(BUILTIN):
        del ALGORITHMS[name]


def test_your_own_algorithm_searches_and_resumes_by_name(supernet, tmp_path, registry):
    """register_algorithm: `search(algorithm=name)` runs the user's ask/tell algorithm
    through the product's loop (the run records the name, the front is written), and
    `resume` rebuilds it by name; unregistered, resume says how in one line."""
    import evostitch

    evostitch.register_algorithm("one-flip", OneFlip)
    folder, net = supernet
    run = evostitch.search(folder, out=tmp_path / "run", algorithm="one-flip", budget=7,
                           population=4, progress=False)  # fmt: skip
    assert run.config.algorithm == "one-flip" and run.result.performed == 7
    asked = [net.canonical(one_flip(net.reference_genotypes, 0, i)) for i in range(40)]
    genotypes = [r.canonical for r in stored(tmp_path / "run")]
    assert len(genotypes) == 7 and genotypes == [g for g in dict.fromkeys(asked)][:7]
    assert (tmp_path / "run" / "front.csv").is_file()
    assert evostitch.resume(tmp_path / "run", progress=False).result.evaluated_now == 0
    del registry["one-flip"]
    with pytest.raises(evostitch.SearchError, match="register_algorithm") as caught:
        evostitch.resume(tmp_path / "run", progress=False)
    assert "\n" not in str(caught.value)


def test_register_algorithm_refuses_what_cannot_work(supernet, tmp_path, registry):
    """Built-in names, `auto`, odd names and non-callables are refused at registration; a
    factory that returns no Algorithm or takes other arguments is refused in one line
    when the search builds it, before the run folder is made."""
    import evostitch

    for name, factory in [("ga", OneFlip), ("auto", OneFlip), ("My Algo", OneFlip),
                          ("", OneFlip), ("fine", 3)]:  # fmt: skip
        with pytest.raises(evostitch.SearchError):
            evostitch.register_algorithm(name, factory)
    evostitch.register_algorithm("not-one", lambda problem, seed, **params: object())
    evostitch.register_algorithm("no-params", lambda problem, seed: OneFlip(problem, seed))
    folder, _ = supernet
    for name, words in [("not-one", "returned object"), ("no-params", "factory")]:
        with pytest.raises(evostitch.SearchError, match=words) as caught:
            evostitch.search(folder, out=tmp_path / name, algorithm=name, budget=2,
                             progress=False)  # fmt: skip
        assert "\n" not in str(caught.value)
        assert not (tmp_path / name).exists()  # refused before the run folder is made

"""The search loop on a toy problem, with a test-local random search (no real algorithms yet).

The toy problem also serves test_backends.py and the kill test's child process.
"""

from __future__ import annotations

import functools
import json
import math
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from evostitch.errors import EvostitchError
from evostitch.evolution.algorithms import make_algorithm
from evostitch.evolution.archive import nondominated
from evostitch.evolution.base import Candidate
from evostitch.evolution.loop import LoopLimits, resume_search, run_search
from evostitch.evolution.schema import genotype_key
from evostitch.evolution.store import RunStore
from evostitch.execution import InProcessBackend
from toys import (
    N_BITS,
    Counting,
    RandomSearch,
    make_toy_evaluator,
    new_store,
    random_search_factory,
    toy_canonical,
    toy_objectives,
    toy_problem,
)

TESTS = Path(__file__).resolve().parent


def db_rows(path: Path) -> list[tuple]:
    """(id, canonical, objectives, status) of every stored row, straight from SQLite."""
    conn = sqlite3.connect(f"{(path / 'evaluations.sqlite').as_uri()}?mode=ro", uri=True)
    try:
        sql = "SELECT id, canonical, objectives, status FROM evaluations ORDER BY id"
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# -- tests ---------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size, pipeline", [(1, False), (8, False), (1, True), (8, True)])
def test_cache_hits_are_not_evaluated_and_budget_holds(tmp_path, batch_size, pipeline):
    counter = Counting()
    problem = toy_problem(counter)
    algorithm = RandomSearch(problem, seed=1)
    with new_store(tmp_path / "run", budget=60) as store:
        backend = InProcessBackend(lambda: counter, batch_size=batch_size, pipeline=pipeline)
        result = run_search(problem, algorithm, store, backend, progress=False)
        assert store.count() == 60
        records = list(store.records())
    assert result.stopped == "budget"
    assert result.performed == result.evaluated_now == len(counter.calls) == 60
    assert result.cache_hits > 0
    assert result.requested == result.performed + result.cache_hits == len(algorithm.told)
    canon = [toy_canonical(g) for g in counter.calls]
    assert len(set(canon)) == 60  # never the same network twice, even within one batch
    assert {r.canonical for r in records} == set(canon)
    for genotype, objectives in algorithm.told:  # hits were told the stored objectives
        assert objectives == toy_objectives(genotype)


@pytest.mark.parametrize("name", ["ga", "lk-gomea"])
def test_pipelined_runs_evaluate_off_the_loop_thread_and_reproduce(tmp_path, name):
    """A batch evaluates on the backend's thread while the loop books the previous one;
    batches still form and return in submission order, so a seed gives one run."""
    runs = []
    for i in range(2):
        threads, calls = set(), []

        def evaluate(genotype, threads=threads, calls=calls):
            threads.add(threading.get_ident())
            calls.append(tuple(genotype))
            time.sleep(0.001 * (len(calls) % 3))  # uneven timing must not matter
            return toy_objectives(genotype)

        problem = toy_problem(evaluate)
        algorithm = make_algorithm(name, problem, 3, pop_size=8, budget=40)
        with new_store(tmp_path / f"run{i}", budget=40) as store:
            backend = InProcessBackend(lambda e=evaluate: e, batch_size=4, pipeline=True)
            run_search(
                problem, algorithm, store, backend, progress=False,
                limits=LoopLimits(poll_seconds=0.001),
            )  # fmt: skip
            backend.close()
            runs.append([r.genotype for r in store.records()])
        assert threads and threading.get_ident() not in threads
    assert len(runs[0]) == 40 and runs[0] == runs[1]


def test_failures_are_stored_and_told_as_worst(tmp_path, capsys):
    def evaluate(genotype):
        if genotype[1] == 1:
            raise RuntimeError("offspring broke\nbadly")
        return toy_objectives(genotype)

    problem = toy_problem(evaluate)
    algorithm = RandomSearch(problem, seed=2)
    with new_store(tmp_path / "run", budget=30) as store:
        result = run_search(problem, algorithm, store, progress=False)
        failed = [r for r in store.records() if not r.ok]
    assert result.failed == len(failed) > 0
    assert all(r.error.startswith("RuntimeError: offspring broke badly") for r in failed)
    assert all(o == (float("inf"),) * 2 for g, o in algorithm.told if g[1] == 1)
    lines = [x for x in capsys.readouterr().err.splitlines() if "evaluation failed" in x]
    assert len(lines) == len(failed)


@pytest.mark.parametrize("name", ["ga", "gomea", "lk-gomea", "nsga2"])
def test_our_algorithms_go_on_after_failures(tmp_path, name):
    """Failures are told as +inf: the algorithms rank them last and spend the budget on
    new networks; their memo answers known ones before the loop's cache sees them."""
    from evostitch.evolution.algorithms import make_algorithm

    def evaluate(genotype):
        if sum(genotype) % 3 == 1:
            raise RuntimeError("broken offspring")
        return toy_objectives(genotype)

    problem = toy_problem(evaluate, references=[(0,) * N_BITS, (1,) + (0,) * (N_BITS - 1)])
    algorithm = make_algorithm(name, problem, 0, pop_size=8, budget=60, steer_to=None)
    with new_store(tmp_path / "run", budget=60) as store:
        result = run_search(problem, algorithm, store, progress=False)
    assert result.stopped == "budget" and result.performed == 60
    assert 0 < result.failed < 60 and result.cache_hits < 10 < result.memo_hits
    assert all(math.isfinite(v) for s in algorithm.archive for v in s.objectives)
    assert {s.objectives for s in algorithm.archive} == {r.objectives for r in result.front}


def test_endless_cache_hits_are_stopped(tmp_path):
    class Stuck(RandomSearch):
        def ask(self):
            ticket, self.next_ticket = self.next_ticket, self.next_ticket + 1
            self.pending[ticket] = (0,) * N_BITS
            return Candidate(ticket, (0,) * N_BITS)

    problem = toy_problem()
    with new_store(tmp_path / "run", budget=10) as store:
        result = run_search(problem, Stuck(problem), store, progress=False)
        assert result.stopped == "max_requests" and result.requested == 200
        limits = LoopLimits(max_consecutive_hits=50)
        result = run_search(problem, Stuck(problem), store, progress=False, limits=limits)
        assert result.stopped == "cache_hits"
        assert store.count() == 1


def test_resume_continues_without_reevaluating(tmp_path):
    problem = toy_problem()
    with new_store(tmp_path / "run", budget=80) as store:
        first = run_search(problem, RandomSearch(problem), store, budget=30, progress=False)
    assert first.performed == 30
    counter = Counting()
    result = resume_search(
        tmp_path / "run",
        problem,
        random_search_factory(problem),
        InProcessBackend(lambda: counter),
        progress=True,
    )
    assert result.performed == 80 and result.evaluated_now == len(counter.calls) == 50
    rows = db_rows(tmp_path / "run")
    assert len(rows) == len({r[1] for r in rows}) == 80
    assert result.requested >= first.requested + 50  # counters carry over from the checkpoint
    # one uninterrupted run with the same seed stores exactly the same rows
    with new_store(tmp_path / "straight", budget=80) as store:
        run_search(problem, RandomSearch(problem), store, progress=False)
    assert db_rows(tmp_path / "straight") == rows


def test_a_checkpoint_that_does_not_fit_is_a_clear_error(tmp_path):
    problem = toy_problem()

    def gomea(config):
        return make_algorithm("gomea", problem, config.seed, pop_size=8, budget=config.budget)

    with new_store(tmp_path / "run", budget=40) as store:
        run_search(problem, gomea(store.config), store, budget=30, progress=False)
    file = tmp_path / "run" / "checkpoint.json"
    checkpoint = json.loads(file.read_text())
    checkpoint["state"]["own"]["fos"] = {"order": [0]}  # hand-edited: no "spans"
    file.write_text(json.dumps(checkpoint))
    with pytest.raises(EvostitchError, match="does not fit algorithm 'gomea'.*KeyError"):
        resume_search(tmp_path / "run", problem, gomea, progress=False)
    assert len(db_rows(tmp_path / "run")) == 30  # nothing stored was lost


def test_progress_bar_and_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the whole line, whatever the terminal
    problem = toy_problem()
    algorithm = RandomSearch(problem, seed=4)
    with new_store(tmp_path / "run", budget=25) as store:
        result = run_search(problem, algorithm, store, checkpoint_every=5, progress=True)
    err = capsys.readouterr().err
    assert "25/25" in err and "hits" in err and "HV" in err
    checkpoint = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert checkpoint["algorithm"] == "test-random" and checkpoint["rows"] == 25
    assert checkpoint["counters"]["requested"] == result.requested
    assert result.archive.objectives() == {r.objectives for r in result.front}


# -- kill test ---------------------------------------------------------------------------
def child_main(path: str, budget: int, sleep: float) -> None:
    """Run in a subprocess by the kill test: a slow search that gets SIGKILLed."""
    problem = toy_problem(make_toy_evaluator(sleep))
    with new_store(Path(path), budget=budget) as store:
        run_search(problem, RandomSearch(problem), store, checkpoint_every=10, progress=False)


def _count_rows(path: Path) -> int:
    try:
        return len(db_rows(path))
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path, sigkill_when):
    run, budget = tmp_path / "run", 150
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_loop; "
        f"test_loop.child_main({str(run)!r}, {budget}, 0.02)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    sigkill_when(child, lambda: _count_rows(run) >= 40, 60, "the child stored nothing")
    before = db_rows(run)
    assert 40 <= len(before) < budget
    checkpoint = json.loads((run / "checkpoint.json").read_text())
    assert checkpoint["rows"] <= len(before)  # the checkpoint may lag, never lead

    counter = Counting()
    problem = toy_problem(counter)
    result = resume_search(run, problem, random_search_factory(problem), progress=False)
    after = db_rows(run)
    assert after[: len(before)] == before  # every stored row kept, unchanged
    assert len(after) == len({r[1] for r in after}) == budget == result.performed
    assert len(counter.calls) == budget - len(before)  # nothing stored was evaluated again
    evaluated = {genotype_key(toy_canonical(g)) for g in counter.calls}
    assert not evaluated & {r[1] for r in before}
    assert result.archive.objectives() == {r.objectives for r in nondominated_rows(run)}
    # and the killed-and-resumed run equals an uninterrupted one with the same seed
    with new_store(tmp_path / "straight", budget=budget) as store:
        run_search(problem, RandomSearch(problem), store, progress=False)
    assert [r[1:] for r in db_rows(tmp_path / "straight")] == [r[1:] for r in after]


def nondominated_rows(path: Path):
    with RunStore.open(path, readonly=True) as store:
        return nondominated(store.records())


def test_evaluator_factory_is_picklable():
    import pickle

    factory = functools.partial(make_toy_evaluator, sleep=0.0)
    evaluate = pickle.loads(pickle.dumps(factory))()
    assert evaluate((1,) * N_BITS) == toy_objectives((1,) * N_BITS)


def test_closing_a_pipelined_backend_does_not_wait_for_the_batch_it_evaluates():
    """Ctrl-C during a long evaluation must not hang until the batch ends."""
    release, started, finished = threading.Event(), threading.Event(), []

    def evaluate(genotype):
        started.set()
        release.wait(timeout=30)
        finished.append(genotype)
        return toy_objectives(genotype)

    backend = InProcessBackend(lambda: evaluate, batch_size=1, pipeline=True)
    backend.submit(0, (0,) * N_BITS)
    backend.submit(1, (1,) * N_BITS)  # queued behind the first: dropped by close()
    assert started.wait(timeout=30)
    backend.close()
    assert finished == []  # close() returned while the first evaluation still ran
    release.set()
    assert backend.results() == []


def test_closing_a_pipelined_backend_after_a_search_ends_its_thread(tmp_path):
    """At the end of a search nothing is evaluating: close() waits for the evaluation
    thread to end. A daemon still ending during interpreter shutdown freed the evaluator's
    torch tensors there and aborted the process ("terminate called without an active
    exception", return code -6) after a successful `evostitch search`."""
    before = set(threading.enumerate())
    problem = toy_problem()
    backend = InProcessBackend(lambda: toy_objectives, batch_size=4, pipeline=True)
    (thread,) = [t for t in threading.enumerate() if t not in before]
    assert thread.name == "evostitch-eval"
    with new_store(tmp_path / "run", budget=20) as store:
        run_search(problem, RandomSearch(problem, seed=1), store, backend, progress=False)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(60)  # the thread gets the GIL only when close() gives it up
    try:
        backend.close()
        alive = thread.is_alive()
    finally:
        sys.setswitchinterval(switch)
    assert not alive


def test_progress_shows_time_left_and_a_resumed_run_starts_where_it_was(monkeypatch, capsys):
    """The search bar counts a resumed run from what it had done (so its rate and time left
    are this run's own), shows the time left while it runs and the time taken at the end,
    also when the search stops before its budget."""
    from types import SimpleNamespace

    from evostitch.evolution.cache import CacheCounters
    from evostitch.evolution.progress import SearchView

    monkeypatch.setenv("COLUMNS", "200")
    algorithm = SimpleNamespace(memo_hits=0, archive=None)
    view = SearchView(True, 100, 2, algorithm, cache=None, done=40)
    task = view.progress.tasks[0]
    assert task.completed == 40
    for performed in range(41, 51):
        time.sleep(0.02)
        view.update(CacheCounters(performed=performed), 40, busy=1)
    # ten evaluations in ~0.2 s: the fifty left take about a second, not 40 evaluations'
    # worth of a rate computed from zero
    assert task.time_remaining is not None and 0.2 < task.time_remaining < 5
    view.close(CacheCounters(performed=50), 40, busy=0)  # stopped early, e.g. converged
    err = capsys.readouterr().err.strip()
    taken = task.finished_time
    assert taken is not None and 0.2 < taken < 60
    assert "50/100" in err and err.endswith(str(timedelta(seconds=int(taken))))

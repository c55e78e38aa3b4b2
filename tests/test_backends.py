"""Execution backends: in-process always; Ray when it is installed (one local Ray per module)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from evostitch.errors import EvostitchError
from evostitch.evolution.loop import run_search
from evostitch.execution import InProcessBackend, RayBackend
from toys import (
    N_BITS,
    RandomSearch,
    make_toy_evaluator,
    new_store,
    toy_canonical,
    toy_objectives,
    toy_problem,
)

TESTS = Path(__file__).resolve().parent
ONES, ZEROS = (1,) * N_BITS, (0,) * N_BITS


# -- in-process ----------------------------------------------------------------------------
def test_inprocess_builds_the_evaluator_once_and_reports_failures():
    built = []

    def factory():
        built.append(1)
        return lambda g: (1.0, 0.0) if g[0] else 1 / 0

    backend = InProcessBackend(factory, batch_size=3)
    assert backend.capacity == 3 and built == []  # lazily, on first use
    for ticket, genotype in [(5, ONES), (2, ZEROS), (7, ONES)]:
        backend.submit(ticket, genotype)
    results = backend.results()
    assert [r.ticket for r in results] == [2, 5, 7]  # ticket order
    assert results[0].objectives is None and "ZeroDivisionError" in results[0].error
    assert "\n" not in results[0].error and results[1].objectives == (1.0, 0.0)
    assert results[1].worker.endswith(f":{os.getpid()}") and results[1].seconds >= 0
    backend.submit(8, ONES)
    assert [r.ticket for r in backend.results()] == [8] and built == [1]
    assert backend.results() == []


def test_pipelined_backend_starts_the_first_batch_without_waiting_for_it_to_fill():
    """With no batch out, the first submission evaluates at once; later ones wait for a
    full batch (or results()), so batches never depend on timing."""
    started = threading.Event()
    seen: list[tuple[int, ...]] = []

    def evaluate(genotype):
        seen.append(genotype)
        started.set()
        return (float(sum(genotype)), 0.0)

    backend = InProcessBackend(lambda: evaluate, batch_size=4, pipeline=True)
    backend.submit(0, ONES)
    assert started.wait(timeout=30)  # alone, without a results() call
    for ticket in (1, 2):
        backend.submit(ticket, ZEROS)
    time.sleep(0.05)
    assert seen == [ONES]  # a batch is out: these wait to fill one
    assert [r.ticket for r in backend.results()] == [0]
    assert [r.ticket for r in backend.results()] == [1, 2]  # a partial batch on request
    backend.close()


def test_core_imports_without_ray():
    code = (
        "import sys; sys.modules['ray'] = None\n"  # makes `import ray` fail
        "import evostitch.execution, evostitch.evolution.loop\n"
        "from evostitch.errors import EvostitchError\n"
        "try:\n    evostitch.execution.RayBackend(lambda: None)\n"
        "except EvostitchError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "evostitch[ray]" in out.stdout


# -- Ray -----------------------------------------------------------------------------------
def rows(store):
    return [(r.genotype, r.canonical, r.objectives, r.error) for r in store.records()]


@pytest.mark.slow
def test_ray_deterministic_schedule_equals_inprocess(ray_cluster, tmp_path):
    problem = toy_problem()
    factory = functools.partial(make_toy_evaluator, sleep=0.005, uneven=True)
    outcomes = []
    backends = {
        "inprocess": InProcessBackend(factory, batch_size=2),
        "ray": RayBackend(factory, num_workers=2, deterministic=True),
    }
    for name, backend in backends.items():
        algorithm = RandomSearch(problem, seed=7)
        with new_store(tmp_path / name, budget=40) as store, backend:
            result = run_search(problem, algorithm, store, backend, progress=False)
            outcomes.append((rows(store), algorithm.told, result.archive.objectives()))
    assert outcomes[0] == outcomes[1]
    assert len(outcomes[0][0]) == 40


@pytest.mark.slow
def test_ray_async_default_completes_on_all_workers(ray_cluster, tmp_path):
    problem = toy_problem()
    backend = RayBackend(functools.partial(make_toy_evaluator, sleep=0.01), num_workers=2)
    assert backend.capacity == 2 and backend.max_retries == 2 and not backend.deterministic
    with new_store(tmp_path / "run", budget=40) as store, backend:
        result = run_search(problem, RandomSearch(problem, seed=1), store, backend, progress=False)
        records = list(store.records())
    assert result.stopped == "budget" and result.performed == len(records) == 40
    assert len({r.canonical for r in records}) == 40
    assert all(r.objectives == toy_objectives(r.genotype) for r in records)
    assert len({r.worker for r in records}) == 2  # both actors did work


@pytest.mark.slow
def test_ray_dead_workers_are_replaced_and_retried(ray_cluster, tmp_path):
    marker = tmp_path / "crashed-once"
    poison = (1,) + (0,) * (N_BITS - 1)  # kills its worker on every attempt
    factory = functools.partial(make_toy_evaluator, poison=poison, crash_marker=str(marker))
    problem = toy_problem(references=[poison, ONES, ZEROS])
    backend = RayBackend(factory, num_workers=2, max_retries=1)  # default 2: one fewer restart
    with new_store(tmp_path / "run", budget=30) as store, backend:
        result = run_search(problem, RandomSearch(problem, seed=3), store, backend, progress=False)
        records = list(store.records())
    assert marker.exists()  # one worker did die mid-run on an ordinary genotype
    assert result.performed == len(records) == 30
    assert len({r.canonical for r in records}) == 30  # exactly one row per genotype
    failed = [r for r in records if not r.ok]
    assert [r.genotype for r in failed] == [poison] and result.failed == 1
    assert failed[0].error.startswith("worker died 2 times; last: The actor died")
    assert "\n" not in failed[0].error
    ok = [r for r in records if r.ok]
    assert all(r.objectives == toy_objectives(r.genotype) for r in ok)
    assert backend.replaced == 3  # 2 for the poison, 1 for the one-off crash
    assert toy_canonical(poison) == poison


@pytest.mark.slow
def test_ray_factory_error_is_one_line(ray_cluster):
    backend = RayBackend(functools.partial(make_toy_evaluator, bogus=1))  # factory raises
    with backend:
        backend.submit(0, ONES)
        with pytest.raises(EvostitchError) as excinfo:
            while not backend.results(timeout=5):
                pass
    message = str(excinfo.value)
    assert "could not build its evaluator" in message and "bogus" in message
    assert "\n" not in message


def test_a_dead_workers_copy_of_a_supernetwork_is_swept(tmp_path, monkeypatch):
    """A worker killed while it held a copy from the object store leaves it behind; the
    next worker on the node deletes it, never a live worker's copy."""
    import tempfile

    from evostitch.execution import shipping

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{shipping.PREFIX}{dead.pid}-abc"
    live = tmp_path / f"{shipping.PREFIX}{os.getpid()}-def"
    other = tmp_path / "evostitch-something-else"
    for folder in (stale, live, other):
        folder.mkdir()
        (folder / "parents.safetensors").write_bytes(b"x")
    shipping._sweep()
    assert not stale.exists() and live.exists() and other.exists()

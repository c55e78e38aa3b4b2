"""The Ray backend on several nodes (a simulated cluster, `ray_nodes`): workers that cannot
read the supernetwork's folder get it through the object store, a lost node costs time
only. The tests run in file order: the last one removes a node."""

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from evostitch.errors import EvostitchError
from evostitch.evolution.backend import Backend, FolderFactory
from evostitch.evolution.loop import run_search
from evostitch.evolution.stitching import evaluator_factory, stitching_problem
from evostitch.evolution.store import RunStore
from evostitch.execution import RayBackend, shipping
from evostitch.execution.shipping import ship
from evostitch.supernet import Supernet
from toys import RandomSearch, make_toy_evaluator, new_store, toy_objectives, toy_problem

pytestmark = pytest.mark.slow


def test_workers_that_cannot_read_the_supernetwork_get_it_through_the_object_store(
    ray_nodes, tmp_path, capsys, monkeypatch
):
    import ray

    folder = tmp_path / "sn"
    Supernet.build(["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8)).save(folder)
    factory = evaluator_factory(folder, "digits", subset=40)
    assert isinstance(factory, FolderFactory)
    net = Supernet.load(folder)
    problem = stitching_problem(net, factory())  # the driver's own, from the folder
    shipped = ship(factory, ray.put)
    shutil.move(folder, tmp_path / "elsewhere")  # no worker can read the folder now
    backend = RayBackend(shipped, num_workers=2, per_worker=2)
    with new_store(tmp_path / "run", budget=12) as store, backend:
        monkeypatch.setenv("COLUMNS", "200")  # the whole progress line
        result = run_search(problem, RandomSearch(problem, seed=0), store, backend)
        records = list(store.records())
        pool = backend.pool()
    assert "12/12" in (err := capsys.readouterr().err) and "on 2 workers, 2 nodes" in err
    assert result.performed == len(records) == 12 and result.failed == 0
    assert (pool.ready, pool.nodes) == (2, 2)  # one actor per 1-CPU node
    receipts = [receipt for _, receipt in backend.receipts.values()]
    assert [r.source for r in receipts] == ["object store"] * 2
    assert all(r.bytes == shipped.size > 0 for r in receipts)
    for record in records:  # what the workers computed is what the driver computes
        assert record.objectives == pytest.approx(problem.evaluate(record.genotype))


def test_a_worker_reads_the_folder_where_it_can_else_the_object_store(ray_nodes, tmp_path):
    """`Shipped.receive` as an actor runs it (here, in the driver): the folder in place
    when it holds the shipped supernet.json, else the files from the object store."""
    import ray

    folder = tmp_path / "sn"
    Supernet.build(["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8)).save(folder)
    zeros = (0,) * len(Supernet.load(folder).genotype_spec)
    shipped = ship(evaluator_factory(folder, "digits", subset=20), ray.put)
    evaluate, receipt = shipped.receive()
    assert receipt.source == "folder" and receipt.bytes == 0
    expected = evaluate(zeros)
    # a dataset folder travels not: a node without it fails naming it
    missing = tmp_path / "no-such-images"
    with pytest.raises(EvostitchError, match=str(missing)):
        evaluator_factory(folder, f"imagefolder:{missing}")()
    (folder / "supernet.json").write_text("{}")  # another network at that path
    evaluate, receipt = shipped.receive()
    assert (receipt.source, receipt.bytes) == ("object store", shipped.size)
    assert evaluate(zeros) == pytest.approx(expected)
    copies = Path(tempfile.gettempdir()).glob(f"{shipping.PREFIX}{os.getpid()}-*")
    assert not list(copies)  # its copy is gone


def test_a_killed_driver_resumes_on_the_same_cluster(ray_nodes, tmp_path, sigkill_when, capsys):
    """`search --address` from a process that is SIGKILLed mid-run, then `--resume`."""
    from conftest import run_cli

    folder, run = tmp_path / "sn", tmp_path / "run"
    Supernet.build(["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8)).save(folder)
    argv = ["--backend", "ray", "--address", ray_nodes.address, "--workers", "2", "--batch", "1"]
    search = [folder, "--data", "digits", "--val-subset", "30", "--algorithm", "rs"]
    child = subprocess.Popen(
        [sys.executable, "-m", "evostitch", "search", *map(str, search), "--budget", "24",
         "--fidelity", "full", "--out", str(run), *argv],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    sigkill_when(child, lambda: _stored(run) >= 6, 120, "the driver stored nothing")
    before = _stored(run)
    assert 6 <= before < 24
    code, out, err = run_cli(["search", "--resume", run, *argv], capsys)
    assert code == 0, err
    with RunStore.open(run, readonly=True) as store:
        records = list(store.records())
    assert len(records) == len({r.canonical for r in records}) == 24  # none lost or twice
    assert all(r.ok for r in records)


def _stored(run) -> int:
    try:
        with RunStore.open(run, readonly=True) as store:
            return len(list(store.records()))
    except Exception:
        return 0


class _LoseANode(Backend):
    """The Ray backend, with the node of a busy actor removed once half the budget is in."""

    def __init__(self, inner: RayBackend, cluster, at: int) -> None:
        self.inner, self.cluster, self.at = inner, cluster, at
        self.capacity, self.seen, self.removed = inner.capacity, 0, None

    def submit(self, ticket, genotype):
        self.inner.submit(ticket, genotype)

    def pool(self):
        return self.inner.pool()

    def results(self, timeout=None):
        done = self.inner.results(timeout)
        self.seen += len(done)
        if self.removed is None and self.seen >= self.at and self.inner._running:
            actor, _ = next(iter(self.inner._running.values()))
            busy = self.inner._nodes[actor]
            node = next(n for n in self.cluster.worker_nodes if n.node_id == busy)
            self.cluster.remove_node(node)
            self.removed = busy
        return done

    def close(self):
        self.inner.close()


def test_a_lost_node_loses_and_duplicates_nothing(ray_nodes, tmp_path):
    problem = toy_problem()
    inner = RayBackend(functools.partial(make_toy_evaluator, sleep=0.05), num_workers=2)
    backend = _LoseANode(inner, ray_nodes, at=20)
    with new_store(tmp_path / "run", budget=40) as store, backend:
        result = run_search(problem, RandomSearch(problem, seed=2), store, backend, progress=False)
        records = list(store.records())
        pool = backend.pool()
    assert backend.removed is not None  # the node went mid-run, with work on it
    assert result.performed == len(records) == 40 and result.failed == 0
    assert len({r.canonical for r in records}) == 40  # no genotype stored twice
    assert all(r.objectives == toy_objectives(r.genotype) for r in records)
    assert inner.replaced >= 1
    assert (pool.ready, pool.starting, pool.nodes) == (1, 1, 1)  # no room for the second

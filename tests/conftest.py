"""Fixtures and helpers shared by several test files."""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from evostitch.devices import torch_threads

# The tests that take longest (the README's demo, fuzzing, the property tests), started
# first: parallel workers (pytest-xdist, tests handed out one at a time) then finish
# together instead of one of them running a long test alone at the end.
LONGEST_FIRST = (
    "test_readme_first_command",
    "test_random_damage",
    "test_random_offspring_run_are_canonical",
)


def pytest_configure(config):
    """Under pytest-xdist, the cores shared among the workers: each worker's torch, and
    the processes its tests start, get cores // workers threads (more only contend)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        return next((i for i, name in enumerate(LONGEST_FIRST) if name in item.name), 99)

    items.sort(key=rank)


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray for the module's tests (2 CPUs), skipped without Ray."""
    try:
        import ray
    except ImportError:
        pytest.skip("ray is not installed (pip install 'evostitch[ray]')")
    path = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},  # workers import toys
        logging_level="ERROR",
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_nodes():
    """A Ray cluster of 2 nodes on this machine (`ray.cluster_utils.Cluster`: a head
    without CPUs and 2 raylets of 1 CPU, each with its own object store), joined by this
    process; the module's tests may remove nodes. Skipped without Ray."""
    try:
        import ray
        from ray.cluster_utils import Cluster
    except ImportError:
        pytest.skip("ray is not installed (pip install 'evostitch[ray]')")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20)
    path = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    ray.init(
        address=cluster.address,
        runtime_env={"env_vars": {"PYTHONPATH": path}},  # workers import toys
        logging_level="ERROR",
    )
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def one_thread():
    """Small models on a shared machine: more torch threads only contend."""
    with torch_threads(1):
        yield


@pytest.fixture
def sigkill_when():
    """`sigkill_when(child, ready, timeout, what)`: wait while the child process runs
    until `ready()`, then SIGKILL and reap it (fails with `what` after `timeout` s)."""

    def kill(child: subprocess.Popen, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, what
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stderr.close()

    return kill


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """`evostitch ARGV` through the real entry point (errors as one line, exit 2), in this
    process: (exit code, stdout, stderr)."""
    import sys

    from evostitch.cli.app import main

    old, sys.argv = sys.argv, ["evostitch", *map(str, argv)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err


# ----- a tiny stitched run and supernetwork, built once per test session (per worker) --------
def tiny_supernet_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved supernetwork of untrained demo parents on 8x8 digits (stitches as built),
    built once per session: read it, or copy it before changing it."""
    folder = tmp_path_factory.getbasetemp() / "tiny-supernet" / "net"
    if not (folder.parent / "done").exists():
        from evostitch import Supernet

        shutil.rmtree(folder.parent, ignore_errors=True)
        Supernet.build(["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8)).save(folder)
        (folder.parent / "done").touch()
    return folder


def tiny_run(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A copy (named `name`) of one tiny stitched run, built once per test session.

    Untrained demo parents on 8x8 digits, a few stitch-training steps, 30 evaluations of
    random search.
    """
    base = tmp_path_factory.getbasetemp() / "tiny-evostitch"
    if not (base / "done").exists():
        from evostitch.api import search
        from evostitch.data import load_dataset
        from evostitch.supernet import Supernet
        from evostitch.training import train_stitches

        shutil.rmtree(base, ignore_errors=True)
        net = Supernet.build(["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8))
        net.data = "digits"
        train_stitches(
            net, load_dataset("digits", "train"), samples=64, downstream=0, progress=False
        )
        net.save(base / "sn")
        search(
            base / "sn",
            out=base / "run",
            data="digits",
            algorithm="rs",
            budget=30,
            seed=0,
            population=8,
            p_stitch=0.05,
            batch=1,
            progress=False,
        )
        (base / "done").touch()
    copy = tmp_path_factory.mktemp(name) / "run"
    shutil.copytree(base / "run", copy)
    return copy


def invoke(*args: str):
    """Run the CLI; re-raise what it raised so that a failing test shows the cause."""
    from typer.testing import CliRunner

    from evostitch.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


def embedded_data(html: str) -> dict:
    match = re.search(
        r'<script id="report-data" type="application/json">(.*?)</script>', html, re.S
    )
    return json.loads(match.group(1).replace("<\\/", "</"))


def hit(a: dict, b: dict) -> bool:
    """Whether two boxes ({x, y, w, h}) overlap."""
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and (a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])
    )

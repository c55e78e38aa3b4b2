"""Fixtures shared by several test files."""

import os
import signal
import subprocess
import time

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
    "test_demo_end_to_end_small",
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

"""Fixtures shared by several test files."""

import os
import signal
import subprocess
import time

import pytest

from evostitch.devices import torch_threads


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

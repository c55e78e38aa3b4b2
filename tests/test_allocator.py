"""The allocator setting the CLI and Ray workers apply to their own process."""

import ctypes
import subprocess
import sys

from evostitch.execution import allocator

CNN_FORWARDS = """
import resource, sys, torch
from evostitch.execution.allocator import keep_freed_memory
on = sys.argv[1] == "1" and keep_freed_memory()
torch.set_num_threads(1)
net = torch.nn.Sequential(
    torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
    torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
    torch.nn.Flatten(), torch.nn.Linear(32 * 14 * 14, 10),
)
x = torch.randn(256, 1, 28, 28)
with torch.no_grad():
    net(x), net(x)  # warm up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        net(x)
print(int(on), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_repeated_forwards_stop_page_faulting():
    """Batches of a small CNN: with glibc's defaults the forwards often fault tens of
    thousands of fresh pages (not always: its thresholds adapt), with the setting none."""
    out = subprocess.run(
        [sys.executable, "-c", CNN_FORWARDS, "1"], capture_output=True, text=True, check=True
    ).stdout.split()
    applied, faults = int(out[0]), int(out[1])
    if applied:  # else no glibc mallopt here: nothing to check
        assert faults < 200


def test_without_mallopt_it_reports_false(monkeypatch):
    def no_libc(_name):
        raise OSError("no libc")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    allocator.keep_freed_memory.cache_clear()
    try:
        assert allocator.keep_freed_memory() is False
    finally:
        allocator.keep_freed_memory.cache_clear()

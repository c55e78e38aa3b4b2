"""Keep freed memory in the process (glibc) so that evaluating offspring one by one does
not page-fault its way through every batch.

glibc returns large freed blocks to the OS at once (mmap/munmap above a dynamic
threshold, heap trimming): each new activation tensor then costs fresh, zeroed pages.
Evaluating the MNIST demo's offspring one at a time spent 10 of 27 s in the kernel that
way; with these settings 0.4 of 16 s. Process-wide, so only entry points that own the
process call it (the CLI, Ray workers), never the library core.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
MMAP_THRESHOLD = 32 * 2**20  # glibc's maximum on 64-bit: blocks below it come from the heap
TRIM_THRESHOLD = 2**30  # free heap kept before returning memory to the OS


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds; False where there is no glibc `mallopt`."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok

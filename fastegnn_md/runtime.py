"""Process-level settings that make CPU work fast, alone or on a shared machine.

glibc returns large freed blocks to the kernel (mmap/munmap, heap trimming), so each new
(E, H) temporary of a forward pass is page-faulted and zero-filled again: on this kind of
machine that costs more than the arithmetic on it. `tune_allocator` keeps freed memory in the
process for reuse, the effect jemalloc/tcmalloc preloading has. Peak memory is unchanged; the
process just does not hand memory back between calls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_tuned = False


def tune_allocator(max_block_bytes: int = 1 << 30) -> bool:
    """Serve blocks up to ``max_block_bytes`` from the heap and never trim it (glibc only).

    Returns True if the settings were applied; False on platforms without glibc's mallopt.
    Safe to call more than once.
    """
    global _tuned
    if _tuned:
        return True
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, int(max_block_bytes)) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1 and ok
    _tuned = ok
    return ok


def prefer_passive_waiting() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` when other work keeps a CPU busy (1-minute load average
    ≥ 0.5), unless the user chose a policy or OpenMP is already loaded.

    Why: GNU OpenMP's default lets each of torch's threads spin at every barrier. Beside other
    CPU-bound processes the spinning threads burn the time slices the others' threads need
    (`benchmarks/contention.py`, n-body training step, 2 threads, two hogs: 7.9 s spinning
    against 3.5 s passive); alone on the machine the spinning saves wake-ups (quiet: 2.0 s
    against 2.3 s, and a 855-node forward pass 54 against 78 ms), so a quiet machine keeps the
    default. The policy is read when torch first loads OpenMP, so this runs on
    ``import fastegnn_md`` before torch is imported; returns whether it set the policy.
    """
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return False
    try:
        busy = os.getloadavg()[0] >= 0.5
    except (AttributeError, OSError):
        busy = False
    if busy:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return busy


def default_threads() -> int:
    """Torch threads for a run given no ``--threads``: the CPUs this process may use, less the
    ones other work keeps busy (the 1-minute load average, rounded), at least 1.

    Why: torch takes every CPU by default, so beside two busy processes on 2 cores its two
    threads share them with the two others and each parallel region waits for the slower
    thread; one thread is then 2× faster (n-body training step 4.0 s against 7.9 s;
    benchmarks/RESULTS.md, "Under contention"), while alone two threads are 1.6× faster.
    """
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except (AttributeError, OSError):
        busy = 0
    return max(1, min(available, available - busy))

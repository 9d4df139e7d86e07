"""Process-level settings that make CPU inference fast.

glibc returns large freed blocks to the kernel (mmap/munmap, heap trimming), so each new
(E, H) temporary of a forward pass is page-faulted and zero-filled again: on this kind of
machine that costs more than the arithmetic on it. `tune_allocator` keeps freed memory in the
process for reuse, the effect jemalloc/tcmalloc preloading has. Peak memory is unchanged; the
process just does not hand memory back between calls.
"""

from __future__ import annotations

import ctypes
import ctypes.util

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

"""The garbage collector and a long-running server's latency; big arrays handed back to the system when freed.

A full (generation 2) collection walks every object the process holds. A server holds tens of thousands
from start-up alone (modules, config, compiled SQL, routes), and each full collection then stops both the
event loop and the webhook's writer thread for as long as that walk takes: on the loaded 2-core development
VM six collections of about 300 ms in 20 s of webhook load, against the webhook's 50 ms p99 budget (1.7 s
stopped in all; 0.39 s with the start-up heap frozen: bench/README.md, issue 21).
:func:`freeze_startup_heap` moves what is alive once start-up is done into the collector's permanent
generation, so later collections walk only what was made since.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc


def freeze_startup_heap() -> int:
    """Collect once, then exempt every object alive now from later collections; how many were exempted.

    Call it when start-up is done (frozen objects are never freed: what start-up made lives as long as the
    process anyway). Objects made later are collected as usual.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, kept fixed


def fixed_mmap_threshold(size: int = MMAP_THRESHOLD) -> bool:
    """Keep glibc's mmap threshold at ``size`` bytes for the rest of the process; False where there is no glibc.

    Allocations above the threshold get pages of their own and give them back to the system when freed. glibc
    raises the threshold to the size of each such block freed (up to 32 MB), after which the arrays a scoring
    makes and drops by the hundred (columns, slices, fold copies of 1-30 MB) come from the heap instead, where
    freed space is kept and fragmented: the process's peak then exceeds what it ever holds at once. Fixed, it
    does not move (measured on a 400,000-contact CSV book: scoring's RSS peak 1,216 -> 1,083 MB; bench/README.md,
    issue 21). Setting it is what ``MALLOC_MMAP_THRESHOLD_`` does, from inside the process.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, size))


__all__ = ["fixed_mmap_threshold", "freeze_startup_heap"]

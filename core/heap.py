"""The garbage collector and a long-running server's latency.

A full (generation 2) collection walks every object the process holds. A server holds tens of thousands
from start-up alone (modules, config, compiled SQL, routes), and each full collection then stops both the
event loop and the webhook's writer thread for as long as that walk takes: on the loaded 2-core development
VM six collections of about 300 ms in 20 s of webhook load, against the webhook's 50 ms p99 budget (1.7 s
stopped in all; 0.39 s with the start-up heap frozen: bench/README.md, issue 21).
:func:`freeze_startup_heap` moves what is alive once start-up is done into the collector's permanent
generation, so later collections walk only what was made since.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect once, then exempt every object alive now from later collections; how many were exempted.

    Call it when start-up is done (frozen objects are never freed: what start-up made lives as long as the
    process anyway). Objects made later are collected as usual.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


__all__ = ["freeze_startup_heap"]

"""How many native (OpenMP/BLAS) threads scoring may use.

scikit-learn's histogram gradient boosting starts an OpenMP team for every tree it fits or
applies. Measured on the 2-core development machine while other jobs ran (bench/bench_scoring.py,
1,000,000 contacts): one thread trained in 14 s and scored in 17 s, the default two threads took
117 s and 32 s - threads waiting at barriers for a core cost far more than the second core gives.
On 3,000 contacts one thread predicted 4-5x faster. So scoring uses one thread unless a caller
raises :data:`MAX_THREADS` (a dedicated many-core host may gain from it on big books).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from threadpoolctl import threadpool_limits

MAX_THREADS = 1


def threads_for(rows: int) -> AbstractContextManager[Any]:
    """A context limiting native thread pools for a job of ``rows`` rows (small jobs: always one)."""
    limits: AbstractContextManager[Any] = threadpool_limits(limits=1 if rows < 200_000 else MAX_THREADS)
    return limits

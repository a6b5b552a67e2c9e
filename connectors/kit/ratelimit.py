"""Client-side rate limiting: a token bucket per vendor endpoint class."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """A thread-safe token bucket: ``rate`` requests per ``per`` seconds, bursting up to ``rate``.

    Vendors count requests in rolling windows (HubSpot: 100 or 190 per 10 s; search: ~4/s),
    so a client that spaces its calls this way sees a 429 only when someone else shares the quota.
    """

    def __init__(
        self,
        rate: float,
        per: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or per <= 0:
            raise ValueError("rate and per must be positive")
        self.rate, self.per = float(rate), float(per)
        self._tokens = float(rate)
        self._clock, self._sleep = clock, sleep
        self._stamp = clock()
        self._lock = threading.Lock()
        self.waited = 0.0

    def acquire(self) -> float:
        """Take one token, sleeping until one is free; return the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.rate, self._tokens + (now - self._stamp) * self.rate / self.per)
            self._stamp = now
            self._tokens -= 1.0
            wait = 0.0 if self._tokens >= 0 else -self._tokens * self.per / self.rate
        if wait > 0:
            self._sleep(wait)
            self.waited += wait
        return wait

"""Client-side rate limiting: a token bucket per vendor endpoint class."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """A thread-safe token bucket: ``rate`` requests per ``per`` seconds, bursting up to ``rate``.

    Vendors count requests in rolling windows (HubSpot: 100 or 190 per 10 s; search: ~4/s),
    so a client that spaces its calls this way sees a 429 only when someone else shares the quota.

    ``from_answer``: a call counts as made when its answer arrives (:meth:`settle`), not when it was
    sent. The vendor stamps a request somewhere between the two, so spacing calls from the previous
    answer keeps the vendor's own stamps at least ``per / rate`` apart whatever the network and the
    machine's load do to latency - a guarantee for sequential callers, not a hope with a margin.
    """

    def __init__(
        self,
        rate: float,
        per: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        from_answer: bool = False,
    ) -> None:
        if rate <= 0 or per <= 0:
            raise ValueError("rate and per must be positive")
        self.rate, self.per = float(rate), float(per)
        self._tokens = float(rate)
        self._clock, self._sleep = clock, sleep
        self._stamp = clock()
        self._lock = threading.Lock()
        self.waited = 0.0
        self.from_answer = from_answer

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

    def settle(self) -> None:
        """The call that took a token was answered: with ``from_answer``, the next one waits a full spacing
        from now (tokens refill from the answer, never from the send). Otherwise nothing."""
        if not self.from_answer:
            return
        with self._lock:
            now = self._clock()
            refilled = min(self.rate, self._tokens + (now - self._stamp) * self.rate / self.per)
            self._tokens, self._stamp = min(refilled, 0.0), now  # nothing saved up: a full spacing from now

    def retune(self, rate: float, per: float) -> None:
        """A new rate (the vendor announced its limit), keeping the calls already counted: no fresh burst."""
        if rate <= 0 or per <= 0:
            raise ValueError("rate and per must be positive")
        with self._lock:
            now = self._clock()
            self._tokens = min(self.rate, self._tokens + (now - self._stamp) * self.rate / self.per)
            self._stamp = now
            self.rate, self.per = float(rate), float(per)
            self._tokens = min(self._tokens, self.rate)

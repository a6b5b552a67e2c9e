"""Client-side rate limiting: a token bucket per vendor endpoint class."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """A thread-safe token bucket: ``rate`` requests per ``per`` seconds, bursting up to ``rate``.

    Vendors count requests in rolling windows (HubSpot: 100 or 190 per 10 s; search: ~4/s),
    so a client that spaces its calls this way sees a 429 only when someone else shares the quota.

    ``window=(calls, seconds)`` adds the vendor's own rule as a guard: a call waits while ``calls`` calls
    are open or were answered within the last ``seconds``. The vendor stamps each request between our
    send and its answer, so counting by answers can only over-count what the vendor's window holds: the
    guard keeps a run inside the limit whatever latency and machine load do to the spacing (which alone
    has only a margin). It rarely waits: the spacing already keeps calls apart.
    """

    def __init__(
        self,
        rate: float,
        per: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        window: tuple[int, float] | None = None,
    ) -> None:
        if rate <= 0 or per <= 0:
            raise ValueError("rate and per must be positive")
        self.rate, self.per = float(rate), float(per)
        self._tokens = float(rate)
        self._clock, self._sleep = clock, sleep
        self._stamp = clock()
        self._lock = threading.Lock()
        self.waited = 0.0
        self.window = window
        self._answered: deque[float] = deque()  # answer times of recent calls (window guard)
        self._open = 0  # calls acquired and not yet answered (window guard)

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
        return wait + self._guard()

    def _guard(self) -> float:
        """Wait while the window is full (open calls plus calls answered within it); returns the seconds waited."""
        waited = 0.0
        while self.window is not None:
            with self._lock:
                calls, seconds = self.window
                now = self._clock()
                while self._answered and self._answered[0] <= now - seconds:
                    self._answered.popleft()
                if len(self._answered) + self._open < calls:
                    self._open += 1
                    return waited
                # Full: until the oldest answer leaves the window (or, with only open calls, a short poll).
                wait = self._answered[0] + seconds - now if self._answered else 0.05
            wait = max(wait, 0.001)
            self._sleep(wait)
            self.waited += wait
            waited += wait
        return waited

    def settle(self) -> None:
        """The call that acquired last was answered (or failed): the window guard counts it from now."""
        if self.window is None:
            return
        with self._lock:
            self._open = max(0, self._open - 1)
            self._answered.append(self._clock())

    def release(self) -> None:
        """The call that acquired last was never sent (its guard refused it): the window guard forgets it."""
        if self.window is None:
            return
        with self._lock:
            self._open = max(0, self._open - 1)

    def retune(self, rate: float, per: float, window: tuple[int, float] | None = None) -> None:
        """A new limit (the vendor announced it), keeping what was counted: no fresh burst, no forgotten calls."""
        if rate <= 0 or per <= 0:
            raise ValueError("rate and per must be positive")
        with self._lock:
            now = self._clock()
            self._tokens = min(self.rate, self._tokens + (now - self._stamp) * self.rate / self.per)
            self._stamp = now
            self.rate, self.per = float(rate), float(per)
            self._tokens = min(self._tokens, self.rate)
            if window is not None:
                self.window = window

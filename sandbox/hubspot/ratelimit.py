"""HubSpot's account limits: a rolling ten-second window, a daily cap, and the search bucket.

What HubSpot documents (developers.hubspot.com, "API usage guidelines and limits", and the developer
changelog "Increasing our API limits"): private apps get 100 requests per 10 s on Free and Starter and
190 on Professional and Enterprise, with daily limits of 250,000 / 650,000 / 1,000,000; a public app
using OAuth has its own limit of 110 requests per 10 s per installed account whatever the plan; every
response carries ``X-HubSpot-RateLimit-Max``/``-Remaining``/``-Interval-Milliseconds`` and, for private
apps only, ``-Daily``/``-Daily-Remaining``; the CRM search endpoints have their own per-second limit
and do not return these headers. Inferred: a public app's calls are not counted against a daily cap here.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# Requests per 10 s by plan (VENDORS.md); None = no limit ("unlimited" is a sandbox convenience).
PLAN_LIMITS: dict[str, int | None] = {"unlimited": None, "free": 100, "starter": 100, "professional": 190,
                                       "enterprise": 190}
PLAN_DAILY: dict[str, int | None] = {"unlimited": None, "free": 250_000, "starter": 250_000,
                                     "professional": 650_000, "enterprise": 1_000_000}

OAUTH_APP_LIMIT = 110  # a public OAuth app, per installed account, per 10 s, on any plan
# Hub tiers in order; the web analytics events API answers only on "enterprise".
TIERS = ("free", "starter", "professional", "enterprise")


@dataclass
class Decision:
    """The outcome of one admission check."""

    allowed: bool
    policy: str | None  # "TEN_SECONDLY_ROLLING" | "DAILY" | "SECONDLY" when refused
    remaining: int
    daily_remaining: int | None
    retry_after: float


class RollingLimiter:
    """At most ``limit`` admissions in any ``window`` seconds, plus an optional daily total."""

    def __init__(self, limit: int | None, window: float, daily: int | None = None, policy: str = "TEN_SECONDLY_ROLLING",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.daily, self.policy = limit, window, daily, policy
        self._clock = clock
        self._stamps: deque[float] = deque()
        self._day_count = 0
        self._day = self._today()
        self._lock = threading.Lock()

    @staticmethod
    def _today() -> int:
        return int(time.time() // 86400)  # the daily budget restarts at midnight (UTC here)

    def admit(self) -> Decision:
        """Count one request if allowed; refused requests do not use up the window."""
        with self._lock:
            now = self._clock()
            if self._today() != self._day:
                self._day, self._day_count = self._today(), 0
            while self._stamps and self._stamps[0] <= now - self.window:
                self._stamps.popleft()
            daily_left = None if self.daily is None else self.daily - self._day_count
            if daily_left is not None and daily_left <= 0:
                return Decision(False, "DAILY", 0, 0, 3600.0)
            if self.limit is not None and len(self._stamps) >= self.limit:
                retry = self._stamps[0] + self.window - now
                return Decision(False, self.policy, 0, daily_left, max(retry, 0.0))
            self._stamps.append(now)
            self._day_count += 1
            remaining = -1 if self.limit is None else self.limit - len(self._stamps)
            return Decision(True, None, remaining, None if daily_left is None else daily_left - 1, 0.0)

    def headers(self, decision: Decision) -> dict[str, str]:
        """X-HubSpot-RateLimit-* headers for a response (none when there is no limit)."""
        if self.limit is None:
            return {}
        out = {
            "X-HubSpot-RateLimit-Max": str(self.limit),
            "X-HubSpot-RateLimit-Remaining": str(max(decision.remaining, 0)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.window * 1000)),
        }
        if self.daily is not None:
            out["X-HubSpot-RateLimit-Daily"] = str(self.daily)
            out["X-HubSpot-RateLimit-Daily-Remaining"] = str(max(decision.daily_remaining or 0, 0))
        return out

"""Web analytics events (``GET /events/v3/events``), kept compact and in time order.

A 100,000-contact book has millions of page views, so they are stored as tuples and turned into
JSON only for the page being served; a time window is found by bisection, not by scanning.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sandbox.hubspot.schema import iso

SITE = "https://advisor.example.com"


class WebEvents:
    """Page views of contacts, sorted by time: (millis, contact id, url path, session id, n)."""

    def __init__(self) -> None:
        self._millis: list[int] = []
        self._rows: list[tuple[str, str, str, int]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, occurred_at: datetime, contact_id: str, path: str, session_id: str) -> None:
        """Record one page view (kept sorted even when added out of order)."""
        millis = int(occurred_at.timestamp() * 1000)
        row = (contact_id, path, session_id, len(self._rows) + 1)
        if not self._millis or millis >= self._millis[-1]:  # the usual case: loaded in time order
            self._millis.append(millis)
            self._rows.append(row)
        else:
            at = bisect.bisect_right(self._millis, millis)
            self._millis.insert(at, millis)
            self._rows.insert(at, row)

    def extend(self, rows: Iterable[tuple[datetime, str, str, str]]) -> None:
        """Add many (occurred_at, contact id, path, session id); fast when they come in time order."""
        for occurred_at, contact_id, path, session_id in rows:
            millis = int(occurred_at.timestamp() * 1000)
            if self._millis and millis < self._millis[-1]:
                self.add(occurred_at, contact_id, path, session_id)
            else:
                self._millis.append(millis)
                self._rows.append((contact_id, path, session_id, len(self._rows) + 1))

    def window(self, after_ms: float | None, before_ms: float | None) -> tuple[int, int]:
        """Index range of events strictly inside (after, before)."""
        lo = 0 if after_ms is None else bisect.bisect_right(self._millis, after_ms)
        hi = len(self._millis) if before_ms is None else bisect.bisect_left(self._millis, before_ms)
        return lo, max(lo, hi)

    def rows(self, lo: int, hi: int, object_id: str | None = None) -> Sequence[int]:
        """Positions in [lo, hi), optionally only one contact's (a range, so nothing is copied)."""
        if object_id is None:
            return range(lo, hi)
        return [i for i in range(lo, hi) if self._rows[i][0] == object_id]

    def serialise(self, i: int) -> dict[str, Any]:
        """One event as the events API returns it."""
        contact, path, session, n = self._rows[i]
        return {"objectType": "CONTACT", "objectId": contact, "eventType": "e_visited_page",
                "occurredAt": iso(datetime.fromtimestamp(self._millis[i] / 1000, UTC)), "id": f"pv-{n:09d}",
                "properties": {"hs_url": SITE + path, "hs_session_id": session}}

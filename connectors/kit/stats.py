"""Per-connector call statistics: what one client sent, by endpoint class.

Every call a connector makes goes through one :class:`~connectors.kit.http.CallPolicy`, which
counts it here, so ``stats()`` of any connector reads the same way: calls per endpoint class,
write calls, 429s, retries and calls that failed after every retry. Nothing here holds a secret,
and :meth:`CallStats.as_dict` redacts any string value passed to it anyway.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.kit.redact import redact


@dataclass
class CallStats:
    """Counts of what one client sent: calls per endpoint class, statuses, 429s and retries."""

    calls: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    retries: int = 0
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, endpoint: str) -> None:
        """One call to ``endpoint`` (an endpoint class such as ``"members.list"``)."""
        with self._lock:
            self.calls[endpoint] += 1

    def bump(self, what: str) -> None:
        """Add one to ``rate_limited``, ``retries`` or ``failures``."""
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)

    def as_dict(self, write_endpoints: Iterable[str] | None = None,
                extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A plain snapshot; with ``write_endpoints``, also ``write_calls`` (calls that can change vendor data)."""
        with self._lock:
            out: dict[str, Any] = {
                "calls": dict(self.calls),
                "total_calls": sum(self.calls.values()),
                "rate_limited": self.rate_limited,
                "retries": self.retries,
                "failures": self.failures,
            }
        if write_endpoints is not None:
            writes = set(write_endpoints)
            out["write_calls"] = sum(n for ep, n in out["calls"].items() if ep in writes)
        out.update(extra or {})
        return {k: redact(v) if isinstance(v, str) else v for k, v in out.items()}

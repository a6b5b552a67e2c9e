"""The webhook's response-time histogram, as a plain ASGI middleware.

``@app.middleware("http")`` (Starlette's BaseHTTPMiddleware) runs every request through a task group
and a memory stream of its own; for the webhook, which answers hundreds of requests a second from one
event loop (issue 21), that is work on every request's path for a timer. This one only wraps the call.
"""

from __future__ import annotations

import time
from collections.abc import Collection

from prometheus_client import Histogram
from starlette.types import ASGIApp, Receive, Scope, Send


class WebhookTimer:
    """Observes the time of every ``/hooks/...`` request in ``histogram``, labelled by the webhook kind
    (one of ``kinds``, else ``other``: a label never comes from an arbitrary path)."""

    def __init__(self, app: ASGIApp, histogram: Histogram, kinds: Collection[str]) -> None:
        self.app = app
        self.histogram = histogram
        self.kinds = frozenset(kinds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith("/hooks/"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            parts = path.split("/")  # "", "hooks", tenant, kind, [secret]
            kind = parts[3] if len(parts) > 3 and parts[3] in self.kinds else "other"
            self.histogram.labels(kind).observe(time.perf_counter() - started)


__all__ = ["WebhookTimer"]

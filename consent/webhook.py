"""The preference-center webhook: an ASGI app (Starlette) that takes consent changes in at any time.

Routes (``{tenant}`` is a tenant id from the config):

* ``/hooks/{tenant}/{vendor}{suffix}`` - one route per suffix of each vendor handler given to
  :func:`create_app` (``connectors.registry.webhook_handlers()``). The handler, in the vendor's
  folder, authenticates the request and says what its body means (:mod:`connectors.hooks`); this
  module does the rest, the same for every vendor.
* ``POST /hooks/{tenant}/preferences`` - a custom preference center's JSON, signed with
  ``X-Segsync-Signature: sha256=<hex HMAC-SHA256(webhook_secret, timestamp + "." + body)>`` and
  ``X-Segsync-Timestamp`` (Unix seconds, within five minutes)::

      {"email": "ann@example.com", "purposes": {"email_marketing": false, "profiling": true},
       "occurred_at": "2026-11-25T18:00:00Z", "notice_version": "privacy-2026-03",
       "request_id": "optional", "ip": "optional", "user_agent": "optional"}

  ``notice_version`` is required when any purpose is granted (what the person was shown).

What each vendor's events mean for the ledger is documented in its ``connectors/<vendor>/webhook.py``.
The preference center's parsing lives in :mod:`consent.webhook_events` (pure functions, no I/O); this
module holds the routes, the size cap, the signature check and the one-transaction write.

Every accepted request is written in one transaction: a receipt (the vendor's event id, or a
keyed hash of the body), the ledger events and the outbox actions. A replay finds its receipt and
writes nothing. Rejected requests write nothing: 404 unknown tenant, 401 bad secret/signature,
413 body over ``max_body``, 400 malformed (with the reason). Propagation happens elsewhere: the
response only waits for the commit, then ``on_enqueued(tenant)`` runs in the background.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.hooks import HookRequest, WebhookHandler
from consent.ledger import Ledger
from consent.outbox import Outbox
from consent.policy import normalize_subject
from consent.propagate import enqueue_withdrawals
from consent.schema import insert_ignoring_conflicts, webhook_receipts
from consent.webhook_events import SIGNATURE_WINDOW, Reject, TenantHooks, Work, parse_preferences, vendor_work
from core import times
from core.errors import InputError

log = logging.getLogger("segsync.consent.webhook")

MAX_BODY = 64 * 1024
# Headers are parsed strictly, before anything else is done with them: str.isdigit() accepts
# superscripts and other Unicode digits that int() then refuses (a 500 before authentication).
_ASCII_DIGITS = re.compile(r"[0-9]+", re.ASCII)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


def create_app(
    tenants: Mapping[str, TenantHooks],
    ledger: Ledger,
    outbox: Outbox,
    *,
    on_enqueued: Callable[[str], None] | None = None,
    max_body: int = MAX_BODY,
    clock: Callable[[], datetime] = times.now,
    public_url: str | None = None,
    vendors: Sequence[WebhookHandler] = (),
) -> Starlette:
    """The webhook as an ASGI app, with a route for each of ``vendors``' handlers.

    ``public_url`` (e.g. ``https://hooks.example.com``) is the scheme and host a vendor signs when
    segsync sits behind a proxy."""
    hooks = _Hooks(dict(tenants), ledger, outbox, on_enqueued, max_body, clock, public_url)
    routes = [
        Route(f"/hooks/{{tenant}}/{handler.vendor}{suffix}", hooks.guard(hooks.vendor_endpoint(handler)),
              methods=list(methods))
        for handler in vendors
        for suffix, methods in handler.routes
    ]
    routes.append(Route("/hooks/{tenant}/preferences", hooks.guard(hooks.preferences), methods=["POST"]))
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})


async def _http_error(request: Request, exc: Exception) -> Response:
    # Starlette's own 404/405 (no such route, wrong method), as JSON like every other answer
    status = exc.status_code if isinstance(exc, HTTPException) else 400
    return JSONResponse({"error": "no such route" if status == 404 else str(getattr(exc, "detail", exc))},
                        status_code=status, headers=getattr(exc, "headers", None))


class _Hooks:
    def __init__(
        self,
        tenants: dict[str, TenantHooks],
        ledger: Ledger,
        outbox: Outbox,
        on_enqueued: Callable[[str], None] | None,
        max_body: int,
        clock: Callable[[], datetime],
        public_url: str | None,
    ) -> None:
        self.tenants = tenants
        self.ledger = ledger
        self.outbox = outbox
        self.on_enqueued = on_enqueued
        self.max_body = max_body
        self.clock = clock
        self.public_url = public_url.rstrip("/") if public_url else None

    # -- plumbing ---------------------------------------------------------------------------

    def guard(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except Reject as exc:
                return JSONResponse({"error": exc.reason}, status_code=exc.status)

        return endpoint

    def tenant(self, request: Request) -> tuple[str, TenantHooks]:
        tenant = request.path_params["tenant"]
        hooks = self.tenants.get(tenant)
        if hooks is None:
            raise Reject(404, "unknown tenant")
        return tenant, hooks

    async def body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not _ASCII_DIGITS.fullmatch(declared):  # isdigit() takes "²", which int() refuses
                raise Reject(400, "Content-Length is not a number")
            if len(declared) > 12 or int(declared) > self.max_body:
                raise Reject(413, f"body larger than {self.max_body} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise Reject(413, f"body larger than {self.max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def body_key(self, vendor: str, tenant: str, body: bytes) -> str:
        # Keyed, so the receipt table holds nothing from which a body could be guessed.
        digest = hmac.new(self.ledger.key(tenant), body, hashlib.sha256).hexdigest()
        return f"{vendor}:body:{digest}"

    async def commit(self, tenant: str, hooks: TenantHooks, work: Work) -> Response:
        try:
            status, recorded, enqueued = await run_in_threadpool(self.write, tenant, hooks, work)
        except InputError as exc:
            raise Reject(400, str(exc)) from None
        except sa.exc.OperationalError:
            log.exception("webhook for tenant %s: the database is unavailable", tenant)
            return JSONResponse({"error": "temporarily unavailable, retry"}, status_code=503)
        background = None
        if enqueued and self.on_enqueued is not None:
            background = BackgroundTask(self.on_enqueued, tenant)
        return JSONResponse({"status": status, "recorded": recorded, "enqueued": enqueued}, background=background)

    def write(self, tenant: str, hooks: TenantHooks, work: Work) -> tuple[str, int, int]:
        """Receipt, events and outbox actions in one transaction; ("duplicate", 0, 0) for a replay."""
        with self.ledger.engine.begin() as conn:
            fresh = set()
            for key in dict.fromkeys(work.receipts):
                # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT DO NOTHING
                inserted = conn.execute(
                    insert_ignoring_conflicts(conn, webhook_receipts)
                    .values(tenant_id=tenant, key=key, received_at=self.clock())
                    .returning(webhook_receipts.c.key)
                ).first()
                if inserted is not None:
                    fresh.add(key)
            if not fresh:
                return "duplicate", 0, 0
            if work.signals:  # keep the signals whose receipt is new (a partly replayed batch of vendor events)
                signals = [s for s, key in zip(work.signals, work.receipts, strict=True) if key in fresh]
            else:
                signals = []
            recorded = []
            if work.alias is not None:
                old, new, when = work.alias
                recorded += self.ledger.add_alias(conn, tenant, old, new, source=work.alias_source, occurred_at=when)
            if signals:
                recorded += self.ledger.record_many(tenant, signals, conn=conn)
            emails = {self.ledger.pseudonym(tenant, s.email): normalize_subject(s.email) for s in signals}
            if work.alias is not None:  # a withdrawal carried to the new address is pushed for it
                emails[self.ledger.pseudonym(tenant, work.alias[1])] = work.alias[1]
            enqueued = enqueue_withdrawals(
                conn, self.outbox, tenant, recorded, emails, hooks.destinations, reason=work.reason,
                roles=hooks.roles,
            )
        if recorded:
            log.info("webhook for tenant %s: %d events recorded, %d actions queued", tenant, len(recorded), enqueued)
        return ("recorded" if recorded else "ignored"), len(recorded), enqueued

    # -- vendors ----------------------------------------------------------------------------

    def vendor_endpoint(self, handler: WebhookHandler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            tenant, hooks = self.tenant(request)
            context = hooks.context(handler.vendor)
            parts = HookRequest(request.method, self.urls(request), dict(request.path_params),
                                request.headers, self.clock())
            if handler.admit(parts, context):
                return JSONResponse({"status": "ok"})
            body = await self.body(request)
            handler.verify(parts, body, context)
            if handler.parse_in_thread:
                result = await run_in_threadpool(handler.parse, body, context)
            else:
                result = handler.parse(body, context)
            if result is None:
                return JSONResponse({"status": "ignored", "recorded": 0, "enqueued": 0})
            work = vendor_work(hooks, result, lambda: self.body_key(handler.vendor, tenant, body))
            return await self.commit(tenant, hooks, work)

        return endpoint

    def urls(self, request: Request) -> tuple[str, ...]:
        """The URL as received and, behind a proxy, as the vendor called it (what it signed)."""
        urls = [str(request.url)]
        if self.public_url is not None:
            urls.append(self.public_url + request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return tuple(urls)

    # -- custom preference center -----------------------------------------------------------

    async def preferences(self, request: Request) -> Response:
        tenant, hooks = self.tenant(request)
        body = await self.body(request)
        signature = request.headers.get("x-segsync-signature", "")
        stamp = request.headers.get("x-segsync-timestamp", "")
        if not signature.startswith("sha256=") or not _ASCII_DIGITS.fullmatch(stamp) or len(stamp) > 12:
            raise Reject(401, "missing or malformed X-Segsync-Signature / X-Segsync-Timestamp")
        if abs(self.clock().timestamp() - int(stamp)) > SIGNATURE_WINDOW.total_seconds():
            raise Reject(401, "X-Segsync-Timestamp is outside the 5-minute window")
        expected = hmac.new(hooks.webhook_secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not _same("sha256=" + expected, signature):
            raise Reject(401, "bad signature")
        work = parse_preferences(hooks, body, self.body_key("preferences", tenant, body), self.clock())
        return await self.commit(tenant, hooks, work)

__all__ = ["MAX_BODY", "Reject", "TenantHooks", "create_app"]

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

Every accepted request is written atomically: a receipt (the vendor's event id, or a keyed hash of
the body), the ledger events and the outbox actions. Requests arriving together share one
transaction and one extension of each tenant's chain (group commit, :mod:`consent.groupwrite`); a
request the ledger refuses inside a group is retried alone, so it never takes the others down. A
replay finds its receipt and writes nothing. Rejected requests write nothing: 404 unknown tenant,
401 bad secret/signature, 413 body over ``max_body``, 400 malformed (with the reason), 429 with
``Retry-After`` when ``max_pending`` requests already wait for the writer (load is shed, not queued
for minutes). Propagation happens elsewhere: the response only waits for the commit, then
``on_enqueued(tenant)`` wakes the drain (once per group), which talks to the vendors in its own thread.
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
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.hooks import HookRequest, WebhookHandler
from consent.chain import lock_head
from consent.groupwrite import MAX_PENDING, MAX_WAIT_SECONDS, GroupWriter, Saturated
from consent.ledger import Ledger
from consent.outbox import NewActions, Outbox
from consent.records import RecordedEvent
from consent.schema import insert_ignoring_conflicts, webhook_receipts
from consent.signals import ConsentSignal
from consent.webhook_events import SIGNATURE_WINDOW, Reject, TenantHooks, Work, parse_preferences, vendor_work
from consent.webhook_group import DUPLICATE, Item, Outcome, claim_receipts, withdrawals_of
from consent.webhook_pg import PipelinedWrite
from core import times
from core.errors import InputError

log = logging.getLogger("segsync.consent.webhook")

MAX_BODY = 64 * 1024
# Headers are parsed strictly, before anything else is done with them: str.isdigit() accepts
# superscripts and other Unicode digits that int() then refuses (a 500 before authentication).
_ASCII_DIGITS = re.compile(r"[0-9]+", re.ASCII)

_Item = Item
_Outcome = Outcome


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
    max_pending: int = MAX_PENDING,
    max_wait: float = MAX_WAIT_SECONDS,
) -> Starlette:
    """The webhook as an ASGI app, with a route for each of ``vendors``' handlers.

    ``public_url`` (e.g. ``https://hooks.example.com``) is the scheme and host a vendor signs when
    segsync sits behind a proxy. ``max_pending`` requests may wait for the group commit, the oldest
    for at most ``max_wait`` seconds; past either the answer is 429 with ``Retry-After``.
    ``on_enqueued(tenant)`` runs in the writer thread once per committed group that queued actions
    for the tenant: it must only wake a drain, never call a vendor."""
    hooks = _Hooks(dict(tenants), ledger, outbox, on_enqueued, max_body, clock, public_url, max_pending, max_wait)
    routes = [
        Route(f"/hooks/{{tenant}}/{handler.vendor}{suffix}", hooks.guard(hooks.vendor_endpoint(handler)),
              methods=list(methods))
        for handler in vendors
        for suffix, methods in handler.routes
    ]
    routes.append(Route("/hooks/{tenant}/preferences", hooks.guard(hooks.preferences), methods=["POST"]))
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.writer = hooks.writer  # its counters (groups, items, pending) for tests, the bench and metrics
    app.state.pipelined = hooks.pipelined  # PostgreSQL's pipelined group write (its counters), else None
    app.state.warm_up = hooks.warm_up  # call once before serving (segsync serve, the bench)
    return app


def _log_group(items: Sequence[Item], outcomes: Sequence[Outcome]) -> None:
    total = sum(o[1] for o in outcomes)
    if total:
        log.info("webhook: %d requests, %d events recorded in one commit", len(items), total)


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
        max_pending: int = MAX_PENDING,
        max_wait: float = MAX_WAIT_SECONDS,
    ) -> None:
        self.tenants = tenants
        self.ledger = ledger
        self.outbox = outbox
        self.on_enqueued = on_enqueued
        self.max_body = max_body
        self.clock = clock
        self.public_url = public_url.rstrip("/") if public_url else None
        # PostgreSQL: the group in two round trips (consent.webhook_pg); anything it does not take goes the general way
        engine = ledger.engine
        self.pipelined = PipelinedWrite(engine, ledger) if engine.dialect.name == "postgresql" else None
        self.writer: GroupWriter[_Item, _Outcome] = GroupWriter(
            self.write_group, max_pending=max_pending, max_wait=max_wait, after_group=self.after_group,
            name="segsync-webhook-writer",
        )

    def warm_up(self) -> None:
        """Before serving: check each tenant's key against its ledger and open the writer's connection.

        Otherwise the first request pays for both - the key check connects to the database on the event loop,
        the first group opens the writer's connection - and every request arriving meanwhile waits: 80-170 ms
        for the first 40 requests at 200/s (bench/README.md, issue 21, fourth pass). A tenant whose key is
        refused is only logged here: its requests keep answering with the reason, as before."""
        for tenant in self.tenants:
            try:
                self.ledger.key(tenant)
            except InputError as exc:
                log.error("webhook for tenant %s: %s", tenant, exc)
        if self.pipelined is not None:
            try:
                self.pipelined.connect()
            except Exception:  # the database is down: the first group connects (or answers 503) as before
                log.warning("webhook: could not open the writer's database connection yet", exc_info=True)

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
        """Queue the work for the next group commit and answer once it is committed (429 when saturated)."""
        try:
            status, recorded, enqueued = await self.writer.submit((tenant, hooks, work))
        except Saturated as exc:
            return JSONResponse({"error": "busy, retry later"}, status_code=429,
                                headers={"Retry-After": str(exc.retry_after)})
        except InputError as exc:
            raise Reject(400, str(exc)) from None
        except sa.exc.OperationalError:
            log.exception("webhook for tenant %s: the database is unavailable", tenant)
            return JSONResponse({"error": "temporarily unavailable, retry"}, status_code=503,
                                headers={"Retry-After": "5"})
        return JSONResponse({"status": status, "recorded": recorded, "enqueued": enqueued})

    def write_group(self, items: Sequence[_Item]) -> list[_Outcome | Exception]:
        """Write a group of requests in one transaction; when that fails, each request on its own.

        A request whose data the ledger refuses (or that meets any other error) then gets its own
        error, and the others are still written: nothing of a failed request is kept.
        """
        if self.pipelined is not None:
            done = self.pipelined.write(items, self.clock())
            if done is not None:
                _log_group(items, done)
                return list(done)
        try:
            return list(self.write_together(items))
        except Exception as exc:
            if len(items) == 1:
                return [exc]
        outcomes: list[_Outcome | Exception] = []
        for item in items:
            try:
                outcomes.extend(self.write_together([item]))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def write_together(self, items: Sequence[_Item]) -> list[_Outcome]:
        """Receipts, events and outbox actions of every item in ONE transaction and one chain extension
        per tenant; ("duplicate", 0, 0) for a replay (also of an item earlier in the same group)."""
        outcomes: list[_Outcome | None] = [None] * len(items)
        pending: dict[str, list[int]] = {}  # tenant -> items with signals to append
        recorded_of: dict[int, list[RecordedEvent]] = {}
        with self.ledger.engine.begin() as conn:
            heads = {  # the write lock first (SQLite); sorted: two writers never deadlock; held to the end
                tenant: lock_head(conn, tenant) for tenant in sorted({item[0] for item in items})
            }
            _fresh_of, signals_of = claim_receipts(items, self.new_receipts(conn, items))
            for i, (tenant, _hooks, work) in enumerate(items):
                if i not in signals_of:
                    outcomes[i] = DUPLICATE
                    continue
                recorded_of[i] = []
                if work.alias is not None:
                    old, new, when = work.alias
                    recorded_of[i] += self.ledger.add_alias(conn, tenant, old, new, source=work.alias_source,
                                                            occurred_at=when)
                pending.setdefault(tenant, []).append(i)
            for tenant, indices in pending.items():
                # The head locked above is still the end of the chain unless an alias appended since.
                moved = any(items[i][2].alias is not None for i in indices)
                groups = self.ledger.record_groups(tenant, [signals_of[i] for i in indices], conn=conn,
                                                   head=None if moved else heads[tenant])
                for i, events in zip(indices, groups, strict=True):
                    recorded_of[i] += events
            for i, recorded in recorded_of.items():
                outcomes[i] = ("recorded" if recorded else "ignored", len(recorded), 0)
            for i, enqueued in self.queue_withdrawals(conn, items, signals_of, recorded_of).items():
                status, recorded_n, _ = outcomes[i] or ("ignored", 0, 0)
                outcomes[i] = (status, recorded_n, enqueued)
        done = [o if o is not None else ("ignored", 0, 0) for o in outcomes]
        _log_group(items, done)
        return done

    def queue_withdrawals(
        self, conn: sa.Connection, items: Sequence[_Item], signals_of: Mapping[int, list[ConsentSignal]],
        recorded_of: Mapping[int, list[RecordedEvent]],
    ) -> dict[int, int]:
        """The outbox actions of every item's withdrawals, one insert per tenant; actions queued per item."""
        queued: dict[str, list[tuple[int, NewActions]]] = {}  # tenant -> (item, one of its withdrawals)
        for i, action in withdrawals_of(self.ledger, items, signals_of, recorded_of):
            queued.setdefault(items[i][0], []).append((i, action))
        enqueued: dict[int, int] = {}
        for tenant, pairs in queued.items():
            for (i, _), n in zip(pairs, self.outbox.enqueue_many(conn, tenant, [a for _, a in pairs]), strict=True):
                enqueued[i] = enqueued.get(i, 0) + n
        return enqueued

    def new_receipts(self, conn: sa.Connection, items: Sequence[_Item]) -> set[tuple[str, str]]:
        """Insert every receipt of the group (one statement per tenant); the (tenant, key)s not seen before."""
        fresh: set[tuple[str, str]] = set()
        by_tenant: dict[str, dict[str, None]] = {}
        for tenant, _hooks, work in items:
            by_tenant.setdefault(tenant, {}).update(dict.fromkeys(work.receipts))
        now = self.clock()
        for tenant, keys in by_tenant.items():
            # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT DO NOTHING
            # executemany: SQLAlchemy sends one multi-row INSERT from a statement compiled once and cached
            inserted = conn.execute(
                insert_ignoring_conflicts(conn, webhook_receipts).returning(webhook_receipts.c.key),
                [{"tenant_id": tenant, "key": key, "received_at": now} for key in keys],
            ).scalars()
            fresh.update((tenant, key) for key in inserted)
        return fresh

    def after_group(self, items: Sequence[_Item], outcomes: Sequence[_Outcome | Exception]) -> None:
        """Once per group and tenant with queued actions: wake the drain (propagation runs elsewhere)."""
        if self.on_enqueued is None:
            return
        for tenant in dict.fromkeys(
            item[0] for item, o in zip(items, outcomes, strict=True) if not isinstance(o, Exception) and o[2]
        ):
            self.on_enqueued(tenant)

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

"""The Mailchimp Marketing 3.0 simulator: state loaded from a book, served as a Starlette app.

``MailchimpSim.app()`` answers under ``/3.0`` (``GET /3.0/lists/{id}/members`` and so on). In front
of the routes sits one gate that does what Mailchimp does before any handler runs: check the key
(HTTP Basic with any user, or Bearer) and refuse a request beyond ``max_connections`` in flight
for that key with 429 - Mailchimp's only rate limit, with no rate headers.

Behind it: audience routes (:mod:`.routes_lists`), list webhooks that post Mailchimp-format events
(:mod:`.hooks`), campaigns and email activity (:mod:`.routes_reports`) and async batch operations
(:mod:`.batches`). Tests inspect the state through the helpers at the bottom of :class:`MailchimpSim`
and act as the subscriber with :meth:`MailchimpSim.unsubscribe` and friends.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.mailchimp.batches import DEFAULT_MAX_OPERATIONS, BatchRunner
from sandbox.mailchimp.hooks import WebhookRegistry
from sandbox.mailchimp.problems import fmt_time, problem_response
from sandbox.mailchimp.routes_lists import list_routes
from sandbox.mailchimp.routes_reports import report_routes
from sandbox.mailchimp.state import CampaignRecord, ListState, Member
from sandbox.mailchimp.views import endpoint, list_json, member_json, ok

API_PREFIX = "/3.0"
RESULTS_PREFIX = "/_sandbox/"  # pre-signed-link style downloads: no key, no connection slot
_ACTIONS = {"email_open": "open", "email_click": "click"}


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class MailchimpSim:
    """One Mailchimp account with one audience (``list_id``), reachable with ``api_key``.

    Options: ``delay`` (seconds every authenticated request waits while holding its connection
    slot, to make concurrency observable), ``max_batch_operations`` (default 10,000),
    ``batch_polls`` (the ``GET /batches/{id}`` poll that first reports "finished"; default 2),
    ``strict_status_if_new`` (default True: ``status_if_new: subscribed`` on an unsubscribed/cleaned
    member is refused like ``status`` - stricter than Mailchimp, which ignores it there),
    ``validate_webhook_urls`` (default True: a new list webhook's URL must answer a GET),
    ``list_name``, ``clock`` (a callable returning an aware UTC datetime; default wall clock).
    An unknown option is a TypeError (a typo must not silently test the default).

    Audit: :attr:`subscribe_attempts` lists ``(email, path)`` for every request that asked for
    ``subscribed`` (``status`` or ``status_if_new``), accepted or refused, batch operations included.
    """

    def __init__(self, api_key: str, list_id: str, *, max_connections: int = 10, **options: Any) -> None:
        self.api_key = api_key
        self.list_id = list_id
        self.max_connections = max_connections
        self.delay: float = float(options.pop("delay", 0.0))
        clock: Callable[[], datetime] = options.pop("clock", _utcnow)
        self.state = ListState(list_id, options.pop("list_name", "Sandbox Advisors Clients"), clock)
        self.state.strict_status_if_new = bool(options.pop("strict_status_if_new", True))
        self.batches = BatchRunner(self.state, int(options.pop("max_batch_operations", DEFAULT_MAX_OPERATIONS)),
                                   int(options.pop("batch_polls", 2)))
        self.webhooks = WebhookRegistry(self.state, bool(options.pop("validate_webhook_urls", True)))
        # The advisor's own tags, seeded on load: a name equal to a segsync segment name is the trap of
        # Mailchimp's one namespace for tags and static segments (see :mod:`.segments`).
        self.customer_tags: tuple[str, ...] = tuple(options.pop("customer_tags", ()) or ())
        if options:
            raise TypeError(f"unknown MailchimpSim options: {sorted(options)} (known: delay, max_batch_operations, "
                            "batch_polls, strict_status_if_new, validate_webhook_urls, list_name, clock, "
                            "max_connections, customer_tags)")
        self.in_flight: Counter[str] = Counter()
        self.peak_in_flight = 0
        self.rejected = 0  # requests refused with 429 by the connection limit

    # ---- seeding -------------------------------------------------------------------------
    def load(self, book: Any) -> None:
        """Seed the audience and campaign history from a :class:`sandbox.book.Book`."""
        st = self.state
        opens: Counter[str] = Counter(e.person_key for e in book.events if e.type in _ACTIONS)
        by_key: dict[str, Member] = {}
        with st.lock:
            for p in book.people:
                if not p.in_esp or not p.esp_email or st.find(p.esp_email) is not None:
                    continue
                changed = max(t for t in (p.created_at, p.esp_opt_in_at) if t is not None)
                by_key[p.key] = st.add(
                    p.esp_email, p.esp_status, {"FNAME": p.first_name, "LNAME": p.last_name},
                    ip=p.esp_opt_in_ip or "", opted_in_at=p.esp_opt_in_at, signed_up_at=p.created_at,
                    last_changed=changed, reason=p.esp_unsubscribe_reason or "",
                    rating=min(5, 1 + opens[p.key] // 4),
                )
            self._seed_customer_tags(list(by_key.values()))
            titles = {c.id: c.title for c in book.campaigns}
            for c in book.campaigns:
                st.campaigns[c.id] = CampaignRecord(c.id, c.title, c.sent_at)
            for e in sorted(book.events, key=lambda e: e.occurred_at):
                member = by_key.get(e.person_key)
                record = st.campaigns.get(e.campaign_id or "")
                if member is None or record is None:
                    continue
                uid = member.unique_email_id
                if e.type == "email_sent":
                    record.recipients.setdefault(uid, [])
                elif e.type in _ACTIONS:
                    action: dict[str, Any] = {"action": _ACTIONS[e.type], "type": "", "timestamp": e.occurred_at,
                                              "ip": member.ip_opt}
                    if e.url:
                        action["url"] = e.url
                    record.recipients.setdefault(uid, []).append(action)
                else:
                    continue
                feed_type = {"email_sent": "sent"}.get(e.type, _ACTIONS.get(e.type, e.type))
                member.activity.append({"activity_type": feed_type, "created_at_timestamp": e.occurred_at,
                                        "campaign_id": e.campaign_id, "campaign_title": titles.get(e.campaign_id, ""),
                                        **({"link_clicked": e.url} if e.url else {})})

    def _seed_customer_tags(self, members: list[Member]) -> None:
        """Each configured customer tag on every tenth member (by list order), as the advisor tagged them."""
        for name in self.customer_tags:
            seg = self.state.ensure_segment(name)
            seg.members.update(m.unique_email_id for m in members[::10])

    # ---- the HTTP app --------------------------------------------------------------------
    def app(self) -> Starlette:
        """The API under ``/3.0``, behind the key check and the connection limit."""

        @endpoint
        async def root(request: Request) -> Response:
            return ok(request, {"account_id": "sandbox", "account_name": "Sandbox Advisors", "email": "ops@example.com",
                                "role": "owner", "pricing_plan_type": "monthly", "total_subscribers":
                                list_json(self.state)["stats"]["member_count"]})

        @endpoint
        async def ping(request: Request) -> Response:
            return JSONResponse({"health_status": "Everything's Chimpy!"})

        @endpoint
        async def lists(request: Request) -> Response:
            with self.state.lock:
                return ok(request, {"lists": [list_json(self.state)], "total_items": 1})

        async def missing(scope: Scope, receive: Receive, send: Send) -> None:
            await problem_response(404, "Resource Not Found", "The requested resource could not be found.")(
                scope, receive, send)

        routes = [Route("/", root, methods=["GET"]), Route("/ping", ping, methods=["GET"]),
                  Route("/lists", lists, methods=["GET"])]
        router = Router(routes + list_routes(self.state) + self.webhooks.routes() + report_routes(self.state)
                        + self.batches.routes(), default=missing)
        self.batches.target = router

        async def http_error(request: Request, exc: Exception) -> Response:
            status = exc.status_code if isinstance(exc, HTTPException) else 500
            title = "Method Not Allowed" if status == 405 else "Resource Not Found"
            return problem_response(status, title, f"{request.method} {request.url.path} is not supported.")

        return Starlette(routes=[Mount(API_PREFIX, app=router), self.batches.results_route()],
                         exception_handlers={HTTPException: http_error},
                         middleware=[_gate(self)])

    def rate_limited_response(self) -> Response:
        """Mailchimp's 429 for too many simultaneous connections (problem+json, no rate headers)."""
        return problem_response(429, "Too Many Requests",
                                f"You have exceeded the limit of {self.max_connections} simultaneous connections.")

    # ---- inspection and people's own actions (for tests) ---------------------------------
    @property
    def subscribe_attempts(self) -> list[tuple[str, str]]:
        """``(email, path)`` of every request that tried to set ``subscribed`` (a copy)."""
        with self.state.lock:
            return list(self.state.subscribe_attempts)

    @property
    def webhook_deliveries(self) -> list[dict[str, Any]]:
        """Attempted webhook posts: ``{url, type, email, status, error}`` (a copy)."""
        return self.webhooks.delivered()

    def add_webhook(self, url: str, events: dict[str, bool] | None = None,
                    sources: dict[str, bool] | None = None) -> str:
        """Register a list webhook without the HTTP round trip or URL check; returns its id."""
        with self.state.lock:
            return self.webhooks.register(url, events, sources).id

    def wait_for_webhooks(self, timeout: float = 5.0) -> bool:
        """Block until every queued webhook was attempted (False on timeout)."""
        return self.webhooks.wait(timeout)

    def _as_person(self, action: Callable[[], object]) -> None:
        """Run a change as the subscriber ("user" source for webhooks)."""
        with self.state.lock:
            previous, self.state.source = self.state.source, "user"
            try:
                action()
            finally:
                self.state.source = previous

    def member(self, email: str) -> dict[str, Any] | None:
        """The member as the API would return it, or None."""
        with self.state.lock:
            m = self.state.find(email)
            return member_json(self.state, m) if m else None

    def status(self, email: str) -> str | None:
        """The member's status, or None if not on the list."""
        with self.state.lock:
            m = self.state.find(email)
            return m.status if m else None

    def tags(self, email: str) -> set[str]:
        """Names of the member's active tags (empty for an unknown email)."""
        with self.state.lock:
            m = self.state.find(email)
            return set(self.state.tag_names(m)) if m else set()

    def segment_members(self, name: str) -> set[str]:
        """Emails in the static segment (or tag) called ``name``; empty if there is none."""
        with self.state.lock:
            seg = self.state.segment_by_name(name)
            if seg is None:
                return set()
            return {m.email for m in self.state.members.values() if m.unique_email_id in seg.members}

    def unsubscribe(self, email: str, reason: str = "N/A (Unsubscribed by the subscriber)") -> None:
        """The person clicks "unsubscribe" (bumps last_changed; fires an ``unsubscribe`` webhook)."""
        self._as_person(lambda: self.state.set_status(self.state.get(email), "unsubscribed", reason))

    def clean(self, email: str) -> None:
        """The address hard-bounces and is cleaned (bumps last_changed; fires a ``cleaned`` webhook)."""
        self._as_person(lambda: self.state.set_status(self.state.get(email), "cleaned"))

    def change_email(self, old: str, new: str) -> None:
        """The person changes their address in their profile (bumps last_changed; the hash changes; ``upemail``)."""
        self._as_person(lambda: self.state.change_email(self.state.get(old), new))

    def confirm_opt_in(self, email: str) -> None:
        """The person clicks the double opt-in link: pending -> subscribed (fires ``subscribe``)."""
        def confirm() -> None:
            member = self.state.get(email)
            if member.status != "pending":
                raise ValueError(f"{email} is {member.status}, not pending: nothing to confirm")
            member.ip_opt = member.ip_opt or "127.0.0.1"
            self.state.set_status(member, "subscribed")
        self._as_person(confirm)

    def admin_subscribe(self, email: str, first_name: str = "") -> None:
        """An account user adds the address as subscribed in Mailchimp's web app (fires ``subscribe``).

        Mailchimp's ``subscribe`` list webhook is the same whoever subscribed the person; only the
        webhook's ``sources`` settings (user, admin, api) decide whether it is sent, and the payload says
        nothing about who acted (mailchimp.com/developer "Sync audience data with webhooks"). Such a
        member has no opt-in evidence: empty ``ip_opt`` and no ``timestamp_opt`` (inferred from how
        imported and admin-added contacts show in the API).
        """
        with self.state.lock:
            previous, self.state.source = self.state.source, "admin"
            try:
                member = self.state.find(email)
                if member is None:
                    member = self.state.add(email, "pending", {"FNAME": first_name})
                member.ip_opt, member.timestamp_opt = "", None
                self.state.set_status(member, "subscribed")
                member.timestamp_opt = None  # set_status stamps an opt-in time; an admin's add has none
            finally:
                self.state.source = previous

    def update_profile(self, email: str, **merge_fields: Any) -> None:
        """The person edits their profile form (merge fields; fires a ``profile`` webhook if anything changed)."""
        self._as_person(lambda: self.state.update(self.state.get(email), {"merge_fields": merge_fields}))

    def describe(self) -> dict[str, Any]:
        """Counts for a sandbox banner or a test message."""
        with self.state.lock:
            return {"members": len(self.state.members), "segments": len(self.state.segments),
                    "campaigns": len(self.state.campaigns), "batches": len(self.batches.jobs),
                    "last_changed_max": fmt_time(max((m.last_changed for m in self.state.members.values()),
                                                     default=None))}


def _gate(sim: MailchimpSim) -> Middleware:
    """The middleware entry that checks the key and the simultaneous-connection limit."""
    return Middleware(_Gate, sim=sim)


class _Gate:
    """Pure ASGI middleware, so a request holds its slot until its last byte is sent."""

    def __init__(self, app: ASGIApp, sim: MailchimpSim) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(RESULTS_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        problem = _check_key(headers.get("authorization", ""), self.sim.api_key)
        if problem is not None:
            await problem(scope, receive, send)
            return
        sim = self.sim
        if sim.in_flight[sim.api_key] >= sim.max_connections:
            sim.rejected += 1
            await sim.rate_limited_response()(scope, receive, send)
            return
        sim.in_flight[sim.api_key] += 1
        sim.peak_in_flight = max(sim.peak_in_flight, sim.in_flight[sim.api_key])
        try:
            if sim.delay:
                await asyncio.sleep(sim.delay)
            await self.app(scope, receive, send)
        finally:
            sim.in_flight[sim.api_key] -= 1


def _check_key(authorization: str, api_key: str) -> Response | None:
    """None when the header carries the key; else Mailchimp's 401 problem."""
    scheme, _, value = authorization.partition(" ")
    supplied = ""
    if scheme.lower() == "basic":
        try:
            supplied = base64.b64decode(value.strip()).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            supplied = ""
    elif scheme.lower() in ("bearer", "apikey"):
        supplied = value.strip()
    if not supplied:
        return problem_response(401, "API Key Missing",
                                "Your request did not include an API key.")
    if not hmac.compare_digest(supplied.encode(), api_key.encode()):
        return problem_response(401, "API Key Invalid",
                                "Your API key may be invalid, or you've attempted to access the wrong datacenter.")
    return None


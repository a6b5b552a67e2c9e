"""List webhooks: ``/lists/{id}/webhooks`` and delivery of Mailchimp-format events when members change.

A registered URL gets the form-encoded POST Mailchimp would send (built by :mod:`sandbox.webhooks`)
for each enabled event type whose source is enabled: ``user`` (the person, e.g. ``sim.unsubscribe``),
``admin`` or ``api`` (any change made through the API). ``cleaned`` events are not filtered by source
(a bounce has no actor). Creating a webhook first validates the URL with a GET that must answer 2xx,
as Mailchimp does. Deliveries run on a background thread - the API answers without waiting, like
Mailchimp - and each outcome lands in :attr:`WebhookRegistry.deliveries`; :meth:`WebhookRegistry.wait`
lets a test block until everything queued has been attempted.

Defaults when a create request omits them: every event on, sources ``user`` and ``admin`` on and ``api``
off (the form's defaults); inside a given ``events``/``sources`` object, a missing key means off.
"""

from __future__ import annotations

import secrets
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import requests
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.mailchimp.problems import SimError, invalid, not_found
from sandbox.mailchimp.state import SOURCES, ListState, Member
from sandbox.mailchimp.views import endpoint, ok, read_json
from sandbox.webhooks import MAILCHIMP_TYPES, mailchimp_form

DELIVERY_TIMEOUT = 10.0  # Mailchimp gives up on a webhook request after 10 s
_DEFAULT_SOURCES = {"user": True, "admin": True, "api": False}
_UNFILTERED = ("cleaned", "campaign")


@dataclass
class ListWebhook:
    """One registered webhook URL and its switches."""

    id: str
    url: str
    events: dict[str, bool]
    sources: dict[str, bool]

    def wants(self, kind: str, source: str) -> bool:
        return self.events.get(kind, False) and (kind in _UNFILTERED or self.sources.get(source, False))


def _switches(value: Any, names: tuple[str, ...], default: dict[str, bool], field: str,
              partial: bool = False) -> dict[str, bool]:
    """Validate an ``events``/``sources`` object; ``partial`` returns only the keys given (PATCH)."""
    if value is None:
        return dict(default)
    if not isinstance(value, dict) or any(not isinstance(v, bool) for v in value.values()):
        raise invalid("The resource submitted could not be validated.",
                      [{"field": field, "message": f"{field} must be an object of booleans ({', '.join(names)})."}])
    unknown = set(value) - set(names)
    if unknown:
        raise invalid("The resource submitted could not be validated.",
                      [{"field": field, "message": f"Unknown keys: {', '.join(sorted(unknown))}."}])
    if partial:
        return {name: bool(value[name]) for name in names if name in value}
    return {name: bool(value.get(name, False)) for name in names}


class WebhookRegistry:
    """The list's webhooks and a lazily started delivery thread."""

    def __init__(self, state: ListState, validate_urls: bool = True) -> None:
        self.state = state
        self.validate_urls = validate_urls
        self.hooks: dict[str, ListWebhook] = {}
        self.deliveries: list[dict[str, Any]] = []  # {url, type, email, status, error}
        self._pending: deque[tuple[str, list[tuple[str, str]], str, str]] = deque()
        self._outstanding = 0
        self._running = False
        self._cv = threading.Condition()
        state.listeners.append(self._on_event)

    # ---- registration ------------------------------------------------------------------
    def register(self, url: object, events: Any = None, sources: Any = None) -> ListWebhook:
        """Store a webhook (no URL check; the HTTP route checks first). Call under the state lock."""
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise invalid("The resource submitted could not be validated.",
                          [{"field": "url", "message": "This value should be a valid http(s) URL."}])
        if any(h.url == url for h in self.hooks.values()):
            raise SimError(400, "Invalid Resource", "Sorry, you can't use the same webhook URL twice.")
        hook = ListWebhook(secrets.token_hex(5), url,
                           _switches(events, MAILCHIMP_TYPES, dict.fromkeys(MAILCHIMP_TYPES, True), "events"),
                           _switches(sources, SOURCES, _DEFAULT_SOURCES, "sources"))
        self.hooks[hook.id] = hook
        return hook

    def hook_json(self, hook: ListWebhook) -> dict[str, Any]:
        return {"id": hook.id, "url": hook.url, "events": dict(hook.events), "sources": dict(hook.sources),
                "list_id": self.state.list_id}

    # ---- delivery ----------------------------------------------------------------------
    def _on_event(self, kind: str, member: Member, source: str, extra: dict[str, Any]) -> None:
        """Called by the state under its lock: snapshot the form now, post it later."""
        wanted = [h for h in self.hooks.values() if h.wants(kind, source)]
        if not wanted:
            return
        data: dict[str, Any] = dict(extra)
        if kind in ("subscribe", "profile", "unsubscribe"):
            data.update(id=member.unique_email_id, web_id=member.web_id, ip_opt=member.ip_opt,
                        merges=dict(member.merge_fields))
            if kind == "subscribe":
                data["ip_signup"] = member.ip_signup
        elif kind == "upemail":
            data["new_id"] = member.unique_email_id
        fired = self.state.stamp()
        for hook in wanted:
            fields = mailchimp_form(kind, member.email, self.state.list_id, fired_at=fired, **data)
            self._enqueue((hook.url, fields, kind, member.email))

    def _enqueue(self, item: tuple[str, list[tuple[str, str]], str, str]) -> None:
        with self._cv:
            self._pending.append(item)
            self._outstanding += 1
            if not self._running:
                self._running = True
                threading.Thread(target=self._work, name="sandbox-mailchimp-webhooks", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._cv:
                if not self._pending:
                    self._running = False
                    return
                url, fields, kind, email = self._pending.popleft()
            record: dict[str, Any] = {"url": url, "type": kind, "email": email, "status": None, "error": ""}
            try:
                with requests.Session() as session:
                    resp = session.post(url, data=fields, timeout=DELIVERY_TIMEOUT,
                                        headers={"User-Agent": "MailChimp.com"})
                record["status"] = resp.status_code
            except requests.RequestException as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"
            with self._cv:
                self.deliveries.append(record)
                self._outstanding -= 1
                self._cv.notify_all()

    def delivered(self) -> list[dict[str, Any]]:
        """A copy of the delivery records so far."""
        with self._cv:
            return list(self.deliveries)

    def wait(self, timeout: float = 5.0) -> bool:
        """Block until every queued delivery was attempted; False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: self._outstanding == 0, timeout)

    # ---- routes ------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        """``/lists/{id}/webhooks`` (GET, POST) and ``/lists/{id}/webhooks/{webhook_id}`` (GET, PATCH, DELETE)."""
        state = self.state

        def check(request: Request) -> None:
            if request.path_params["list_id"] != state.list_id:
                raise not_found()

        def hook_for(request: Request) -> ListWebhook:
            hook = self.hooks.get(request.path_params["webhook_id"])
            if hook is None:
                raise not_found()
            return hook

        @endpoint
        async def collection(request: Request) -> Response:
            check(request)
            if request.method == "GET":
                with state.lock:
                    items = [self.hook_json(h) for h in self.hooks.values()]
                return ok(request, {"webhooks": items, "list_id": state.list_id, "total_items": len(items)})
            body = await read_json(request)
            url = body.get("url")
            if (self.validate_urls and isinstance(url, str) and url.startswith(("http://", "https://"))
                    and not await run_in_threadpool(_url_answers, url)):
                    raise invalid("The resource submitted could not be validated.",
                                  [{"field": "url", "message": "We couldn't verify the URL is working. "
                                                               "Please double check and try again."}])
            with state.lock:
                hook = self.register(url, body.get("events"), body.get("sources"))
                return ok(request, self.hook_json(hook))

        @endpoint
        async def item(request: Request) -> Response:
            check(request)
            if request.method == "PATCH":
                body = await read_json(request)
                with state.lock:
                    hook = hook_for(request)
                    if "events" in body:
                        hook.events.update(_switches(body["events"], MAILCHIMP_TYPES, {}, "events", partial=True))
                    if "sources" in body:
                        hook.sources.update(_switches(body["sources"], SOURCES, {}, "sources", partial=True))
                    return ok(request, self.hook_json(hook))
            with state.lock:
                hook = hook_for(request)
                if request.method == "DELETE":
                    del self.hooks[hook.id]
                    return Response(status_code=204)
                return ok(request, self.hook_json(hook))

        base = "/lists/{list_id}/webhooks"
        return [Route(base, collection, methods=["GET", "POST"]),
                Route(base + "/{webhook_id}", item, methods=["GET", "PATCH", "DELETE"])]


def _url_answers(url: str) -> bool:
    """Mailchimp's validator: a GET that must come back 2xx within the timeout."""
    try:
        with requests.Session() as session:
            resp = session.get(url, timeout=DELIVERY_TIMEOUT, headers={"User-Agent": "MailChimp.com WebHook Validator"})
        return 200 <= resp.status_code < 300
    except requests.RequestException:
        return False

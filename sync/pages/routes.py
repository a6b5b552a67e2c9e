"""The page routes: status (``/``), runs, model cards, lift, login, and the preference page (``/p/``).

Status pages are read-only and need a login (see :mod:`sync.pages.security`). The preference
page needs no login: its signed link is the credential. Every way a link can be wrong answers the
same 403 page, so nothing can be learnt about who is a subscriber.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from consent.ledger import Ledger
from consent.outbox import Outbox
from consent.webhook_events import Reject
from sync.config.models import Config, TenantCfg
from sync.pages import tokens
from sync.pages.cards import render_card_html
from sync.pages.charts import consent_chart, lift_chart, segments_chart
from sync.pages.lift_data import segment_lift
from sync.pages.preferences import find_subject, link_key, purposes_of, record_choices
from sync.pages.security import (
    ALL,
    SESSION_COOKIE,
    SESSION_TTL,
    Login,
    RateLimiter,
    client_ip,
    headers,
    page,
    read_form,
)
from sync.pages.status_data import firm_status, load_cards, mask_email, run_detail, stored_scores
from sync.store import Store

FORM_TTL = timedelta(hours=2)
BAD_LINK = "This link is not valid or has expired. Ask the firm that sent it for a new one."


class Host(Protocol):
    """What the pages need from the server (``sync.server.Service`` provides it)."""

    cfg: Config
    base_dir: Path
    store: Store
    ledger: Ledger
    outbox: Outbox

    def trigger_drain(self, tenant_id: str) -> None: ...


def build_router(host: Host, *, limiter: RateLimiter | None = None) -> APIRouter:
    """All page routes over ``host``."""
    return _Pages(host, limiter or RateLimiter()).router


class _Pages:
    def __init__(self, host: Host, limiter: RateLimiter) -> None:
        self.host, self.limiter = host, limiter
        self.login = Login(host.cfg)
        self.tenants = {t.id: t for t in host.cfg.tenants}
        r = self.router = APIRouter()
        r.add_api_route("/", self.status, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route("/login", self.login_form, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route("/login", self.login_post, methods=["POST"], response_class=HTMLResponse)
        r.add_api_route("/logout", self.logout, methods=["POST"])
        r.add_api_route("/firms/{tenant_id}/runs/{run_id}", self.run, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route("/firms/{tenant_id}/models/{score}", self.card, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route("/firms/{tenant_id}/lift/{segment}", self.lift, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route("/p/{token}", self.prefs, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route("/p/{token}", self.prefs_post, methods=["POST"], response_class=HTMLResponse)

    # -- login ------------------------------------------------------------------------------

    def _gate(self, request: Request, tenant_id: str | None = None) -> Response | str:
        """The caller's scope, or the refusal to send instead of the page."""
        if not self.login.configured:
            return page("message.html", status=403, title="Status pages are off", error=True,
                        message="No login is configured, so the status pages stay closed.",
                        hint="Set server.admin_token: ${SEGSYNC_ADMIN_TOKEN} (16+ characters) in the config, or "
                             "pages.status_token for one firm, and restart `segsync serve`.")
        scope = self.login.scope(request)
        if scope is None:
            return page("login.html", status=401, next=request.url.path, error=None)
        if tenant_id is not None and (tenant_id not in self.tenants or scope not in (ALL, tenant_id)):
            return page(
                "message.html", status=404, title="Not found", message="No such firm for this login.", error=True
            )
        return scope

    def login_form(self, request: Request) -> Response:
        if not self.login.configured:
            return self._gate(request)  # type: ignore[return-value]
        return page("login.html", next="/", error=None)

    async def login_post(self, request: Request) -> Response:
        if not self.limiter.allow("login:" + client_ip(request)):
            return page(
                "message.html",
                status=429,
                title="Too many attempts",
                error=True,
                message="Too many sign-in attempts. Wait a minute and try again.",
                extra_headers={"Retry-After": "60"},
            )
        if not self.login.configured:
            return self._gate(request)  # type: ignore[return-value]
        try:
            form = await read_form(request)
        except ValueError:
            return page("login.html", status=400, next="/", error="The form was too large.")
        scope = self.login.scope_of_token((form.get("token") or [""])[0])
        target = (form.get("next") or ["/"])[0]
        target = target if target.startswith("/") and not target.startswith("//") else "/"  # no open redirect
        if scope is None:
            return page("login.html", status=401, next=target, error="That token is not valid.")
        response = RedirectResponse(target, status_code=303, headers=headers(secrets.token_urlsafe(8)))
        response.set_cookie(SESSION_COOKIE, self.login.session(scope), max_age=int(SESSION_TTL.total_seconds()),
                            httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/")
        return response

    def logout(self) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- status -----------------------------------------------------------------------------

    def status(self, request: Request) -> Response:
        scope = self._gate(request)
        if not isinstance(scope, str):
            return scope
        now = datetime.now(UTC)
        h = self.host
        firms = [
            firm_status(h.cfg, h.base_dir, h.store, h.outbox, t, now) for t in h.cfg.tenants if scope in (ALL, t.id)
        ]
        colour = firms[0]["tenant"].pages.colour if len(firms) == 1 else "#1f4e79"
        # The task engine's queue (serve --workers external) spans every firm: shown to the admin login only.
        queue = getattr(h, "queue_summary", lambda: None)() if scope == ALL else None
        return page("status.html", colour=colour, firms=firms, now=now, charts=_firm_charts(firms), queue=queue)

    def run(self, request: Request, tenant_id: str, run_id: int) -> Response:
        scope = self._gate(request, tenant_id)
        if not isinstance(scope, str):
            return scope
        detail = run_detail(self.host.store, tenant_id, run_id)
        tenant = self.tenants[tenant_id]
        if detail is None:
            return page(
                "message.html", status=404, title="Not found", message=f"No run {run_id} for this firm.", error=True
            )
        return page("run.html", colour=tenant.pages.colour, firm=tenant.name or tenant.id, tenant=tenant, **detail)

    def card(self, request: Request, tenant_id: str, score: str) -> Response:
        scope = self._gate(request, tenant_id)
        if not isinstance(scope, str):
            return scope
        tenant = self.tenants[tenant_id]
        card = load_cards(self.host.cfg, self.host.base_dir, tenant).get(score)
        if card is None:
            return page("message.html", status=404, title="No model card", colour=tenant.pages.colour, error=True,
                        message=f"There is no model card for {score!r} yet.",
                        hint=f"Run `segsync score CONFIG --tenant {tenant_id} --report` to write one.")
        values = stored_scores(self.host.store, tenant_id, score)
        nonce = secrets.token_urlsafe(16)
        html = render_card_html(card, firm=tenant.name or tenant.id, colour=tenant.pages.colour, scores=values,
                                nonce=nonce, back="/")
        return HTMLResponse(html, headers=headers(nonce))

    def lift(self, request: Request, tenant_id: str, segment: str) -> Response:
        scope = self._gate(request, tenant_id)
        if not isinstance(scope, str):
            return scope
        tenant = self.tenants[tenant_id]
        seg = next((s for s in tenant.segments if s.name == segment), None)
        if seg is None:
            return page("message.html", status=404, title="Not found", message=f"No segment {segment!r}.", error=True)
        data = segment_lift(self.host.store, tenant, seg, datetime.now(UTC))
        return page(
            "lift.html", colour=tenant.pages.colour, firm=tenant.name or tenant.id, chart=lift_chart(data), **data
        )

    # -- preference page --------------------------------------------------------------------

    def _link(self, token: str) -> tuple[TenantCfg, str]:
        """The tenant and email of a valid link; :class:`tokens.BadToken` for anything else."""
        try:
            claims = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "==="))
        except (ValueError, IndexError):
            raise tokens.BadToken from None
        name = claims.get("t") if isinstance(claims, dict) else None
        tenant = self.tenants.get(name) if isinstance(name, str) else None
        if tenant is None:
            raise tokens.BadToken
        claims = tokens.verify(link_key(tenant, tokens.LINK), tokens.LINK, token)
        email = find_subject(self.host.store, self.host.ledger, tenant.id, str(claims.get("s")))
        if email is None:  # erased since the link was sent
            raise tokens.BadToken
        return tenant, email

    def _refuse(self, status: int = 403) -> Response:
        return page("message.html", status=status, title="Link not valid", message=BAD_LINK, error=True)

    def _form_token(self, tenant: TenantCfg, link: str) -> str:
        return tokens.sign(link_key(tenant, tokens.FORM), tokens.FORM, {"l": _digest(link)}, FORM_TTL)

    def _prefs_page(self, tenant: TenantCfg, email: str, link: str, *, status: int = 200, **extra: Any) -> Response:
        return page("prefs.html", status=status, colour=tenant.pages.colour, firm=tenant.name or tenant.id,
                    who=mask_email(email), purposes=purposes_of(tenant, self.host.ledger, email),
                    form_token=self._form_token(tenant, link), action=f"/p/{link}", **extra)

    def prefs(self, request: Request, token: str) -> Response:
        if not self.limiter.allow("p:" + client_ip(request)):
            return page("message.html", status=429, title="Too many requests", error=True,
                        message="Too many requests. Wait a minute and try again.", extra_headers={"Retry-After": "60"})
        try:
            tenant, email = self._link(token)
        except tokens.BadToken:
            return self._refuse()
        return self._prefs_page(tenant, email, token)

    async def prefs_post(self, request: Request, token: str) -> Response:
        if not self.limiter.allow("p:" + client_ip(request)):
            return page("message.html", status=429, title="Too many requests", error=True,
                        message="Too many requests. Wait a minute and try again.", extra_headers={"Retry-After": "60"})
        try:
            tenant, email = self._link(token)
            form = await read_form(request)
            claims = tokens.verify(link_key(tenant, tokens.FORM), tokens.FORM, (form.get("form_token") or [""])[0])
            if claims.get("l") != _digest(token):  # CSRF: the form must come from this link's own page
                raise tokens.BadToken
        except (tokens.BadToken, ValueError):
            return self._refuse()
        policy = [p.name for p in purposes_of(tenant, self.host.ledger, email)]
        everything_off = (form.get("action") or [""])[0] == "unsubscribe_all"
        wanted = {p: (not everything_off) and p in form.get("purpose", []) for p in policy}
        try:
            outcome = record_choices(tenant, self.host.ledger, self.host.outbox, email, wanted,
                                     request_id=f"form:{claims.get('n')}", ip=client_ip(request),
                                     user_agent=request.headers.get("user-agent"))
        except Reject as exc:
            return self._prefs_page(tenant, email, token, status=400, error=exc.reason)
        if outcome.enqueued:
            self.host.trigger_drain(tenant.id)
        return self._prefs_page(tenant, email, token, saved=outcome)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _firm_charts(firms: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f["tenant"].id: {"segments": segments_chart(f), "consent": consent_chart(f)} for f in firms}

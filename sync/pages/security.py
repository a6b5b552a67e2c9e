"""Security of the pages: headers (with a per-response CSP nonce), login sessions, rate limits, forms.

- Status pages need a login: ``server.admin_token`` (every firm) or a firm's ``pages.status_token``
  (that firm only), given once on ``/login`` (then an HttpOnly, SameSite=Strict session cookie,
  signed and expiring) or as ``Authorization: Bearer``. With no token configured they are refused
  with a message saying how to set one: never open by default.
- Every page carries a strict Content-Security-Policy (no script at all; the one inline stylesheet
  by nonce), no referrer (preference links hold a token), no framing, no sniffing, no caching.
- A sliding-window limit per client address guards the preference page and the login.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from datetime import timedelta
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse

from sync.config.models import Config
from sync.pages import tokens
from sync.pages.render import render

SESSION_COOKIE = "segsync_session"
SESSION_TTL = timedelta(hours=12)
MAX_FORM = 4096
ALL = "*"


def headers(nonce: str) -> dict[str, str]:
    """The security headers of every page."""
    return {
        "Content-Security-Policy": (f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; "
                                    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
    }


def page(template: str, *, status: int = 200, colour: str = "#1f4e79", extra_headers: Mapping[str, str] | None = None,
         **context: object) -> HTMLResponse:
    """Render a page with a fresh nonce and the security headers."""
    nonce = secrets.token_urlsafe(16)
    html = render(template, nonce=nonce, colour=colour, **context)
    return HTMLResponse(html, status_code=status, headers={**headers(nonce), **(extra_headers or {})})


class RateLimiter:
    """At most ``limit`` requests per ``window`` seconds per key (client address); thread-safe."""

    def __init__(self, limit: int = 30, window: float = 60.0, max_keys: int = 10_000) -> None:
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Count one request; False when the key is over its limit."""
        now = time.monotonic()
        with self._lock:
            if len(self._hits) > self.max_keys:  # bounded memory: forget the quiet ones
                self._hits = {k: q for k, q in self._hits.items() if q and now - q[-1] < self.window}
            q = self._hits.setdefault(key, deque())
            while q and now - q[0] >= self.window:
                q.popleft()
            if len(q) >= self.limit:
                return False
            q.append(now)
            return True


def client_ip(request: Request) -> str:
    """The caller's address as the listener saw it (behind a proxy, configure uvicorn's proxy headers)."""
    return request.client.host if request.client else "unknown"


async def read_form(request: Request) -> dict[str, list[str]]:
    """A small urlencoded form (the pages post nothing else); oversized bodies are refused."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise ValueError("form too large")
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=32)


class Login:
    """Who may see which firm's status: tokens from the config, sessions signed with them."""

    def __init__(self, cfg: Config) -> None:
        self.tokens: dict[str, str] = {}
        if cfg.server.admin_token is not None:
            self.tokens[ALL] = cfg.server.admin_token.get_secret_value()
        for t in cfg.tenants:
            if t.pages.status_token is not None:
                self.tokens[t.id] = t.pages.status_token.get_secret_value()

    @property
    def configured(self) -> bool:
        """True when at least one login token is set (otherwise the status pages stay closed)."""
        return bool(self.tokens)

    def scope_of_token(self, given: str) -> str | None:
        """The scope (``*`` or a tenant id) a token grants; every candidate is compared in constant time."""
        found = None
        for scope, token in self.tokens.items():
            if hmac.compare_digest(token.encode(), given.encode("utf-8", "surrogatepass")) and found is None:
                found = scope
        return found

    def session(self, scope: str) -> str:
        """A signed session cookie value for ``scope``."""
        key = tokens.derive_key(self.tokens[scope], tokens.SESSION)
        return tokens.sign(key, tokens.SESSION, {"s": scope}, SESSION_TTL)

    def scope(self, request: Request) -> str | None:
        """The caller's scope from a bearer token or the session cookie; None = not signed in."""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return self.scope_of_token(auth[7:].strip())
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        for scope, token in self.tokens.items():
            try:
                claims = tokens.verify(tokens.derive_key(token, tokens.SESSION), tokens.SESSION, cookie)
            except tokens.BadToken:
                continue
            if claims.get("s") == scope:
                return scope
        return None

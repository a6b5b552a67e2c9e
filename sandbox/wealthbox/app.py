"""The Wealthbox simulator: :class:`WealthboxSim` holds one workspace and serves it as a Starlette app.

Every route sits under ``/v1``. A gate checks the token (``ACCESS_TOKEN`` header or OAuth ``Bearer``,
the OAuth token needing the ``data`` scope) and the rate window before any handler runs.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.redtail.crmkit import SlidingWindow, crm_people
from sandbox.wealthbox.routes import BadRequest, routes
from sandbox.wealthbox.state import Workspace

PREFIX = "/v1"
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 25
RATE_LIMIT, RATE_WINDOW = 300, 300.0  # requests per 5 minutes (see the package docstring)
Handler = Callable[[Request], Awaitable[Response]]


def error(status: int, text: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Wealthbox's error body, ``{"error": ...}``."""
    return JSONResponse({"error": text}, status_code=status, headers=headers)


class WealthboxSim:
    """One Wealthbox workspace reachable with ``access_token`` (or OAuth tokens from :meth:`issue_oauth_token`).

    Options: ``rate_limit``/``rate_window`` (requests per window in seconds; default 0 = off, set
    ``rate_limit=RATE_LIMIT`` for Wealthbox's pace), ``per_page_over_max`` ("cap", the default, answers
    at most 100 per page; "refuse" answers 400), ``clock`` (returns an aware UTC datetime).
    """

    def __init__(self, access_token: str, *, rate_limit: int = 0, rate_window: float = RATE_WINDOW,
                 per_page_over_max: str = "cap", clock: Callable[[], datetime] | None = None) -> None:
        if per_page_over_max not in ("cap", "refuse"):
            raise ValueError(f"per_page_over_max must be 'cap' or 'refuse', got {per_page_over_max!r}")
        self.access_token = access_token
        self.oauth_tokens: dict[str, frozenset[str]] = {}
        self.per_page_over_max = per_page_over_max
        self.ws = Workspace()
        self.window = SlidingWindow(rate_limit, rate_window)
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))

    # ---- seeding and inspection ------------------------------------------------------------------
    def load(self, book: Any) -> None:
        """Seed the workspace from a :class:`sandbox.book.Book`."""
        self.ws.load(crm_people(book), book.as_of)

    def issue_oauth_token(self, scopes: tuple[str, ...] = ("login", "data")) -> str:
        """An OAuth access token with ``scopes`` (Wealthbox's OAuth scopes are ``login`` and ``data``)."""
        token = secrets.token_hex(20)
        self.oauth_tokens[token] = frozenset(scopes)
        return token

    def contact_id(self, person_key: str) -> int:
        """The Person contact seeded for a book person."""
        return self.ws.by_person[person_key]

    def household_of(self, person_key: str) -> int | None:
        """The Household contact a book person is a member of (None when they live alone)."""
        return self.ws.household_of.get(person_key)

    def tags_of(self, person_key: str) -> list[str]:
        """A person's tag names, in the order Wealthbox keeps them."""
        with self.ws.lock:
            return list(self.ws.contacts[self.contact_id(person_key)].tags)

    def custom_values(self, person_key: str) -> dict[str, Any]:
        """A person's custom field values by field name."""
        with self.ws.lock:
            rec = self.ws.contacts[self.contact_id(person_key)]
            return {self.ws.custom_fields[fid]["name"]: v for fid, v in rec.custom.items()}

    def define_custom_field(self, name: str, field_type: str = "text_field") -> int:
        """What an admin does in Wealthbox's settings: create a contact custom field (not an API call)."""
        return self.ws.define_field(name, field_type)

    def delete(self, person_key: str, at: datetime | None = None) -> None:
        """An advisor deleted this contact: it leaves ``GET /contacts`` and shows under ``deleted=true``."""
        with self.ws.lock:
            rec = self.ws.contacts[self.contact_id(person_key)]
            rec.deleted_at = rec.updated_at = at or self.clock()

    def touch(self, person_key: str, at: datetime | None = None) -> None:
        """An advisor edited this contact in Wealthbox (bumps ``updated_at``)."""
        with self.ws.lock:
            self.ws.contacts[self.contact_id(person_key)].updated_at = at or self.clock()

    # ---- responses the fault injector uses -------------------------------------------------------
    def rate_limited_response(self) -> Response:
        """Wealthbox's 429 with ``Retry-After``."""
        return error(429, "Rate limit exceeded. Please retry after the time in the Retry-After header.",
                     {"Retry-After": "5"})

    def server_error_response(self, status: int) -> Response:
        """An injected server error in the ``{"error": ...}`` shape."""
        return error(status, "Internal Server Error" if status < 502 else "Service Unavailable")

    # ---- the app ---------------------------------------------------------------------------------
    def app(self) -> Starlette:
        """The ASGI app (wrap it with :func:`sandbox.common.instrument` to log and fault it)."""
        return Starlette(routes=[Route(PREFIX + path, self._gate(fn), methods=methods)
                                 for path, fn, methods in routes(self)])

    def per_page(self, raw: str | None) -> int:
        """The page size a request gets (default 25, at most 100: capped or refused, see ``per_page_over_max``)."""
        if raw is None or raw == "":
            return DEFAULT_PER_PAGE
        try:
            size = int(raw)
        except ValueError:
            raise BadRequest(400, f"per_page must be an integer, got {raw!r}") from None
        if size < 1:
            raise BadRequest(400, f"per_page must be at least 1, got {size}")
        if size > MAX_PER_PAGE and self.per_page_over_max == "refuse":
            raise BadRequest(400, f"per_page must be at most {MAX_PER_PAGE}, got {size}")
        return min(size, MAX_PER_PAGE)

    def _token_ok(self, request: Request) -> Response | None:
        token = request.headers.get("access_token")
        if token is not None:
            return None if hmac.compare_digest(token.encode(), self.access_token.encode()) else \
                error(401, "Invalid access token")
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not bearer:
            return error(401, "Missing access token: send an ACCESS_TOKEN header or an OAuth Bearer token")
        scopes = next((s for t, s in self.oauth_tokens.items() if hmac.compare_digest(t.encode(), bearer.encode())),
                      None)
        if scopes is None:
            return error(401, "Invalid OAuth access token")
        if "data" not in scopes:
            return error(403, "The OAuth token lacks the 'data' scope")
        return None

    def _gate(self, fn: Callable[[Request], Response]) -> Handler:
        async def gated(request: Request) -> Response:
            wait = self.window.admit()
            if wait:
                return error(429, "Rate limit exceeded. Please retry after the time in the Retry-After header.",
                             {"Retry-After": str(max(1, int(wait + 0.999)))})
            refused = self._token_ok(request)
            if refused is not None:
                return refused
            if request.method in ("POST", "PUT"):
                try:
                    request.state.body = json.loads(await request.body() or b"{}")
                except ValueError:
                    return error(400, "Request body is not valid JSON")
                if not isinstance(request.state.body, dict):
                    return error(400, "Request body must be a JSON object")
            try:
                with self.ws.lock:
                    return fn(request)
            except BadRequest as exc:
                return error(exc.status, exc.text)

        return gated

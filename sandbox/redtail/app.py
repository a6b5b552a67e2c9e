"""The Redtail simulator: :class:`RedtailSim` holds one database and serves it as a Starlette app.

Every route sits under ``/api/public/v1``. A gate in front of the routes checks the credentials (the
3-part Basic credential on ``GET /authentication``; ``Userkeyauth`` or the 3-part Basic credential
everywhere else) and the optional rate window, then the handler runs. A UDF value written bumps the
contact's ``updated_at``, as an edit in Redtail does; a tag membership added or removed does NOT (INFERRED
either way: the safe assumption, so a connector must not rely on ``updated_since`` to see opt-outs).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.redtail.crmkit import SlidingWindow, crm_people
from sandbox.redtail.routes import contact_routes
from sandbox.redtail.state import Contact, Database

PREFIX = "/api/public/v1"
Handler = Callable[[Request], Awaitable[Response]]


def message(status: int, text: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Redtail's error body: ``{"message": ...}`` (the shape its collection's captured 401/403 examples show)."""
    return JSONResponse({"message": text}, status_code=status, headers=headers)


def _decode(token: str) -> list[str] | None:
    try:
        return base64.b64decode(token.strip(), validate=True).decode("utf-8").split(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class RedtailSim:
    """One Redtail database reachable with ``api_key`` plus ``username``/``password`` (exchanged for ``user_key``).

    Options: ``page_size`` (default page size, 50 as documented), ``max_page_size`` (200, INFERRED:
    larger ``pagesize`` values are capped), ``rate_limit``/``rate_window`` (requests per window in
    seconds; 0 = off, since Redtail documents no limit), ``read_only`` (the user may read but every
    write answers Redtail's 403), ``clock`` (a callable returning an aware UTC datetime).
    """

    def __init__(self, api_key: str, username: str, password: str, user_key: str, *, page_size: int = 50,
                 max_page_size: int = 200, rate_limit: int = 0, rate_window: float = 60.0, read_only: bool = False,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.api_key, self.username, self.password, self.user_key = api_key, username, password, user_key
        self.page_size, self.max_page_size, self.read_only = page_size, max_page_size, read_only
        self.db = Database()
        self.window = SlidingWindow(rate_limit, rate_window)
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.auth_exchanges = 0  # successful GET /authentication calls

    # ---- seeding and inspection ------------------------------------------------------------------
    def load(self, book: Any) -> None:
        """Seed the database from a :class:`sandbox.book.Book`."""
        self.db.load(crm_people(book))

    def contact_for(self, person_key: str) -> Contact:
        """The contact seeded for a book person."""
        return self.db.contacts[self.db.by_person[person_key]]

    def household_of(self, person_key: str) -> int | None:
        """The family id a book person belongs to (None when they live alone)."""
        return self.db.household_of.get(person_key)

    def tags_of(self, person_key: str) -> set[str]:
        """Names of the tag groups a person's contact is a member of."""
        with self.db.lock:
            return {m["name"] for m in self.db.memberships_json(self.contact_for(person_key))}

    def udfs_of(self, person_key: str) -> dict[str, str]:
        """A person's user-defined field values by field name."""
        with self.db.lock:
            return {u["field_name"]: u["field_value"] for u in self.db.udfs_json(self.contact_for(person_key))}

    def delete(self, person_key: str, at: datetime | None = None) -> None:
        """An advisor deleted this contact: it leaves the listings; ``GET /contacts/{id}`` shows ``deleted``."""
        with self.db.lock:
            c = self.contact_for(person_key)
            c.deleted, c.updated_at = True, at or self.clock()

    def touch(self, person_key: str, at: datetime | None = None) -> None:
        """An advisor edited this contact in Redtail (bumps ``updated_at``)."""
        with self.db.lock:
            self.contact_for(person_key).updated_at = at or self.clock()

    # ---- responses the fault injector uses -------------------------------------------------------
    def rate_limited_response(self) -> Response:
        """A 429 (INFERRED: Redtail documents no rate limit; body in its ``message`` shape, plus Retry-After)."""
        return message(429, "Rate limit exceeded", {"Retry-After": "1"})

    def server_error_response(self, status: int) -> Response:
        """An injected server error in Redtail's ``message`` shape."""
        return message(status, "Internal Server Error" if status < 502 else "Service Unavailable")

    # ---- the app ---------------------------------------------------------------------------------
    def app(self) -> Starlette:
        """The ASGI app (wrap it with :func:`sandbox.common.instrument` to log and fault it)."""
        routes = [Route(PREFIX + "/authentication", self._authentication, methods=["GET"])]
        for path, handler, methods in contact_routes(self):
            routes.append(Route(PREFIX + path, self._gate(handler), methods=methods))
        return Starlette(routes=routes)

    async def _authentication(self, request: Request) -> Response:
        refused = self._rate_check()
        if refused is not None:
            return refused
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if not scheme:
            return message(401, "Authorization header missing")
        parts = _decode(token) if scheme.lower() == "basic" else None
        if (parts is None or len(parts) != 3 or not _same(parts[0], self.api_key)
                or not _same(parts[1], self.username) or not _same(parts[2], self.password)):
            return message(401, "Invalid credentials")
        self.auth_exchanges += 1
        return JSONResponse({"authenticated_user": {
            "user_key": self.user_key, "redtail_user_id": 1, "redtail_database_id": 280717,
            "name": self.username}})

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        parts = _decode(token)
        if parts is None:
            return False
        if scheme.lower() == "userkeyauth" and len(parts) == 2:
            return _same(parts[0], self.api_key) and _same(parts[1], self.user_key)
        if scheme.lower() == "basic" and len(parts) == 3:
            return _same(parts[0], self.api_key) and _same(parts[1], self.username) and _same(parts[2], self.password)
        return False

    def _rate_check(self) -> Response | None:
        wait = self.window.admit()
        if wait:
            return message(429, "Rate limit exceeded", {"Retry-After": str(max(1, int(wait + 0.999)))})
        return None

    def _gate(self, handler: Handler) -> Handler:
        async def gated(request: Request) -> Response:
            refused = self._rate_check()
            if refused is not None:
                return refused
            header = request.headers.get("authorization", "")
            if not header:
                return message(401, "Authorization header missing")
            if not self._authorized(header):
                return message(401, "Invalid credentials")
            if self.read_only and request.method != "GET":
                return message(403, "User Forbidden from Updating Contact")
            if request.method in ("POST", "PUT"):
                try:
                    request.state.body = json.loads(await request.body() or b"{}")
                except ValueError:
                    return message(400, "Request body is not valid JSON")
                if not isinstance(request.state.body, dict):
                    return message(400, "Request body must be a JSON object")
            with self.db.lock:
                return await handler(request)

        return gated

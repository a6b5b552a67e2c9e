"""The authenticated Wealthbox client: one method per endpoint, every call under one :class:`CallPolicy`.

Auth is an API access token in the ``ACCESS_TOKEN`` header (Settings > API Access) or an OAuth access
token as ``Authorization: Bearer`` (scopes ``login`` and ``data``). A 401/403 is re-raised naming the
config key and what to fix.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from connectors.kit.http import CallPolicy, ErrorShape, HttpClient, RateLimiter, RetrySettings, register_secret
from connectors.wealthbox import settings as S
from core.errors import FatalApiError

Auth = Literal["api_token", "oauth"]
_SHAPE = ErrorShape(code_keys=("code",), request_id_keys=("request_id",), request_id_headers=("X-Request-Id",))


def credential_hint(status: int, auth: Auth) -> str:
    """What to fix for a 401/403, naming the config key and the permission."""
    if status == 401:
        if auth == "oauth":
            return ("crm.access_token (an OAuth access token) was refused: it is invalid or expired; authorize "
                    "segsync again with scopes login and data")
        return ("crm.access_token (an API access token) was refused: create one in Wealthbox under Settings > "
                "API Access and put it in the config")
    if auth == "oauth":
        return "crm.access_token lacks a permission: the OAuth token needs the 'data' scope (segsync asks login, data)"
    return ("crm.access_token lacks a permission: its Wealthbox user may not read or edit contacts in this "
            "workspace (with auth: oauth the token needs scope data)")


class WealthboxClient:
    """Authenticated calls to one Wealthbox workspace; returns decoded JSON."""

    def __init__(self, access_token: str, base_url: str = S.DEFAULT_BASE_URL, *, auth: Auth = "api_token",
                 rate_limit: int | None = S.RATE_LIMIT, window_seconds: float = S.RATE_WINDOW_SECONDS,
                 retry: RetrySettings | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        register_secret(access_token)
        self.auth: Auth = auth
        limiters = {}
        if rate_limit:  # None or 0: unpaced (a sandbox without a limit)
            limiters["default"] = RateLimiter(1, window_seconds / (rate_limit * 0.95), sleep=sleep)
        self.policy = CallPolicy(S.SOURCE, limiters, retry, sleep=sleep)
        headers = {"ACCESS_TOKEN": access_token} if auth == "api_token" else {
            "Authorization": f"Bearer {access_token}"}
        self.http = HttpClient(S.SOURCE, base_url, self.policy, headers={**headers, "Accept": "application/json"},
                               shape=_SHAPE)

    def call(self, method: str, path: str, endpoint: str, *, params: Mapping[str, Any] | None = None,
             json: Any = None) -> Any:
        """One call; a 401/403 raised with what to fix."""
        try:
            return self.http.json(method, path, endpoint=endpoint, params=params, json=json)
        except FatalApiError as exc:
            if exc.status not in (401, 403):
                raise
            raise FatalApiError(f"{exc} - {credential_hint(exc.status, self.auth)}", **exc.fields()) from None

    def me(self) -> Any:
        return self.call("GET", "/me", S.EP_ME)

    def contacts(self, page: int, per_page: int, **filters: str) -> Any:
        return self.call("GET", "/contacts", S.EP_CONTACTS,
                         params={"page": page, "per_page": per_page, **filters})

    def contact(self, contact_id: str) -> Any:
        return self.call("GET", f"/contacts/{contact_id}", S.EP_CONTACT)

    def update_contact(self, contact_id: str, body: Mapping[str, Any]) -> Any:
        return self.call("PUT", f"/contacts/{contact_id}", S.EP_UPDATE, json=dict(body))

    def custom_fields(self, page: int, per_page: int) -> Any:
        return self.call("GET", "/categories/custom_fields", S.EP_CATEGORIES,
                         params={"document_type": "Contact", "page": page, "per_page": per_page})

    def opportunity_stages(self) -> Any:
        return self.call("GET", "/categories/opportunity_stages", S.EP_CATEGORIES)

    def events(self, page: int, per_page: int, **filters: str) -> Any:
        return self.call("GET", "/events", S.EP_EVENTS, params={"page": page, "per_page": per_page, **filters})

    def opportunities(self, page: int, per_page: int, **filters: str) -> Any:
        return self.call("GET", "/opportunities", S.EP_OPPORTUNITIES,
                         params={"page": page, "per_page": per_page, **filters})

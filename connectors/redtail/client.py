"""One Redtail database behind one :class:`~connectors.kit.http.CallPolicy`: the user-key exchange, then REST.

The API key and the user's credentials are exchanged once (``GET /authentication``) for a user key;
every later call sends ``Authorization: Userkeyauth base64(APIKey:UserKey)``. A 401/403 is re-worded to
name the credential (and, for 403, the permission) to fix.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from typing import Any

from connectors.kit.http import CallPolicy, HttpClient, RateLimiter, RetrySettings, redact, register_secret
from connectors.redtail import settings as S
from core.errors import ApiError, FatalApiError, InputError


def _b64(*parts: str) -> str:
    return base64.b64encode(":".join(parts).encode()).decode()


def _credential_error(exc: FatalApiError, exchanging: bool) -> FatalApiError:
    """A 401/403 that says which config key (or which Redtail permission) to fix."""
    if exc.status == 401 and exchanging:
        hint = ("Redtail refused crm.api_key with crm.username/crm.password at GET /authentication: check all three "
                "(the API key is the one Redtail issued to the integration; username/password are the Redtail user's)")
    elif exc.status == 401:
        hint = ("Redtail refused the user key obtained for crm.username with crm.api_key: the user key was revoked or "
                "the user disabled; check crm.api_key, crm.username and crm.password")
    elif exc.status == 403:
        hint = f"the Redtail user crm.username (with crm.api_key) lacks a permission: {S.PERMISSIONS}"
    else:
        return exc
    return FatalApiError(redact(f"{exc} - {hint}"), **exc.fields())


class RedtailClient:
    """Authenticated calls to one Redtail database; returns decoded JSON."""

    def __init__(self, api_key: str, username: str, password: str, base_url: str = S.DEFAULT_BASE_URL, *,
                 requests_per_second: float = S.REQUESTS_PER_SECOND, retry: RetrySettings | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        for secret in (api_key, username, password):
            register_secret(secret)
        register_secret(_b64(api_key, username, password))
        self._basic = "Basic " + _b64(api_key, username, password)
        self._api_key = api_key
        limiters = {}
        if requests_per_second > 0:  # 0: no client-side pacing (a local simulator)
            limiters["default"] = RateLimiter(1, 1.0 / (requests_per_second * 0.95), sleep=sleep)
        self.policy = CallPolicy(S.VENDOR, limiters, retry, sleep=sleep)
        # Two sessions under one policy: the Basic credential goes only to /authentication.
        self._auth = HttpClient(S.VENDOR, base_url, self.policy, headers={"Authorization": self._basic})
        self.http = HttpClient(S.VENDOR, base_url, self.policy, headers={"include": S.INCLUDES})
        self.page_size = S.PAGE_SIZE
        self._user_key: str | None = None

    def __repr__(self) -> str:  # never print credentials
        return f"RedtailClient(base_url={self.http.base_url!r})"

    # ----------------------------------------------------------------- auth

    def login(self) -> None:
        """Exchange the API key and user credentials for a user key (once per client)."""
        if self._user_key is not None:
            return
        try:
            body = self._auth.json("GET", "/authentication", endpoint=S.EP_AUTH)
        except FatalApiError as exc:
            raise _credential_error(exc, exchanging=True) from None
        user = body.get("authenticated_user") if isinstance(body, Mapping) else None
        key = user.get("user_key") if isinstance(user, Mapping) else None
        if not isinstance(key, str) or not key:
            raise InputError("redtail: GET /authentication answered without authenticated_user.user_key")
        register_secret(key)
        register_secret(_b64(self._api_key, key))
        self._user_key = key
        self.http.session.headers["Authorization"] = "Userkeyauth " + _b64(self._api_key, key)
        self.http.session.headers["pagesize"] = str(self.page_size)  # documented as a header, like include

    def call(self, method: str, path: str, endpoint: str, *, params: Mapping[str, Any] | None = None,
             json: Any = None) -> Any:
        """One authenticated call (logging in first if needed); the decoded JSON answer (None for 204)."""
        self.login()
        try:
            return self.http.json(method, path, endpoint=endpoint, params=params, json=json)
        except FatalApiError as exc:
            raise _credential_error(exc, exchanging=False) from None

    # ----------------------------------------------------------------- reads

    def contacts(self, page: int, updated_since: str | None) -> Any:
        """One page of contacts (``pagesize`` and ``include`` ride as headers on every call, as documented);
        with ``updated_since``, from ``/contacts/search``, where Redtail documents that parameter."""
        if updated_since:
            return self.call("GET", "/contacts/search", S.EP_CONTACTS,
                             params={"page": page, "updated_since": updated_since})
        return self.call("GET", "/contacts", S.EP_CONTACTS, params={"page": page})

    def accounts(self, contact_id: str, page: int = 1) -> Any:
        return self.call("GET", f"/contacts/{contact_id}/accounts", S.EP_ACCOUNTS, params={"page": page})

    def notes(self, contact_id: str, page: int = 1) -> Any:
        return self.call("GET", f"/contacts/{contact_id}/notes", S.EP_NOTES, params={"page": page})

    def tag_groups(self, page: int) -> Any:
        return self.call("GET", "/tag_groups", S.EP_TAG_GROUPS, params={"page": page})

    def tag_group_contacts(self, tag_id: int, page: int) -> Any:
        """One page of a tag group's members (INFERRED path; rendered like ``/contacts``, ``include`` honoured)."""
        return self.call("GET", f"/tag_groups/{tag_id}/contacts", S.EP_CONTACTS, params={"page": page})

    def memberships(self, contact_id: str) -> Any:
        return self.call("GET", f"/contacts/{contact_id}/tag_memberships", S.EP_MEMBERSHIPS)

    def udf_fields(self, page: int) -> Any:
        return self.call("GET", "/lists/contact_udf_fields", S.EP_UDF_FIELDS, params={"page": page})

    def udfs(self, contact_id: str) -> Any:
        return self.call("GET", f"/contacts/{contact_id}/udfs", S.EP_UDFS)

    # ----------------------------------------------------------------- writes

    def create_tag_group(self, name: str, description: str = S.OWNED_MARK) -> Any:
        return self.call("POST", "/tag_groups", S.EP_TAG_GROUPS_CREATE, json={"name": name,
                                                                            "description": description})

    def add_membership(self, contact_id: str, tag_id: int) -> Any:
        return self.call("POST", f"/contacts/{contact_id}/tag_memberships", S.EP_MEMBERSHIP_ADD,
                         json={"tag_id": tag_id})

    def remove_membership(self, contact_id: str, membership_id: int) -> Any:
        return self.call("DELETE", f"/contacts/{contact_id}/tag_memberships/{membership_id}",
                         S.EP_MEMBERSHIP_REMOVE)

    def create_udf_field(self, name: str) -> Any:
        return self.call("POST", "/lists/contact_udf_fields", S.EP_UDF_FIELDS_CREATE, json={"name": name})

    def create_udf(self, contact_id: str, field_id: int, value: str) -> Any:
        return self.call("POST", f"/contacts/{contact_id}/udfs", S.EP_UDF_CREATE,
                         json={"contact_udf_field_id": field_id, "field_value": value})

    def update_udf(self, contact_id: str, udf_id: int, value: str) -> Any:
        return self.call("PUT", f"/contacts/{contact_id}/udfs/{udf_id}", S.EP_UDF_UPDATE,
                         json={"field_value": value})


__all__ = ["ApiError", "RedtailClient"]

"""Signed, expiring, single-purpose tokens: preference links, form (CSRF) tokens and login sessions.

A token is ``base64url(json payload) "." base64url(HMAC-SHA256(key, purpose "." payload))``. The
key is derived from a tenant secret *and the purpose* (``derive_key``), so a token made for one
purpose never verifies for another, and none of them can be turned into a webhook signature.
Payloads never hold an email in clear: a preference link names the subscriber by the tenant's
pseudonym (the consent ledger's ``subject_key``), which only the server can map back.

Every failure (tampered, expired, wrong purpose, malformed) raises the same :class:`BadToken`, so
a caller cannot learn which check failed (no oracle for guessing).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

LINK = "preference-link"
FORM = "preference-form"
SESSION = "status-session"
_MAX_TOKEN = 2048


class BadToken(Exception):
    """The token is not valid here (any reason: the caller must not tell which)."""


def derive_key(secret: str, purpose: str) -> bytes:
    """A key for one purpose, derived from a tenant's secret (HMAC as a KDF)."""
    return hmac.new(secret.encode("utf-8"), f"segsync-pages/{purpose}/v1".encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, purpose: str, claims: dict[str, Any], ttl: timedelta, *, now: datetime | None = None) -> str:
    """A token carrying ``claims`` for ``purpose``, valid for ``ttl`` from ``now``."""
    now = now or datetime.now(UTC)
    payload = {**claims, "p": purpose, "x": int((now + ttl).timestamp()), "n": secrets.token_urlsafe(6)}
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(key, f"{purpose}.{body}".encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def verify(key: bytes, purpose: str, token: str, *, now: datetime | None = None) -> dict[str, Any]:
    """The claims of a valid, unexpired token for ``purpose``; :class:`BadToken` otherwise."""
    if not isinstance(token, str) or len(token) > _MAX_TOKEN or token.count(".") != 1:
        raise BadToken
    body, mac = token.split(".")
    expected = hmac.new(key, f"{purpose}.{body}".encode(), hashlib.sha256).digest()
    try:
        given = _unb64(mac)
        claims = json.loads(_unb64(body))
    except (ValueError, UnicodeDecodeError):
        raise BadToken from None
    if not hmac.compare_digest(expected, given) or not isinstance(claims, dict) or claims.get("p") != purpose:
        raise BadToken
    expires = claims.get("x")
    if not isinstance(expires, int) or (now or datetime.now(UTC)).timestamp() >= expires:
        raise BadToken
    return claims


def expires_at(claims: dict[str, Any]) -> datetime:
    """When a verified token stops being valid."""
    return datetime.fromtimestamp(int(claims["x"]), UTC)

"""Send webhooks the way Mailchimp and HubSpot do, so the preference-center endpoint can be tested.

Mailchimp posts a form-encoded body with bracketed keys (``data[email]``, ``data[merges][FNAME]``)
and validates a URL with a plain GET first; it signs nothing. HubSpot posts a JSON array of events
signed with v3: ``base64(HMAC-SHA256(client_secret, method + uri + body + timestamp))`` in
``X-HubSpot-Signature-v3`` with the millisecond timestamp in ``X-HubSpot-Request-Timestamp``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import requests

MAILCHIMP_TYPES = ("subscribe", "unsubscribe", "profile", "upemail", "cleaned", "campaign")
HUBSPOT_MAX_AGE_MS = 300_000  # HubSpot: reject signatures older than five minutes


def hubspot_v3_signature(secret: str, method: str, uri: str, body: bytes | str, timestamp: int | str) -> str:
    """The v3 signature HubSpot puts in ``X-HubSpot-Signature-v3``."""
    raw = body.decode("utf-8") if isinstance(body, bytes) else body
    message = f"{method.upper()}{uri}{raw}{timestamp}".encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def verify_hubspot_v3(secret: str, method: str, uri: str, body: bytes | str, timestamp: int | str, signature: str,
                      now_ms: int | None = None, max_age_ms: int = HUBSPOT_MAX_AGE_MS) -> bool:
    """True when ``signature`` is valid for the request and the timestamp is recent (constant-time compare)."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if abs(now - ts) > max_age_ms:
        return False
    expected = hubspot_v3_signature(secret, method, uri, body, ts)
    return hmac.compare_digest(expected.encode(), signature.encode())


_event_ids = itertools.count(1)


def hubspot_event(subscription_type: str, object_id: int | str, *, property_name: str | None = None,
                  property_value: str | None = None, occurred_at: datetime | int | None = None,
                  portal_id: int = 62515, app_id: int = 1160452, subscription_id: int = 4100,
                  attempt_number: int = 0, change_source: str = "CRM", event_id: int | None = None,
                  **extra: Any) -> dict[str, Any]:
    """One HubSpot webhook event (``contact.propertyChange``, ``contact.deletion``, ``contact.merge``...).

    ``extra`` adds type-specific keys, e.g. ``mergedObjectIds=[...]``, ``primaryObjectId=...`` for merges.
    """
    if occurred_at is None:
        occurred_ms = int(time.time() * 1000)
    elif isinstance(occurred_at, datetime):
        occurred_ms = int(occurred_at.timestamp() * 1000)
    else:
        occurred_ms = int(occurred_at)
    event: dict[str, Any] = {
        "eventId": event_id if event_id is not None else next(_event_ids),
        "subscriptionId": subscription_id,
        "portalId": portal_id,
        "appId": app_id,
        "occurredAt": occurred_ms,
        "subscriptionType": subscription_type,
        "attemptNumber": attempt_number,
        "objectId": int(object_id),
        "changeSource": change_source,
    }
    if property_name is not None:
        event["propertyName"] = property_name
        event["propertyValue"] = property_value
    event.update(extra)
    return event


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    """PHP-style bracketed form keys: ``data[merges][FNAME]``."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}[{key}]", inner, out)
    elif value is not None:
        out.append((prefix, str(value)))


class WebhookSender:
    """Posts vendor-style webhooks to a URL (your endpoint, usually on loopback)."""

    def __init__(self, session: requests.Session | None = None, timeout: float = 10.0) -> None:
        # 10 s is also Mailchimp's own give-up time for a webhook request
        self.session = session or requests.Session()
        self.timeout = timeout

    def mailchimp_form(self, type: str, email: str, list_id: str, *, fired_at: datetime | None = None,
                       **data: Any) -> list[tuple[str, str]]:
        """The form fields Mailchimp would send (``type``, ``fired_at``, ``data[...]``), in order."""
        if type not in MAILCHIMP_TYPES:
            raise ValueError(f"Mailchimp webhook type must be one of {', '.join(MAILCHIMP_TYPES)}, not {type!r}")
        when = (fired_at or datetime.now(UTC)).astimezone(UTC)
        fields: list[tuple[str, str]] = [("type", type), ("fired_at", when.strftime("%Y-%m-%d %H:%M:%S"))]
        payload: dict[str, Any] = dict(data)
        if type == "upemail":
            # an email change carries old/new addresses instead of data[email]
            payload.setdefault("new_email", email)
            payload.setdefault("old_email", email)
        else:
            payload.setdefault("email", email)
            payload.setdefault("email_type", "html")
            merges = dict(payload.pop("merges", None) or {})
            merges.setdefault("EMAIL", payload["email"])
            payload["merges"] = merges
            payload.setdefault("id", hashlib.md5(email.lower().encode()).hexdigest()[:10])  # noqa: S324
        payload["list_id"] = list_id
        if type in ("unsubscribe", "cleaned"):
            payload.setdefault("reason", "manual" if type == "unsubscribe" else "hard")
        if type == "unsubscribe":
            payload.setdefault("action", "unsub")
        _flatten("data", payload, fields)
        return fields

    def mailchimp(self, url: str, type: str, email: str, list_id: str, **data: Any) -> requests.Response:
        """POST a Mailchimp webhook. ``data`` adds/overrides ``data[...]`` keys (``reason``, ``merges``...)."""
        fired_at = data.pop("fired_at", None)
        fields = self.mailchimp_form(type, email, list_id, fired_at=fired_at, **data)
        return self.session.post(url, data=fields, timeout=self.timeout,
                                 headers={"User-Agent": "MailChimp.com WebHook Validator"})

    def mailchimp_validate(self, url: str) -> requests.Response:
        """The GET Mailchimp sends to check a webhook URL before saving it (expects 200)."""
        return self.session.get(url, timeout=self.timeout, headers={"User-Agent": "MailChimp.com WebHook Validator"})

    def hubspot(self, url: str, events: list[dict[str, Any]], client_secret: str, method: str = "POST",
                timestamp_ms: int | None = None) -> requests.Response:
        """Send HubSpot webhook events as a JSON array, signed with signature v3 over the full URL."""
        body = json.dumps(events, separators=(",", ":"))
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        prepared = requests.Request(method.upper(), url, data=body.encode(),
                                    headers={"Content-Type": "application/json"}).prepare()
        # sign the URI exactly as it goes on the wire (requests may re-quote it)
        prepared.headers["X-HubSpot-Signature-v3"] = hubspot_v3_signature(client_secret, method, prepared.url or url,
                                                                          body, ts)
        prepared.headers["X-HubSpot-Request-Timestamp"] = str(ts)
        prepared.headers["User-Agent"] = "HubSpot Connect 2.0 (http://dev.hubspot.com/) (namespace: webhooks-nio)"
        return self.session.send(prepared, timeout=self.timeout)

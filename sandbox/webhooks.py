"""Send webhooks the way Mailchimp, HubSpot and segsync's own preference center do.

Three wire formats, each with a builder (pure, testable) and a sender (returns the ``requests.Response``):

* Mailchimp: a form-encoded POST with bracketed keys (``type``, ``fired_at``, ``data[email]``,
  ``data[merges][FNAME]``...), per event type exactly the keys Mailchimp sends; a plain GET first to
  validate the URL. Mailchimp signs nothing (a secret belongs in the URL).
* HubSpot: a JSON array of events signed with v3 -
  ``base64(HMAC-SHA256(client_secret, METHOD + uri + body + timestamp_ms))`` in ``X-HubSpot-Signature-v3``
  with ``X-HubSpot-Request-Timestamp``; the URI is the full URL with a few percent-escapes decoded
  (HubSpot's table: ``%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B``). The legacy v1 header
  (``X-HubSpot-Signature`` = hex SHA-256 of secret + body, ``X-HubSpot-Signature-Version: v1``) rides along
  as HubSpot's webhooks API sends it.
* segsync's preference center: JSON ``{email, purposes, occurred_at, notice_version}`` with
  ``X-Segsync-Timestamp`` (Unix seconds) and ``X-Segsync-Signature: sha256=<hex HMAC-SHA256 of
  timestamp + "." + raw body>``.

    send_mailchimp(url, "unsubscribe", "ann@example.com", list_id)
    send_hubspot(url, [hubspot_event("contact.propertyChange", 101, property_name="hs_email_optout",
                                     property_value="true")], client_secret)
    send_segsync(url, secret, "ann@example.com", {"email_marketing": False})
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import requests

__all__ = [
    "HUBSPOT_CONTACT_TYPES",
    "MAILCHIMP_TYPES",
    "WebhookSender",
    "hubspot_event",
    "hubspot_v1_signature",
    "hubspot_v3_signature",
    "mailchimp_form",
    "preference_body",
    "segsync_signature",
    "send_hubspot",
    "send_mailchimp",
    "send_segsync",
    "validate_mailchimp_url",
    "verify_hubspot_v3",
    "verify_segsync",
]

MAILCHIMP_TYPES = ("subscribe", "unsubscribe", "profile", "upemail", "cleaned", "campaign")
# Contact event types HubSpot's webhooks v3 spec enumerates (PublicApiSpecs/Webhooks/.../v3/webhooks.json);
# ``contact.restore`` undoes a ``contact.deletion`` (a restored contact keeps its id).
HUBSPOT_CONTACT_TYPES = ("contact.creation", "contact.deletion", "contact.privacyDeletion", "contact.propertyChange",
                         "contact.merge", "contact.associationChange", "contact.restore")
HUBSPOT_MAX_AGE_MS = 300_000  # HubSpot: reject signatures older than five minutes
SEGSYNC_MAX_AGE_S = 300
DEFAULT_TIMEOUT = 10.0  # also Mailchimp's own give-up time for a webhook request
_MAILCHIMP_UA = "MailChimp.com"
_MAILCHIMP_VALIDATOR_UA = "MailChimp.com WebHook Validator"
_HUBSPOT_UA = "HubSpot Connect 2.0 (http://dev.hubspot.com/) (namespace: webhooks-nio)"
_HUBSPOT_DECODE = {"%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$", "%27": "'",
                   "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";"}
_ESCAPE = re.compile("|".join(_HUBSPOT_DECODE), re.IGNORECASE)


# ---- Mailchimp ------------------------------------------------------------------------------
def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    """PHP-style bracketed form keys: ``data[merges][FNAME]``."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}[{key}]", inner, out)
    elif value is not None:
        out.append((prefix, str(value)))


def _member_id(email: str) -> str:
    # Mailchimp's data[id] is a short member id; derive a stable one from the address
    return hashlib.md5(email.strip().lower().encode()).hexdigest()[:10]


def mailchimp_form(type: str, email: str, list_id: str, *, fired_at: datetime | None = None,
                   **data: Any) -> list[tuple[str, str]]:
    """The form fields Mailchimp posts for one event (``type``, ``fired_at``, ``data[...]``), in order.

    ``email`` is the member's address (for ``upemail`` the *new* one; pass ``old_email=``; for
    ``campaign`` it is ignored - pass ``id``, ``subject``). ``data`` overrides or adds ``data[...]`` keys,
    e.g. ``reason="abuse"``, ``merges={"FNAME": "Ann"}``, ``campaign_id=...``, ``id=...`` (member id).
    """
    if type not in MAILCHIMP_TYPES:
        raise ValueError(f"Mailchimp webhook type must be one of {', '.join(MAILCHIMP_TYPES)}, not {type!r}")
    when = (fired_at or datetime.now(UTC)).astimezone(UTC)
    fields: list[tuple[str, str]] = [("type", type), ("fired_at", when.strftime("%Y-%m-%d %H:%M:%S"))]
    extra = dict(data)
    merges = {"EMAIL": email, "FNAME": "", "LNAME": "", **dict(extra.pop("merges", None) or {})}
    payload: dict[str, Any]
    if type in ("subscribe", "profile", "unsubscribe"):
        payload = {}
        if type == "unsubscribe":
            payload["action"] = extra.pop("action", "unsub")  # "delete" when the member was deleted
            payload["reason"] = extra.pop("reason", "manual")  # or "abuse"
        payload.update({"id": extra.pop("id", _member_id(email)), "email": email,
                        "email_type": extra.pop("email_type", "html"), "ip_opt": extra.pop("ip_opt", ""),
                        "web_id": extra.pop("web_id", "")})
        if type == "subscribe":
            payload["ip_signup"] = extra.pop("ip_signup", "")
        if type == "unsubscribe" and extra.get("campaign_id"):
            payload["campaign_id"] = extra.pop("campaign_id")
        payload["list_id"] = list_id
        payload["merges"] = merges
    elif type == "upemail":
        old = extra.pop("old_email", None)
        if not old:
            raise ValueError("an upemail webhook needs old_email= (the address before the change)")
        payload = {"new_id": extra.pop("new_id", _member_id(email)), "new_email": email, "old_email": old,
                   "list_id": list_id}
    elif type == "cleaned":
        payload = {"campaign_id": extra.pop("campaign_id", ""), "reason": extra.pop("reason", "hard"),
                   "email": email, "list_id": list_id}
    else:  # campaign
        payload = {"id": extra.pop("id", ""), "subject": extra.pop("subject", ""),
                   "status": extra.pop("status", "sent"), "reason": extra.pop("reason", ""), "list_id": list_id}
    payload.update(extra)
    _flatten("data", payload, fields)
    return fields


# ---- HubSpot --------------------------------------------------------------------------------
def _hubspot_uri(uri: str) -> str:
    """Decode the escapes HubSpot decodes before signing (and only those)."""
    return _ESCAPE.sub(lambda m: _HUBSPOT_DECODE[m.group(0).upper()], uri)


def hubspot_v3_signature(secret: str, method: str, uri: str, body: bytes | str, timestamp: int | str) -> str:
    """The v3 signature HubSpot puts in ``X-HubSpot-Signature-v3``."""
    raw = body.decode("utf-8") if isinstance(body, bytes) else body
    message = f"{method.upper()}{_hubspot_uri(uri)}{raw}{timestamp}".encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def hubspot_v1_signature(secret: str, body: bytes | str) -> str:
    """The legacy v1 ``X-HubSpot-Signature``: hex SHA-256 of client secret + body."""
    raw = body.decode("utf-8") if isinstance(body, bytes) else body
    return hashlib.sha256(f"{secret}{raw}".encode()).hexdigest()


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


# ---- segsync preference center --------------------------------------------------------------
def segsync_signature(secret: str, timestamp: int | str, body: bytes | str) -> str:
    """``sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`` for ``X-Segsync-Signature``."""
    raw = body if isinstance(body, bytes) else body.encode()
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + raw, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_segsync(secret: str, timestamp: int | str, body: bytes | str, signature: str, now: float | None = None,
                   max_age_s: int = SEGSYNC_MAX_AGE_S) -> bool:
    """True when the signature matches and the timestamp is within ``max_age_s`` (constant-time compare)."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - ts) > max_age_s:
        return False
    return hmac.compare_digest(segsync_signature(secret, ts, body).encode(), signature.encode())


def preference_body(email: str, purposes: Mapping[str, bool], occurred_at: datetime | None = None,
                    notice_version: str = "2024-01") -> dict[str, Any]:
    """The preference-center payload: ``{email, purposes, occurred_at, notice_version}``."""
    when = (occurred_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    return {"email": email, "purposes": {str(k): bool(v) for k, v in purposes.items()},
            "occurred_at": when.isoformat().replace("+00:00", "Z"), "notice_version": notice_version}


# ---- the sender ----------------------------------------------------------------------------
class WebhookSender:
    """Posts vendor-style webhooks to a URL (your endpoint, usually on loopback)."""

    def __init__(self, session: requests.Session | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.session = session
        self.timeout = timeout

    def _send(self, prepared: requests.PreparedRequest) -> requests.Response:
        if self.session is not None:
            return self.session.send(prepared, timeout=self.timeout)
        with requests.Session() as session:  # closed at once: no leaked sockets under warnings-as-errors
            return session.send(prepared, timeout=self.timeout)

    def mailchimp(self, url: str, type: str, email: str, list_id: str, *, fired_at: datetime | None = None,
                  **data: Any) -> requests.Response:
        """POST a Mailchimp webhook (see :func:`mailchimp_form` for ``data``)."""
        fields = mailchimp_form(type, email, list_id, fired_at=fired_at, **data)
        return self._send(requests.Request("POST", url, data=fields, headers={"User-Agent": _MAILCHIMP_UA}).prepare())

    def mailchimp_validate(self, url: str) -> requests.Response:
        """The GET Mailchimp sends to check a webhook URL before saving it (expects 200)."""
        return self._send(requests.Request("GET", url, headers={"User-Agent": _MAILCHIMP_VALIDATOR_UA}).prepare())

    def hubspot(self, url: str, events: list[dict[str, Any]], client_secret: str, *, method: str = "POST",
                timestamp_ms: int | None = None) -> requests.Response:
        """Send HubSpot webhook events as a JSON array, signed v3 over the URL as it goes on the wire (and v1)."""
        body = json.dumps(events, separators=(",", ":"))
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        prepared = requests.Request(method.upper(), url, data=body.encode(),
                                    headers={"Content-Type": "application/json", "User-Agent": _HUBSPOT_UA}).prepare()
        prepared.headers["X-HubSpot-Signature-v3"] = hubspot_v3_signature(client_secret, method, prepared.url or url,
                                                                          body, ts)
        prepared.headers["X-HubSpot-Request-Timestamp"] = str(ts)
        prepared.headers["X-HubSpot-Signature"] = hubspot_v1_signature(client_secret, body)
        prepared.headers["X-HubSpot-Signature-Version"] = "v1"
        return self._send(prepared)

    def segsync(self, url: str, secret: str, email: str, purposes: Mapping[str, bool], *,
                occurred_at: datetime | None = None, notice_version: str = "2024-01",
                timestamp: int | None = None) -> requests.Response:
        """POST a signed preference-center change (``timestamp`` in Unix seconds; default now)."""
        body = json.dumps(preference_body(email, purposes, occurred_at, notice_version), separators=(",", ":"))
        ts = int(time.time()) if timestamp is None else int(timestamp)
        headers = {"Content-Type": "application/json", "X-Segsync-Timestamp": str(ts),
                   "X-Segsync-Signature": segsync_signature(secret, ts, body)}
        return self._send(requests.Request("POST", url, data=body.encode(), headers=headers).prepare())


def send_mailchimp(url: str, type: str, email: str, list_id: str, *, timeout: float = DEFAULT_TIMEOUT,
                   **data: Any) -> requests.Response:
    """POST one Mailchimp-format webhook; see :func:`mailchimp_form`."""
    return WebhookSender(timeout=timeout).mailchimp(url, type, email, list_id, **data)


def validate_mailchimp_url(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> requests.Response:
    """Mailchimp's URL check: a bare GET that must answer 200."""
    return WebhookSender(timeout=timeout).mailchimp_validate(url)


def send_hubspot(url: str, events: list[dict[str, Any]], client_secret: str, *, timestamp_ms: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> requests.Response:
    """POST HubSpot webhook events, v3-signed with ``client_secret``."""
    return WebhookSender(timeout=timeout).hubspot(url, events, client_secret, timestamp_ms=timestamp_ms)


def send_segsync(url: str, secret: str, email: str, purposes: Mapping[str, bool], *,
                 occurred_at: datetime | None = None, notice_version: str = "2024-01", timestamp: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> requests.Response:
    """POST a signed segsync preference-center change."""
    return WebhookSender(timeout=timeout).segsync(url, secret, email, purposes, occurred_at=occurred_at,
                                                  notice_version=notice_version, timestamp=timestamp)

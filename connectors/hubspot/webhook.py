"""HubSpot's webhook: a JSON array of events, signed with signature v3.

Signature v3: ``X-HubSpot-Signature-v3`` = base64 HMAC-SHA256(client secret, method + URI + body +
timestamp), ``X-HubSpot-Request-Timestamp`` in milliseconds, within five minutes. What the events mean:

=====================================  =============================================================
``hs_email_optout`` = true or          ``email_marketing`` withdrawn (``false`` records nothing: a
``hs_email_optout_<id>`` = true for a  cleared opt-out flag is not consent)
type not known to be non-marketing
``hs_email_optout_<id>`` for a type    nothing: a One-to-One or transactional type is not marketing
whose purpose is not marketing         and segsync sends neither
``contact.deletion``                   ``profiling`` withdrawn (the advisor removed the contact)
``contact.restore``                    ``profiling`` granted again under legitimate interest (undoes
                                       the deletion); nothing under the consent basis
``contact.privacyDeletion``            every purpose withdrawn (a GDPR deletion request; run
                                       ``segsync consent erase`` to erase the data too)
=====================================  =============================================================

With ``crm.portal_id`` set (the ``portal_id`` webhook setting), events of any other HubSpot account
are dropped unrecorded: the app's secret signs every account it is installed in.

Which types are marketing: ``crm.marketing_subscriptions`` when set (those ids, no others), else every
type except those the portal's subscription definitions KNOW are not marketing (a ``purpose`` other than
marketing: One-to-One, service notices; ``HubSpotConnector.non_marketing_subscriptions``), read once per hour
per portal. A type created since, or one without a purpose, counts as marketing whatever its name (a name
regex misreads "Account Insights Newsletter"). When the definitions cannot be read, every per-type opt-out is
taken as a withdrawal: when in doubt segsync does not email.

Events name contacts by id: ``context.resolve("hubspot", id)`` (wired to the sync store) turns one
into an email; an unknown id is recorded under ``hubspot:<id>``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from connectors.hooks import (
    EMAIL_MARKETING,
    PROFILING,
    SIGNATURE_WINDOW,
    HookContext,
    HookRequest,
    HookResult,
    HookSignal,
    Refused,
    WebhookHandler,
)
from core.errors import InputError, SegsyncError

log = logging.getLogger("segsync.consent")
VENDOR = "hubspot"
MAX_EVENTS = 1000
_MIN_MS, _MAX_MS = 946_684_800_000, 4_102_444_800_000  # 2000-01-01 .. 2100-01-01
# Headers are parsed strictly: str.isdigit() accepts superscripts that int() then refuses.
_ASCII_DIGITS = re.compile(r"[0-9]+", re.ASCII)
# HubSpot decodes these escapes (and only these) in the URI before signing with v3.
_DECODED = {"%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$", "%27": "'",
            "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";"}
_ESCAPE = re.compile("|".join(_DECODED), re.IGNORECASE)
MARKETING_TTL = 3600.0  # seconds a portal's non-marketing subscription ids are trusted
UNREADABLE_TTL = 60.0  # seconds before definitions that could not be read are asked for again


class MarketingTypes:
    """Which email subscription type ids of a portal are marketing: every id but those known not to be
    (read once an hour per token and host), or exactly ``crm.marketing_subscriptions`` when configured."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, frozenset[str] | None]] = {}

    def is_marketing(self, subscription_id: str, settings: Mapping[str, str]) -> bool:
        """Whether an opt-out of ``subscription_id`` withdraws email marketing (True when unsure)."""
        if settings.get("marketing_subscriptions") is not None:
            return subscription_id in {i for i in settings["marketing_subscriptions"].split(",") if i}
        non_marketing = self.non_marketing(settings)
        return non_marketing is None or subscription_id not in non_marketing

    def non_marketing(self, settings: Mapping[str, str]) -> frozenset[str] | None:
        """The ids known NOT to be marketing; None when unknown (every per-type opt-out then counts)."""
        token, base_url = settings.get("access_token"), settings.get("base_url")
        if not token or not base_url:
            return None
        key = hashlib.sha256(f"{base_url}\0{token}".encode()).hexdigest()
        with self._lock:
            at, ids = self._known.get(key, (0.0, None))
            if time.monotonic() - at < (MARKETING_TTL if ids is not None else UNREADABLE_TTL):
                return ids
            ids = self._read(token, base_url, settings.get("plan") or "starter")
            self._known[key] = (time.monotonic(), ids)
            return ids

    @staticmethod
    def _read(token: str, base_url: str, plan: str) -> frozenset[str] | None:
        from connectors.hubspot.connector import HubSpotConnector
        from connectors.kit.http import RetrySettings

        # A webhook must answer soon: two tries within a few seconds, then fail closed.
        retry = RetrySettings(max_attempts=2, initial_wait=0.2, max_wait=1.0, total_budget=5.0)
        try:
            connector = HubSpotConnector(token, base_url, plan=plan, retry=retry)
            return frozenset(connector.non_marketing_subscriptions())
        except SegsyncError as exc:
            log.warning("hubspot webhook: subscription definitions unreadable (%s); every per-type opt-out "
                        "withdraws email marketing", exc)
            return None


def _signed_uri(uri: str) -> str:
    return _ESCAPE.sub(lambda m: _DECODED[m.group(0).upper()], uri)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


class HubSpotWebhook(WebhookHandler):
    """``POST /hooks/{tenant}/hubspot``, answered only for tenants with ``crm.client_secret``."""

    vendor: ClassVar[str] = VENDOR
    routes: ClassVar[tuple[tuple[str, tuple[str, ...]], ...]] = (("", ("POST",)),)
    parse_in_thread: ClassVar[bool] = True  # up to 1,000 events (and, once an hour, a definitions read)

    def __init__(self) -> None:
        self.marketing = MarketingTypes()

    def admit(self, request: HookRequest, context: HookContext) -> bool:
        if not context.settings or not context.settings.get("client_secret"):
            raise Refused(404, "HubSpot webhooks are not configured for this tenant")
        return False

    def verify(self, request: HookRequest, body: bytes, context: HookContext) -> None:
        secret = (context.settings or {})["client_secret"]
        signature = request.headers.get("x-hubspot-signature-v3")
        stamp = request.headers.get("x-hubspot-request-timestamp")
        if not signature or not stamp:
            raise Refused(401, "missing X-HubSpot-Signature-v3 or X-HubSpot-Request-Timestamp")
        if not _ASCII_DIGITS.fullmatch(stamp) or len(stamp) > 16:
            raise Refused(401, "X-HubSpot-Request-Timestamp is not a millisecond timestamp")
        now_ms = int(request.now.timestamp() * 1000)
        if abs(now_ms - int(stamp)) > SIGNATURE_WINDOW.total_seconds() * 1000:
            raise Refused(401, "X-HubSpot-Request-Timestamp is outside the 5-minute window")
        candidates = {u for url in request.urls for u in (url, _signed_uri(url))}
        raw = body.decode("utf-8", "surrogateescape")
        ok = False
        for uri in candidates:  # every candidate is checked: no early exit on a match
            message = f"{request.method}{uri}{raw}{stamp}".encode("utf-8", "surrogateescape")
            expected = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()
            ok |= _same(expected, signature)
        if not ok:
            raise Refused(401, "bad signature")

    def parse(self, body: bytes, context: HookContext) -> HookResult | None:
        """What a HubSpot event array means (one receipt per event id); None when nothing applies."""
        try:
            events = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise Refused(400, "body is not JSON") from None
        if not isinstance(events, list) or not events:
            raise Refused(400, "body must be a non-empty JSON array of events")
        if len(events) > MAX_EVENTS:
            raise Refused(400, f"more than {MAX_EVENTS} events in one request")
        signals: list[HookSignal] = []
        def is_marketing(subscription_id: str) -> bool:  # reads the definitions at the first per-type opt-out
            return self.marketing.is_marketing(subscription_id, context.settings or {})

        for i, event in enumerate(events):
            signals += _event_signals(event, f"event {i}", context, is_marketing)
        if not signals:
            return None
        return HookResult(tuple(signals), reason="hubspot webhook")


def _event_signals(event: Any, where: str, context: HookContext,
                   is_marketing: Callable[[str], bool] = lambda _id: True) -> list[HookSignal]:
    if not isinstance(event, dict):
        raise Refused(400, f"{where} is not an object")
    event_id = _int(event, "eventId", where)
    object_id = _int(event, "objectId", where)
    portal = (context.settings or {}).get("portal_id")
    if portal and str(_int(event, "portalId", where)) != portal:
        # The app's secret signs every account it is installed in: the portal says whose contact this
        # is. Another account's event is none of this tenant's business - dropped, never recorded
        # (a 2xx, so HubSpot does not retry it for days).
        log.warning("hubspot webhook: %s is for portal %s, not ours; ignored", where, event.get("portalId"))
        return []
    occurred_ms = _int(event, "occurredAt", where)
    if not _MIN_MS <= occurred_ms <= _MAX_MS:
        raise Refused(400, f"{where}: occurredAt is not a millisecond timestamp")
    kind = event.get("subscriptionType")
    if not isinstance(kind, str):
        raise Refused(400, f"{where}: subscriptionType must be a string")
    name, value = event.get("propertyName"), event.get("propertyValue")
    if (name is not None and not isinstance(name, str)) or (value is not None and not isinstance(value, str)):
        raise Refused(400, f"{where}: propertyName and propertyValue must be strings")
    purposes: list[str] = []
    state: Literal["granted", "withdrawn"] = "withdrawn"
    if kind == "contact.propertyChange" and _optout_flag(name) and (value or "").lower() == "true" \
            and (name == "hs_email_optout" or is_marketing(str(name).removeprefix("hs_email_optout_"))):
        purposes = [EMAIL_MARKETING]
    elif kind == "contact.deletion":
        purposes = [PROFILING]
    elif kind == "contact.restore" and context.purposes.get(PROFILING) == "legitimate_interest":
        # A restore undoes the deletion: profiling on legitimate interest is allowed again. Under the
        # consent basis it stays refused (a restore is not the person's consent; fail closed).
        purposes, state = [PROFILING], "granted"
    elif kind == "contact.privacyDeletion":
        purposes = sorted(set(context.purposes) | {EMAIL_MARKETING, PROFILING})
    if not purposes:
        return []
    subject = f"{VENDOR}:{object_id}"
    resolved = context.resolve(VENDOR, str(object_id)) if context.resolve is not None else None
    if isinstance(resolved, str) and "@" in resolved:
        with contextlib.suppress(InputError):  # a bad address in the store: keep the vendor reference
            subject = context.normalize(resolved)
    evidence: dict[str, Any] = {
        "vendor": VENDOR, "webhook": VENDOR, "event_id": event_id, "subscription_type": kind,
        "hubspot_object_id": object_id, "portal_id": event.get("portalId"), "change_source": event.get("changeSource"),
    }
    if name is not None:
        evidence.update(property_name=name, property_value=value)
    evidence = {k: v for k, v in evidence.items() if isinstance(v, (str, int)) and not isinstance(v, bool)}
    occurred = datetime.fromtimestamp(occurred_ms / 1000, UTC)
    return [HookSignal(subject, purpose, state, VENDOR, occurred, evidence, receipt=f"{VENDOR}:{event_id}")
            for purpose in purposes]


def _optout_flag(name: Any) -> bool:
    """``hs_email_optout`` (all email) or ``hs_email_optout_<subscription id>`` (one type; withdraws email
    marketing only when the type is marketing, see :class:`MarketingTypes`)."""
    return isinstance(name, str) and (name == "hs_email_optout" or (
        name.startswith("hs_email_optout_") and name.removeprefix("hs_email_optout_").isdigit()))


def _int(event: Mapping[str, Any], name: str, where: str) -> int:
    value = event.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise Refused(400, f"{where}: {name} must be a non-negative integer")
    return value

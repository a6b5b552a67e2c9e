"""What vendor webhook bodies mean for the ledger: parsing and validation, no I/O.

Each parser takes the tenant's :class:`TenantHooks` and the raw body and returns the :class:`Work`
to write, or raises :class:`Reject` (status and reason) before anything is written. The mapping
from vendor events to consent events is documented in :mod:`consent.webhook`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from consent.policy import DESTINATIONS, EMAIL_MARKETING, GRANTED, PROFILING, WITHDRAWN, normalize_subject
from consent.signals import ConsentSignal
from core.errors import InputError
from core.times import NaiveTimeError, parse_time

log = logging.getLogger("segsync.consent")
SIGNATURE_WINDOW = timedelta(minutes=5)
MAX_HUBSPOT_EVENTS = 1000
MAILCHIMP_TYPES = frozenset({"subscribe", "unsubscribe", "profile", "upemail", "cleaned", "campaign"})
PREFERENCE_FIELDS = frozenset({"email", "purposes", "occurred_at", "notice_version", "request_id", "ip", "user_agent"})
_MIN_MS, _MAX_MS = 946_684_800_000, 4_102_444_800_000  # 2000-01-01 .. 2100-01-01


@dataclass(frozen=True)
class TenantHooks:
    """What the webhook needs to know about one tenant.

    ``purposes`` maps purpose to lawful basis (recorded with each event); ``destinations`` are the
    outbox destinations a withdrawal is queued for; ``resolve(source, vendor_id)`` returns the
    email of a vendor's contact id, or None.
    """

    webhook_secret: str
    purposes: Mapping[str, str]
    hubspot_client_secret: str | None = None
    mailchimp_list_id: str | None = None
    hubspot_portal_id: int | None = None  # when set, events of any other HubSpot account are refused
    destinations: tuple[str, ...] = DESTINATIONS
    resolve: Callable[[str, str], str | None] | None = None

    def __repr__(self) -> str:  # never print secrets
        return f"TenantHooks(purposes={dict(self.purposes)!r}, destinations={self.destinations!r})"

    @classmethod
    def from_config(
        cls, tenant: Any, *, resolve: Callable[[str, str], str | None] | None = None
    ) -> TenantHooks:
        """Build from a ``sync.config.TenantCfg`` (read by attribute; consent does not import sync)."""
        crm, esp = tenant.crm, getattr(tenant, "esp", None)
        client_secret = getattr(crm, "client_secret", None)
        destinations = [d for d in DESTINATIONS if esp is not None or not d.startswith("esp.")]
        return cls(
            webhook_secret=tenant.consent.webhook_secret.get_secret_value(),
            purposes={p: cfg.basis for p, cfg in tenant.consent.purposes.items()},
            hubspot_client_secret=client_secret.get_secret_value() if client_secret is not None else None,
            mailchimp_list_id=getattr(esp, "list_id", None),
            hubspot_portal_id=getattr(crm, "portal_id", None),
            destinations=tuple(destinations),
            resolve=resolve,
        )


class Reject(Exception):
    """A request refused before anything is written: HTTP status and a reason for the caller."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason



@dataclass(frozen=True)
class Work:
    """A parsed, authenticated request, ready to be written."""

    # One receipt key per signal (parallel to ``signals``): one key for the whole body, except for
    # HubSpot, whose events carry their own ids. An alias-only request has one key and no signals.
    receipts: tuple[str, ...]
    signals: tuple[ConsentSignal, ...] = ()
    alias: tuple[str, str, datetime] | None = None
    reason: str = ""


def _basis(hooks: TenantHooks, purpose: str) -> str:
    return hooks.purposes.get(purpose, "consent")


def parse_mailchimp(hooks: TenantHooks, body: bytes, receipt: str) -> Work | None:
    """What a Mailchimp form post means; None for events that change no consent."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, errors="strict", max_num_fields=200)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Reject(400, f"body is not a form-encoded Mailchimp event ({type(exc).__name__})") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise Reject(400, f"field {name!r} appears twice")
        fields[name] = value
    kind = fields.get("type")
    if kind not in MAILCHIMP_TYPES:
        raise Reject(400, f"type must be one of {', '.join(sorted(MAILCHIMP_TYPES))}")
    try:
        fired = datetime.strptime(fields.get("fired_at", ""), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        raise Reject(400, "fired_at must look like 2026-11-25 18:00:00") from None
    list_id = fields.get("data[list_id]")
    if hooks.mailchimp_list_id is not None and list_id != hooks.mailchimp_list_id:
        raise Reject(400, "data[list_id] is not this tenant's audience")
    if kind in ("profile", "campaign") or (kind == "subscribe" and not fields.get("data[ip_opt]")):
        # ``subscribe`` does not say who subscribed the person (they, an admin or the API): alone it is not
        # evidence of consent. Only the member's own opt-in record is (``ip_opt``, present when the person
        # confirmed from a form); without it the next pull reads timestamp_opt/ip_opt and decides.
        return None
    if kind == "upemail":
        old, new = _required(fields, "data[old_email]"), _required(fields, "data[new_email]")
        return Work((receipt,), alias=(_email(old, "data[old_email]"), _email(new, "data[new_email]"), fired))
    email = _email(_required(fields, "data[email]"), "data[email]")
    evidence: dict[str, Any] = {"vendor": "mailchimp", "webhook": "mailchimp", "type": kind}
    for key in ("list_id", "reason", "action", "campaign_id", "ip_opt", "ip_signup", "id"):
        given = fields.get(f"data[{key}]")
        if given:
            evidence["subscriber_id" if key == "id" else key] = given
    state = GRANTED if kind == "subscribe" else WITHDRAWN  # a subscribe here carries the member's ip_opt
    signal = ConsentSignal(
        email, EMAIL_MARKETING, state, _basis(hooks, EMAIL_MARKETING), "mailchimp", fired,
        evidence=evidence, idempotency_key=f"{receipt}:{EMAIL_MARKETING}",
    )
    return Work((receipt,), (signal,), reason=f"mailchimp {kind}")


def _optout_flag(name: Any) -> bool:
    """``hs_email_optout`` (all email) or ``hs_email_optout_<subscription id>`` (one type).

    A per-type opt-out is taken as an email-marketing withdrawal whatever the type: the webhook cannot
    tell a marketing type from One-to-One without a call, and when in doubt segsync does not email.
    """
    return isinstance(name, str) and (name == "hs_email_optout" or (
        name.startswith("hs_email_optout_") and name.removeprefix("hs_email_optout_").isdigit()))


def parse_hubspot(hooks: TenantHooks, body: bytes) -> Work | None:
    """What a HubSpot event array means (one receipt per event id); None when nothing applies."""
    try:
        events = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Reject(400, "body is not JSON") from None
    if not isinstance(events, list) or not events:
        raise Reject(400, "body must be a non-empty JSON array of events")
    if len(events) > MAX_HUBSPOT_EVENTS:
        raise Reject(400, f"more than {MAX_HUBSPOT_EVENTS} events in one request")
    receipts: list[str] = []
    signals: list[ConsentSignal] = []
    for i, event in enumerate(events):
        where = f"event {i}"
        if not isinstance(event, dict):
            raise Reject(400, f"{where} is not an object")
        event_id = _int(event, "eventId", where)
        object_id = _int(event, "objectId", where)
        if hooks.hubspot_portal_id is not None and _int(event, "portalId", where) != hooks.hubspot_portal_id:
            # The app's secret signs every account it is installed in: the portal says whose contact this
            # is. Another account's event is none of this tenant's business - dropped, never recorded
            # (a 2xx, so HubSpot does not retry it for days).
            log.warning("hubspot webhook: %s is for portal %s, not ours; ignored", where, event.get("portalId"))
            continue
        occurred_ms = _int(event, "occurredAt", where)
        if not _MIN_MS <= occurred_ms <= _MAX_MS:
            raise Reject(400, f"{where}: occurredAt is not a millisecond timestamp")
        kind = event.get("subscriptionType")
        if not isinstance(kind, str):
            raise Reject(400, f"{where}: subscriptionType must be a string")
        name, value = event.get("propertyName"), event.get("propertyValue")
        if (name is not None and not isinstance(name, str)) or (value is not None and not isinstance(value, str)):
            raise Reject(400, f"{where}: propertyName and propertyValue must be strings")
        purposes: list[str] = []
        state = WITHDRAWN
        if kind == "contact.propertyChange" and _optout_flag(name) and (value or "").lower() == "true":
            purposes = [EMAIL_MARKETING]
        elif kind == "contact.deletion":
            purposes = [PROFILING]
        elif kind == "contact.restore" and hooks.purposes.get(PROFILING) == "legitimate_interest":
            # A restore undoes the deletion: profiling on legitimate interest is allowed again. Under the
            # consent basis it stays refused (a restore is not the person's consent; fail closed).
            purposes, state = [PROFILING], GRANTED
        elif kind == "contact.privacyDeletion":
            purposes = sorted(set(hooks.purposes) | {EMAIL_MARKETING, PROFILING})
        if not purposes:
            continue
        subject = f"hubspot:{object_id}"
        resolved = hooks.resolve("hubspot", str(object_id)) if hooks.resolve is not None else None
        if isinstance(resolved, str) and "@" in resolved:
            with contextlib.suppress(InputError):  # a bad address in the store: keep the vendor reference
                subject = normalize_subject(resolved)
        occurred = datetime.fromtimestamp(occurred_ms / 1000, UTC)
        evidence = {
            "vendor": "hubspot", "webhook": "hubspot", "event_id": event_id, "subscription_type": kind,
            "hubspot_object_id": object_id, "portal_id": event.get("portalId"),
            "change_source": event.get("changeSource"),
        }
        if name is not None:
            evidence.update(property_name=name, property_value=value)
        evidence = {k: v for k, v in evidence.items() if isinstance(v, (str, int)) and not isinstance(v, bool)}
        key = f"hubspot:{event_id}"
        for purpose in purposes:
            receipts.append(key)  # one per signal, so write() can drop replayed events
            signals.append(
                ConsentSignal(subject, purpose, state, _basis(hooks, purpose), "hubspot", occurred,
                       evidence=evidence, idempotency_key=f"{key}:{purpose}")
            )
    if not signals:
        return None
    return Work(tuple(receipts), tuple(signals), reason="hubspot webhook")


def parse_preferences(hooks: TenantHooks, body: bytes, receipt: str, now: datetime) -> Work:
    """What a signed preference-center body means: one event per purpose."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Reject(400, "body is not JSON") from None
    if not isinstance(doc, dict):
        raise Reject(400, "body must be a JSON object")
    unknown = sorted(set(doc) - PREFERENCE_FIELDS)
    if unknown:
        raise Reject(400, f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(PREFERENCE_FIELDS))})")
    email = _email(doc.get("email"), "email")
    purposes = doc.get("purposes")
    if not isinstance(purposes, dict) or not purposes:
        raise Reject(400, "purposes must be a non-empty object of purpose: true|false")
    for purpose, allowed in purposes.items():
        if purpose not in hooks.purposes:
            raise Reject(400, f"unknown purpose {purpose!r} (this tenant has {', '.join(sorted(hooks.purposes))})")
        if not isinstance(allowed, bool):
            raise Reject(400, f"purposes.{purpose} must be true or false")
    occurred = _iso_time(doc.get("occurred_at"), "occurred_at")
    if occurred > now + SIGNATURE_WINDOW:
        raise Reject(400, "occurred_at is in the future")
    notice = doc.get("notice_version")
    if notice is not None and (not isinstance(notice, str) or not 0 < len(notice) <= 64 or "\x00" in notice):
        raise Reject(400, "notice_version must be a string of 1..64 characters")
    if notice is None and any(purposes.values()):
        raise Reject(400, "notice_version is required to record a grant (what the person was shown)")
    evidence: dict[str, Any] = {"webhook": "preferences"}
    for key in ("request_id", "ip", "user_agent"):
        value = doc.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > 512:
            raise Reject(400, f"{key} must be a string of at most 512 characters")
        evidence[key] = value
    signals = tuple(
        ConsentSignal(
            email, purpose, GRANTED if allowed else WITHDRAWN, _basis(hooks, purpose), "preference_center",
            occurred, notice, evidence, f"{receipt}:{purpose}",
        )
        for purpose, allowed in sorted(purposes.items())
    )
    return Work((receipt,) * len(signals), signals, reason="preference center")


def _required(fields: Mapping[str, str], name: str) -> str:
    value = fields.get(name)
    if not value:
        raise Reject(400, f"{name} is missing")
    return value


def _email(value: Any, where: str) -> str:
    try:
        email = normalize_subject(value)
    except InputError as exc:
        raise Reject(400, f"{where}: {exc}") from None
    if "@" not in email:
        raise Reject(400, f"{where} is not an email address")
    return email


def _int(event: Mapping[str, Any], name: str, where: str) -> int:
    value = event.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise Reject(400, f"{where}: {name} must be a non-negative integer")
    return value


def _iso_time(value: Any, where: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise Reject(400, f"{where} must be an ISO 8601 time with a zone, e.g. 2026-11-25T18:00:00Z")
    try:
        return parse_time(value, naive_ok=False)
    except NaiveTimeError:
        raise Reject(400, f"{where} has no time zone (add Z or +00:00)") from None
    except ValueError:
        raise Reject(400, f"{where} must be an ISO 8601 time with a zone, e.g. 2026-11-25T18:00:00Z") from None


__all__ = ["MAILCHIMP_TYPES", "Reject", "TenantHooks", "Work", "parse_hubspot", "parse_mailchimp", "parse_preferences"]

"""Mailchimp records <-> segsync records. No I/O.

A member's ``vendor_id`` is its ``unique_email_id``: it survives an email change (upemail), while
the subscriber hash is always the MD5 of the *current* lower-cased address. The hash is kept in
``properties["subscriber_hash"]``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from connectors.base import Contact, EngagementEvent
from connectors.mailchimp import settings as S
from consent.signals import BASIS_FROM_POLICY, ConsentSignal
from core.emails import normalize_email
from core.errors import InputError
from core.times import now
from core.times import parse_time as parse_time_core

EMAIL_MARKETING = "email_marketing"
_ACTIONS = {"open": "email_open", "click": "email_click"}


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: MD5 of the lower-cased, trimmed address."""
    return hashlib.md5(email.strip().lower().encode()).hexdigest()


def parse_time(value: Any, where: str = "") -> datetime | None:
    """Mailchimp's ISO 8601 timestamps ('' means unknown); a malformed one is an :class:`InputError`."""
    if value in (None, ""):
        return None
    try:
        return parse_time_core(str(value))
    except ValueError:
        raise InputError(f"{S.VENDOR}: {where or 'a timestamp'} is not an ISO 8601 time: {value!r}") from None


def fmt_time(value: datetime) -> str:
    """A timestamp as Mailchimp takes it in a query: second resolution, explicit UTC offset."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0).isoformat()


def member_contact(raw: Any, where: str) -> tuple[Contact, ConsentSignal | None]:
    """One member JSON -> (Contact, a withdrawal signal for unsubscribed/cleaned members)."""
    if not isinstance(raw, Mapping):
        raise InputError(f"{S.VENDOR}: {where} is not a member object: {type(raw).__name__}")
    email = normalize_email(raw.get("email_address") if isinstance(raw.get("email_address"), str) else None)
    uid = raw.get("unique_email_id") or raw.get("id")
    if not uid or not email:
        raise InputError(f"{S.VENDOR}: {where} has no unique_email_id or email_address")
    status = str(raw.get("status") or "")
    changed = parse_time(raw.get("last_changed"), f"{where}.last_changed")
    tags = [str(t.get("name")) for t in raw.get("tags") or [] if isinstance(t, Mapping) and t.get("name")]
    merge_raw = raw.get("merge_fields")
    merge: Mapping[str, Any] = merge_raw if isinstance(merge_raw, Mapping) else {}
    properties: dict[str, Any] = {
        "subscriber_hash": raw.get("id") or subscriber_hash(email),
        "merge_fields": dict(merge),
        "tags": tags,
        "member_rating": raw.get("member_rating"),
        "status": status,
        "timestamp_opt": raw.get("timestamp_opt") or None,
        "timestamp_signup": raw.get("timestamp_signup") or None,
        "ip_opt": raw.get("ip_opt") or None,
        "last_changed": raw.get("last_changed") or None,
    }
    for key in ("language", "vip"):
        if key in raw:
            properties[key] = raw[key]
    if raw.get("unsubscribe_reason"):
        properties["unsubscribe_reason"] = raw["unsubscribe_reason"]
    contact = Contact(
        source=S.SOURCE,
        vendor_id=str(uid),
        email=email,
        properties=properties,
        updated_at=changed,
        created_at=parse_time(raw.get("timestamp_signup"), f"{where}.timestamp_signup")
        or parse_time(raw.get("timestamp_opt"), f"{where}.timestamp_opt"),
        status=status or None,
    )
    signal = None
    if status in S.WITHDRAWN_STATUSES:
        when = changed or now()
        reason = str(raw.get("unsubscribe_reason") or "") if status == "unsubscribed" else "cleaned (address bounced)"
        signal = ConsentSignal(
            source=S.SOURCE,
            email=email,
            purpose=EMAIL_MARKETING,
            state="withdrawn",
            basis=BASIS_FROM_POLICY,
            occurred_at=when,
            reason=reason or f"{status} at Mailchimp",
            evidence={"status": status, "last_changed": raw.get("last_changed") or "", "unique_email_id": str(uid)},
            # Stable across re-pulls of the same state; a later re-unsubscribe has a new last_changed.
            vendor_event_id=f"{S.SOURCE}:{status}:{uid}:{fmt_time(when)}",
        )
    return contact, signal


def event_id(*parts: Any) -> str:
    """A stable id for an engagement event from what identifies it at Mailchimp."""
    return "mc:" + hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:24]


def activity_events(
    raw: Any,
    campaign: Mapping[str, Any],
    vendor_id_for: Mapping[str, str],
    *,
    since: datetime | None,
    until: datetime,
    include_sent: bool,
    where: str,
) -> list[EngagementEvent]:
    """One recipient of ``GET /reports/{id}/email-activity`` -> sent/open/click events in [since, until)."""
    if not isinstance(raw, Mapping):
        raise InputError(f"{S.VENDOR}: {where} is not an email activity object")
    email_hash = str(raw.get("email_id") or "")
    email = normalize_email(raw.get("email_address") if isinstance(raw.get("email_address"), str) else None)
    if not email_hash and email:
        email_hash = subscriber_hash(email)
    if not email_hash:
        raise InputError(f"{S.VENDOR}: {where} has neither email_id nor email_address")
    who = vendor_id_for.get(email_hash, email_hash)
    cid = str(campaign.get("id"))
    title = str((campaign.get("settings") or {}).get("title") or "")
    out: list[EngagementEvent] = []
    sent_at = parse_time(campaign.get("send_time"), f"campaign {cid}.send_time")
    if include_sent and sent_at is not None:
        out.append(EngagementEvent(S.SOURCE, who, "email_sent", sent_at, None, event_id(cid, who, "sent"),
                                   email, {"campaign_id": cid, "campaign_title": title}))
    for i, act in enumerate(raw.get("activity") or []):
        if not isinstance(act, Mapping):
            raise InputError(f"{S.VENDOR}: {where}.activity[{i}] is not an object")
        kind = _ACTIONS.get(str(act.get("action")))
        when = parse_time(act.get("timestamp"), f"{where}.activity[{i}].timestamp")
        if kind is None or when is None or when >= until or (since is not None and when < since):
            continue
        attributes: dict[str, Any] = {"campaign_id": cid, "campaign_title": title}
        if act.get("url"):
            attributes["url"] = act["url"]
        # The member's stable id (not the hash): an email change must not re-key old events.
        out.append(EngagementEvent(S.SOURCE, who, kind, when, None,
                                   event_id(cid, who, kind, fmt_time(when), act.get("url") or ""), email, attributes))
    return out

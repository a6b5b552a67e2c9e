"""Wealthbox JSON -> segsync records: contacts (with household membership), consent marks, engagement.

A bad record is an :class:`InputError` naming it. Fields whose meaning is uncertain are skipped, not
guessed: an opportunity is money only when its stage says Won (never from ``probability``), and only
its ``amounts`` count; an event counts only when dated and not cancelled.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from connectors.base import HOUSEHOLD_PROPERTY, Contact, EngagementEvent
from connectors.wealthbox import settings as S
from consent.signals import BASIS_FROM_POLICY, ConsentSignal
from core.emails import normalize_email
from core.errors import InputError
from core.times import now, parse_time_or_none


def rows_of(body: Any, key: str, what: str) -> tuple[list[Mapping[str, Any]], int | None]:
    """The records of one list answer and its ``meta.total_pages`` (None when absent)."""
    if not isinstance(body, Mapping) or not isinstance(body.get(key), list):
        raise InputError(f"wealthbox: {what} answered without a {key!r} list")
    rows = [r for r in body[key] if isinstance(r, Mapping)]
    meta = body.get("meta")
    pages = meta.get("total_pages") if isinstance(meta, Mapping) else None
    return rows, pages if isinstance(pages, int) else None


def record_id(raw: Mapping[str, Any], what: str) -> str:
    rid = raw.get("id")
    if not isinstance(rid, int) and not (isinstance(rid, str) and rid.isdigit()):
        raise InputError(f"wealthbox: a record in {what} has no numeric id ({rid!r})")
    return str(rid)


def updated(raw: Mapping[str, Any], what: str) -> datetime:
    stamp = parse_time_or_none(raw.get("updated_at"))
    if stamp is None:
        raise InputError(f"wealthbox: record {raw.get('id')} in {what} has no readable updated_at "
                         f"({raw.get('updated_at')!r})")
    return stamp


def slug(name: str) -> str:
    """A custom field's name as a property key: ``Assets Under Management`` -> ``assets_under_management``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def tag_names(raw: Mapping[str, Any]) -> list[str]:
    out = []
    for t in raw.get("tags") or []:
        name = t.get("name") if isinstance(t, Mapping) else t
        if isinstance(name, str) and name.strip():
            out.append(name.strip())
    return out


def emails(raw: Mapping[str, Any]) -> list[str]:
    """Addresses, principal first."""
    rows = [e for e in raw.get("email_addresses") or [] if isinstance(e, Mapping)]
    rows.sort(key=lambda e: not e.get("principal"))
    return [a for a in (normalize_email(e.get("address")) for e in rows) if a]


def _age(born: str | None, today: date) -> int | None:
    try:
        b = date.fromisoformat(str(born))
    except ValueError:
        return None
    return today.year - b.year - ((today.month, today.day) < (b.month, b.day))


def to_contact(raw: Mapping[str, Any], what: str, prefix: str = "") -> Contact | None:
    """A Person (always) or a Household with an email of its own as a :class:`Contact`; others None.

    Members carry their household's id in :data:`HOUSEHOLD_PROPERTY`; a household record carries its
    own id there (so consent can tell it from its members) and its member ids in ``household_members``.
    """
    vid = record_id(raw, what)
    kind = raw.get("type")
    addresses = emails(raw)
    if kind not in S.CONTACT_TYPES:
        raise InputError(f"wealthbox: contact {vid} in {what} has an unknown type {kind!r}")
    if kind != "Person" and not (kind == "Household" and addresses):
        return None  # organizations, trusts and households without an email of their own
    props: dict[str, Any] = {"record_type": str(kind).lower(), "name": raw.get("name")}
    if raw.get("contact_type"):
        props["contact_type"] = raw["contact_type"]
    tags = [t for t in tag_names(raw) if not (prefix and t.startswith(prefix))]  # segsync's own tags: no feature
    if tags:
        props["tags"] = ";".join(sorted(tags))
    for f in raw.get("custom_fields") or []:
        if isinstance(f, Mapping) and isinstance(f.get("name"), str) and f.get("value") not in (None, ""):
            key = slug(f["name"])
            if key and not f["name"].startswith(S.SCORE_FIELD_PREFIX):  # our own output is no feature
                props[key] = f["value"]
    if kind == "Person":
        if raw.get("birth_date"):
            props["birth_date"] = raw["birth_date"]
            age = _age(raw["birth_date"], now().date())
            if age is not None:
                props["age"] = age
        household = raw.get("household")
        if isinstance(household, Mapping) and household.get("id") is not None:
            props[HOUSEHOLD_PROPERTY] = str(household["id"])
            if household.get("title"):
                props["household_title"] = household["title"]
    else:
        props[HOUSEHOLD_PROPERTY] = vid
        props["household_members"] = ";".join(
            str(m["id"]) for m in raw.get("members") or [] if isinstance(m, Mapping) and m.get("id") is not None)
    return Contact(source=S.SOURCE, vendor_id=vid, email=addresses[0] if addresses else None,
                   properties={k: v for k, v in props.items() if v is not None}, updated_at=updated(raw, what),
                   created_at=parse_time_or_none(raw.get("created_at")), previous_emails=tuple(addresses[1:]))


def deleted_contact(raw: Mapping[str, Any], what: str) -> Contact:
    """A contact Wealthbox lists under ``deleted=true``: reported archived."""
    return Contact(source=S.SOURCE, vendor_id=record_id(raw, what), email=None, archived=True,
                   updated_at=parse_time_or_none(raw.get("deleted_at")) or updated(raw, what))


def optout_signals(raw: Mapping[str, Any], contact: Contact) -> list[ConsentSignal]:
    """The firm's "Do Not Email" tag as a withdrawal of email marketing, dated at the record's last change.

    The id depends only on the contact, so re-pulling the same tagged contact gives the same signal.
    """
    if contact.email is None or S.DO_NOT_EMAIL_TAG.lower() not in {t.lower() for t in tag_names(raw)}:
        return []
    return [ConsentSignal(
        source=S.SOURCE, email=contact.email, purpose="email_marketing", state="withdrawn", basis=BASIS_FROM_POLICY,
        occurred_at=contact.updated_at or now(), reason=f"Wealthbox: tagged {S.DO_NOT_EMAIL_TAG!r}",
        evidence={"tag": S.DO_NOT_EMAIL_TAG, "contact_id": contact.vendor_id},
        vendor_event_id=f"wealthbox:do-not-email:{contact.vendor_id}")]


def linked_contacts(raw: Mapping[str, Any]) -> list[str]:
    return [str(link["id"]) for link in raw.get("linked_to") or []
            if isinstance(link, Mapping) and link.get("type") == "Contact" and link.get("id") is not None]


def meeting_events(raw: Mapping[str, Any], what: str) -> list[EngagementEvent]:
    """A dated event (a meeting) as one ``meeting`` event per linked contact; cancelled ones are skipped."""
    starts = parse_time_or_none(raw.get("starts_at"))
    state = str(raw.get("state") or "").lower()
    if starts is None or state in ("cancelled", "canceled"):
        return []
    eid = record_id(raw, what)
    return [EngagementEvent(source=S.SOURCE, contact_vendor_id=cid, type="meeting", occurred_at=starts,
                            event_id=f"wealthbox:event:{eid}:{cid}",
                            attributes={"category": raw.get("event_category"), "state": state or None})
            for cid in linked_contacts(raw)]


def stage_name(stage: Any, stages: Mapping[str, str]) -> str | None:
    """An opportunity's stage as a name: a name as given, an id through the workspace's stage list, else None."""
    if isinstance(stage, Mapping):
        stage = stage.get("name") or stage.get("id")
    if isinstance(stage, str) and not stage.isdigit():
        return stage
    return stages.get(str(stage)) if stage is not None else None


def won_events(raw: Mapping[str, Any], stages: Mapping[str, str], what: str) -> list[EngagementEvent]:
    """A Won opportunity with amounts as one ``opportunity_won`` event per linked contact, valued at its amounts.

    Open, lost and unknown stages are not money; neither is a Won opportunity without amounts (its value
    would be a guess). Dated at ``target_close`` (INFERRED: the close date; Wealthbox keeps no separate
    "won at" time in what we read).
    """
    name = stage_name(raw.get("stage"), stages)
    if name is None or name.strip().lower() != S.WON_STAGE:
        return []
    amounts = [a.get("amount") for a in raw.get("amounts") or [] if isinstance(a, Mapping)]
    values = [float(a) for a in amounts if isinstance(a, (int, float)) and not isinstance(a, bool)]
    when = parse_time_or_none(raw.get("target_close"))
    if not values or when is None:
        return []
    oid = record_id(raw, what)
    return [EngagementEvent(source=S.SOURCE, contact_vendor_id=cid, type="opportunity_won", occurred_at=when,
                            value=round(sum(values), 2), event_id=f"wealthbox:opportunity:{oid}:{cid}",
                            attributes={"name": raw.get("name")})
            for cid in linked_contacts(raw)]


def stage_names(body: Any) -> dict[str, str]:
    """``GET /categories/opportunity_stages`` as stage id -> name."""
    rows = body.get("opportunity_stages") if isinstance(body, Mapping) else None
    return {str(r["id"]): str(r["name"]) for r in rows or [] if isinstance(r, Mapping) and "id" in r and "name" in r}


def segsync_tags(tags: Iterable[str], prefix: str) -> set[str]:
    return {t for t in tags if t.startswith(prefix)}

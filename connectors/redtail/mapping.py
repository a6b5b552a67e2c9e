"""Redtail JSON -> segsync records: contacts (emails, birth date, family, accounts), dated events, opt-outs.

A malformed answer is an :class:`~core.errors.InputError` naming the call and the record. A field whose
meaning is uncertain is left out rather than guessed (an unreadable birth date or balance gives no
property, not a wrong one).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from connectors.base import HOUSEHOLD_PROPERTY, Contact, EngagementEvent
from connectors.redtail import settings as S
from consent.signals import BASIS_FROM_POLICY, ConsentSignal
from core.emails import normalize_email
from core.errors import InputError
from core.times import parse_time_or_none

log = logging.getLogger("segsync.redtail")


def rows_of(body: Any, key: str, what: str) -> list[Mapping[str, Any]]:
    """The ``key`` list of a Redtail answer, or a clear error saying which answer was malformed."""
    rows = body.get(key) if isinstance(body, Mapping) else None
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
        raise InputError(f"redtail: the answer to {what} has no '{key}' list of objects: {str(body)[:200]!r}")
    return rows


def total_pages(body: Any) -> int | None:
    """``meta.total_pages`` of a list answer (None when absent)."""
    meta = body.get("meta") if isinstance(body, Mapping) else None
    pages = meta.get("total_pages") if isinstance(meta, Mapping) else None
    return pages if isinstance(pages, int) else None


def total_records(body: Any) -> int | None:
    """``meta.total_records`` of a list answer (None when absent)."""
    meta = body.get("meta") if isinstance(body, Mapping) else None
    total = meta.get("total_records") if isinstance(meta, Mapping) else None
    return total if isinstance(total, int) else None


def record_id(raw: Mapping[str, Any], what: str) -> str:
    """A record's numeric id as text."""
    rid = raw.get("id")
    if not isinstance(rid, int) or isinstance(rid, bool):
        raise InputError(f"redtail: {what} returned a record without a numeric id: {str(raw)[:120]!r}")
    return str(rid)


def _age(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def emails_of(raw: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    """The primary address (else the first) and the others, normalised."""
    rows = [e for e in raw.get("emails") or [] if isinstance(e, Mapping)]
    rows.sort(key=lambda e: not e.get("is_primary"))
    found = [a for a in (normalize_email(str(e.get("address") or "")) for e in rows) if a]
    found = list(dict.fromkeys(found))
    return (found[0] if found else None), tuple(found[1:])


def to_contact(raw: Mapping[str, Any], as_of: datetime, what: str, own_prefix: str = "") -> Contact:
    """A contact from ``/contacts`` (with ``include=emails,family,tag_memberships``). Tag groups named with
    ``own_prefix`` (segsync's own) are left out of the tags property: segsync's output is never its input."""
    vid = record_id(raw, what)
    email, others = emails_of(raw)
    props: dict[str, Any] = {"first_name": raw.get("first_name"), "last_name": raw.get("last_name")}
    for key, prop in (("status_id", S.PROP_STATUS), ("category_id", S.PROP_CATEGORY)):
        if raw.get(key) is not None:
            props[prop] = raw[key]
    try:
        born = date.fromisoformat(str(raw.get("dob") or ""))
    except ValueError:
        born = None  # missing or unreadable: no age rather than a wrong one
    if born is not None and born <= as_of.date():
        props[S.PROP_BIRTH_DATE] = born.isoformat()
        props[S.PROP_AGE] = _age(born, as_of.date())
    family = raw.get("family") if isinstance(raw.get("family"), Mapping) else None
    family_id = (family or {}).get("id", raw.get("family_id"))
    if isinstance(family_id, int) and not isinstance(family_id, bool):
        # Families are not contacts in Redtail and their ids are a separate series: the prefix keeps a family id
        # from ever reading as a contact's id (the gate takes the contact whose id *is* the household id for
        # the household's own record, which Redtail does not have).
        props[HOUSEHOLD_PROPERTY] = f"{S.FAMILY_PREFIX}{family_id}"
    tags = sorted({str(m.get("name")) for m in raw.get("tag_memberships") or [] if isinstance(m, Mapping)
                   and m.get("name") and not (own_prefix and str(m["name"]).startswith(own_prefix))})
    props[S.PROP_TAGS] = ";".join(tags)
    return Contact(source=S.SOURCE, vendor_id=vid, email=email, properties=props,
                   updated_at=parse_time_or_none(raw.get("updated_at")),
                   created_at=parse_time_or_none(raw.get("created_at")),
                   archived=bool(raw.get("deleted")), previous_emails=others)


def with_accounts(contact: Contact, accounts: list[Mapping[str, Any]]) -> Contact:
    """The contact with its account count and total balance; no total when any balance is unreadable."""
    balances: list[float] = []
    for a in accounts:
        value = a.get("balance")
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            balances = []
            log.warning("redtail: contact %s has an account without a numeric balance; no total", contact.vendor_id)
            break
        try:
            balances.append(float(value))
        except ValueError:
            balances = []
            log.warning("redtail: contact %s has an unreadable balance %r; no total", contact.vendor_id, value)
            break
    props = dict(contact.properties)
    props[S.PROP_ACCOUNTS] = len(accounts)
    if balances or not accounts:
        props[S.PROP_BALANCE] = round(sum(balances), 2)
    return Contact(source=contact.source, vendor_id=contact.vendor_id, email=contact.email, properties=props,
                   updated_at=contact.updated_at, created_at=contact.created_at, archived=contact.archived,
                   previous_emails=contact.previous_emails)


def _event_type(label: Any, types: Mapping[str, str], default: str) -> str:
    return types.get(str(label or "").strip().lower(), default)


def note_events(contact: Contact, notes: Iterable[Mapping[str, Any]], types: Mapping[str, str],
                until: datetime) -> list[EngagementEvent]:
    """A contact's notes as events dated ``created_at``; type from the note's category (``types``, lower-case
    keys), else "note". Deleted and draft notes, and notes dated after ``until``, are left out."""
    out = []
    for n in notes:
        at = parse_time_or_none(n.get("created_at"))
        if at is None or at > until or n.get("deleted") or n.get("draft") or not isinstance(n.get("id"), int):
            continue
        out.append(EngagementEvent(source=S.SOURCE, contact_vendor_id=contact.vendor_id, email=contact.email,
                                   type=_event_type(n.get("category"), types, "note"), occurred_at=at,
                                   event_id=f"redtail:note:{n['id']}",
                                   attributes={"category": n.get("category")}))
    return out


def activity_events(contact: Contact, raw: Mapping[str, Any], types: Mapping[str, str],
                    until: datetime) -> list[EngagementEvent]:
    """Completed activities (from ``include=activities``) dated ``start_date``; type from the subject."""
    out = []
    for a in raw.get("activities") or []:
        if not isinstance(a, Mapping) or not a.get("completed") or not isinstance(a.get("id"), int):
            continue  # a planned meeting is not engagement
        at = parse_time_or_none(a.get("start_date"))
        if at is None or at > until:
            continue
        out.append(EngagementEvent(source=S.SOURCE, contact_vendor_id=contact.vendor_id, email=contact.email,
                                   type=_event_type(a.get("subject"), types, "activity"), occurred_at=at,
                                   event_id=f"redtail:activity:{a['id']}", attributes={"subject": a.get("subject")}))
    return out


def optout_signal(raw: Mapping[str, Any], optout_group: str, seen_at: datetime,
                  what: str) -> ConsentSignal | None:
    """A withdrawal of email marketing for a member of the firm's opt-out tag group, first seen at ``seen_at``.

    Redtail gives a membership no time of its own, and adding one need not change the contact's
    ``updated_at``: it is dated when segsync first saw it (the pull), never earlier. None without an address.
    """
    vid = record_id(raw, what)
    email, _others = emails_of(raw)
    if email is None:
        return None
    return ConsentSignal(source=S.SOURCE, email=email, purpose="email_marketing", state="withdrawn",
                         basis=BASIS_FROM_POLICY, occurred_at=seen_at,
                         reason=f"Redtail: member of the {optout_group!r} tag group",
                         evidence={"tag_group": optout_group, "contact_id": vid},
                         vendor_event_id=f"redtail:optout:{vid}:{seen_at.isoformat()}")


def membership_ids(rows: Iterable[Any]) -> dict[int, int]:
    """tag group id -> membership id, from a contact's tag memberships."""
    return {int(m["tag_id"]): int(m["id"]) for m in rows if isinstance(m, Mapping)
            and isinstance(m.get("tag_id"), int) and isinstance(m.get("id"), int)}


def udf_values(rows: Iterable[Mapping[str, Any]]) -> dict[int, tuple[int, str]]:
    """UDF field id -> (value id, value), from a contact's UDF values."""
    return {int(u["contact_udf_field_id"]): (int(u["id"]), str(u.get("field_value") or "")) for u in rows
            if isinstance(u.get("contact_udf_field_id"), int) and isinstance(u.get("id"), int)}

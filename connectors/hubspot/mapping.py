"""HubSpot JSON -> segsync records: contacts, merged-away aliases, opt-outs, engagement events.

Works on HubSpot's documented JSON (``SimplePublicObject``, deals with associations, web analytics
events), whichever client fetched it. A record missing what segsync cannot do without (an id, a
parseable ``lastmodifieddate``) is an :class:`~core.errors.InputError` naming the record and
field; an unparseable optional date is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from connectors.base import Contact, EngagementEvent
from connectors.hubspot import settings as S
from consent.signals import BASIS_FROM_POLICY, ConsentSignal
from core.emails import normalize_email
from core.errors import InputError
from core.times import now, parse_time_or_none

_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
# Contact properties that carry an email event's latest time, its kind, and the count of such emails.
EMAIL_DATE_EVENTS: tuple[tuple[str, str, str], ...] = (
    ("hs_email_last_send_date", "email_sent", "hs_email_delivered"),
    ("hs_email_last_open_date", "email_open", "hs_email_open"),
    ("hs_email_last_click_date", "email_click", "hs_email_click"),
)


def parse_time(value: Any) -> datetime | None:
    """A HubSpot timestamp (ISO 8601 with Z, or epoch milliseconds) as aware UTC; None if empty or bad."""
    return parse_time_or_none(value, epoch="ms")


def results_of(body: Any, what: str) -> list[Mapping[str, Any]]:
    """The ``results`` list of a HubSpot page, or a clear error saying which answer was malformed."""
    if not isinstance(body, Mapping) or not isinstance(body.get("results"), list):
        raise InputError(f"hubspot: the answer to {what} has no 'results' list: {str(body)[:200]!r}")
    bad = [r for r in body["results"] if not isinstance(r, Mapping)]
    if bad:
        raise InputError(f"hubspot: the answer to {what} has a result that is not an object: {str(bad[0])[:100]!r}")
    results: list[Mapping[str, Any]] = body["results"]
    return results


def next_after(body: Mapping[str, Any]) -> str | None:
    """``paging.next.after`` of a page, or None on the last page."""
    paging = body.get("paging")
    if isinstance(paging, Mapping) and isinstance(paging.get("next"), Mapping):
        after = paging["next"].get("after")
        return str(after) if after not in (None, "") else None
    return None


def record_id(raw: Mapping[str, Any], what: str) -> str:
    rid = raw.get("id")
    if rid in (None, ""):
        raise InputError(f"hubspot: a record in {what} has no id: {str(raw)[:200]!r}")
    return str(rid)


def modified_ms(raw: Mapping[str, Any], what: str) -> int:
    """A contact's ``lastmodifieddate`` in ms (the keyset the incremental pull pages on)."""
    props = raw.get("properties") or {}
    when = parse_time(props.get(S.MODIFIED_PROPERTY)) or parse_time(raw.get("updatedAt"))
    if when is None:
        raise InputError(f"hubspot: contact {raw.get('id')} in {what} has no parseable lastmodifieddate "
                         f"({props.get(S.MODIFIED_PROPERTY)!r})")
    return int(when.timestamp() * 1000)


def _split(value: Any) -> list[str]:
    return [x.strip() for x in str(value or "").split(";") if x.strip()]


def to_contact(raw: Mapping[str, Any], wanted: Iterable[str], what: str) -> Contact:
    """One ``SimplePublicObject`` as a :class:`Contact` with only the requested properties."""
    vid = record_id(raw, what)
    props = raw.get("properties") or {}
    if not isinstance(props, Mapping):
        raise InputError(f"hubspot: contact {vid} in {what} has properties that are not an object")
    names = set(wanted)
    return Contact(
        source=S.SOURCE,
        vendor_id=vid,
        email=normalize_email(props.get("email")),
        properties={k: v for k, v in props.items() if k in names},
        updated_at=parse_time(props.get(S.MODIFIED_PROPERTY)) or parse_time(raw.get("updatedAt")),
        created_at=parse_time(props.get("createdate")) or parse_time(raw.get("createdAt")),
        archived=bool(raw.get("archived")),
        previous_emails=tuple(e for e in (normalize_email(x) for x in _split(props.get("hs_additional_emails")))
                              if e),
    )


def merged_aliases(contact: Contact) -> list[Contact]:
    """The records merged into ``contact`` (from ``hs_merged_object_ids``): archived, pointing at it."""
    merged = _split(contact.properties.get("hs_merged_object_ids"))
    return [Contact(source=S.SOURCE, vendor_id=m, email=None, updated_at=contact.updated_at, archived=True,
                    merged_into=contact.vendor_id) for m in merged if m != contact.vendor_id]


def optout_signals(contact: Contact, marketing_properties: Iterable[str] = ()) -> list[ConsentSignal]:
    """Email opt-outs visible on the contact: the portal-wide ``hs_email_optout`` and per-subscription flags.

    The ``vendor_event_id`` depends only on the contact and the flag, so re-pulling the same opted-out
    contact gives the same signal (the ledger keeps it once).
    """
    if contact.email is None:
        return []
    flags = [("hs_email_optout", "unsubscribed from all email")]
    flags += [(name, f"unsubscribed from subscription {name.rsplit('_', 1)[-1]}") for name in marketing_properties]
    out = []
    for name, reason in flags:
        if str(contact.properties.get(name) or "").lower() != "true":
            continue
        out.append(ConsentSignal(
            source=S.SOURCE, email=contact.email, purpose="email_marketing", state="withdrawn", basis=BASIS_FROM_POLICY,
            occurred_at=contact.updated_at or now(), reason=f"HubSpot: {reason}",
            evidence={"property": name, "contact_id": contact.vendor_id},
            vendor_event_id=f"hubspot:{name}:{contact.vendor_id}"))
    return out


def property_events(contact: Contact) -> list[EngagementEvent]:
    """Email events HubSpot keeps as contact properties, with stable ids.

    With a count property (``hs_email_delivered``/``_open``/``_click``) a contact yields one event per
    counted email, ids ``...:n1..nN``: a re-pull repeats the same ids and a new email adds exactly one.
    HubSpot does not say when the older ones happened, so each new one is dated at the property's last
    date (the newest is exact; a backlog lands on that date). Without a count, the last date is one event.
    """
    out = []
    for prop, kind, count_prop in EMAIL_DATE_EVENTS:
        when = parse_time(contact.properties.get(prop))
        if when is None:
            continue
        count = _count(contact.properties.get(count_prop))
        if not count:
            out.append(EngagementEvent(
                source=S.SOURCE, contact_vendor_id=contact.vendor_id, type=kind, occurred_at=when,
                event_id=f"hubspot:{contact.vendor_id}:{kind}:{int(when.timestamp() * 1000)}", email=contact.email,
                attributes={"property": prop}))
            continue
        out.extend(EngagementEvent(
            source=S.SOURCE, contact_vendor_id=contact.vendor_id, type=kind, occurred_at=when,
            event_id=f"hubspot:{contact.vendor_id}:{kind}:n{n}", email=contact.email,
            attributes={"property": count_prop}) for n in range(1, count + 1))
    return out


def _count(value: Any) -> int:
    try:
        return max(0, min(int(float(str(value))), S.MAX_COUNT_EVENTS)) if value not in (None, "") else 0
    except ValueError:
        return 0


def lifecycle_events(contact: Contact) -> list[EngagementEvent]:
    """One ``lifecycle_stage`` event per stage the contact entered (``hs_lifecyclestage_<stage>_date``)."""
    out = []
    for stage, prop in zip(S.LIFECYCLE_STAGES, S.LIFECYCLE_DATE_PROPERTIES, strict=True):
        when = parse_time(contact.properties.get(prop))
        if when is not None:
            out.append(EngagementEvent(
                source=S.SOURCE, contact_vendor_id=contact.vendor_id, type="lifecycle_stage", occurred_at=when,
                event_id=f"hubspot:{contact.vendor_id}:lifecycle:{stage}:{int(when.timestamp() * 1000)}",
                email=contact.email, attributes={"stage": stage}))
    return out


def _won(stage: Mapping[str, Any]) -> bool:
    meta = stage.get("metadata")
    if not isinstance(meta, Mapping):
        return False
    if str(meta.get("isWon") or "").lower() == "true":
        return True
    try:
        probability = float(meta.get("probability"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return str(meta.get("isClosed") or "").lower() == "true" and probability == 1.0


def won_stages(body: Any, what: str) -> frozenset[str]:
    """Ids of deal stages that are won (closed with probability 1.0, or flagged won), in every pipeline."""
    won: set[str] = set()
    for pipeline in results_of(body, what):
        stages = pipeline.get("stages")
        if not isinstance(stages, list):
            raise InputError(f"hubspot: pipeline {pipeline.get('id')!r} in {what} has no 'stages' list")
        won.update(str(st["id"]) for st in stages if isinstance(st, Mapping) and st.get("id") and _won(st))
    return frozenset(won)


def deal_event(raw: Mapping[str, Any], types: Iterable[str], won: Iterable[str]) -> list[EngagementEvent]:
    """A won deal of a configured ``dealtype`` as one event per associated contact (value = amount).

    Only a deal in a won stage counts: an open deal's ``closedate`` is its *expected* close date, and
    custom pipelines have their own (numeric) stage ids, lost ones included.
    """
    vid = record_id(raw, "the deals list")
    props = raw.get("properties") or {}
    kind = str(props.get("dealtype") or "")
    if kind not in set(types) or str(props.get("dealstage") or "") not in set(won):
        return []
    when = parse_time(props.get("closedate"))
    if when is None:
        return []
    try:
        value: float | None = float(props["amount"]) if props.get("amount") not in (None, "") else None
    except (TypeError, ValueError):
        raise InputError(f"hubspot: deal {vid} has an amount that is not a number: {props.get('amount')!r}") from None
    contacts = ((raw.get("associations") or {}).get("contacts") or {}).get("results") or []
    return [EngagementEvent(source=S.SOURCE, contact_vendor_id=str(c.get("id")), type=kind, occurred_at=when,
                            value=value, event_id=f"hubspot:deal:{vid}:{c.get('id')}",
                            attributes={"deal_id": vid, "dealstage": props.get("dealstage")})
            for c in contacts if isinstance(c, Mapping) and c.get("id")]


_NOT_MARKETING = re.compile(r"one[ -]?to[ -]?one|transactional|notice|statement|receipt|confirmation|billing|"
                            r"service|account|security|legal|operational", re.IGNORECASE)


def non_marketing(definition: Mapping[str, Any]) -> bool:
    """A subscription type segsync must never touch: One-to-One, transactional, service notices.

    By ``purpose`` when HubSpot gives one (anything but "Marketing"), else by its name.
    """
    purpose = str(definition.get("purpose") or "")
    if purpose:
        return purpose.lower() != "marketing"
    return bool(_NOT_MARKETING.search(str(definition.get("name") or "")))


WEB_EVENT_ATTRIBUTES = {"hs_url": "url", "hs_session_id": "session_id"}  # e_visited_page property -> ours


def web_event(raw: Mapping[str, Any]) -> EngagementEvent | None:
    """A web analytics page view (``e_visited_page``) as a ``page_view`` event; None if incomplete."""
    when = parse_time(raw.get("occurredAt"))
    if when is None or not raw.get("objectId") or not raw.get("id"):
        return None
    found = raw.get("properties")
    props: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    return EngagementEvent(source=S.SOURCE, contact_vendor_id=str(raw["objectId"]), type="page_view",
                           occurred_at=when, event_id=f"hubspot:web:{raw['id']}",
                           # The store reads the neutral names (``url``, ``session_id``): without them every
                           # page view lost its page and session, and the calculator/pricing features were zero.
                           attributes={ours: props[theirs] for theirs, ours in WEB_EVENT_ATTRIBUTES.items()
                                       if props.get(theirs)})

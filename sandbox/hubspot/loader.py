"""Seeding the HubSpot portal from a generated book: contacts, merges, deals, web analytics."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sandbox.hubspot.schema import iso

if TYPE_CHECKING:
    from sandbox.book import Book
    from sandbox.hubspot.sim import HubSpotSim

MARKETING_SUBSCRIPTION_ID = "7001"


def subscription_definitions(portal_id: int) -> list[dict[str, Any]]:
    """The portal's email subscription types (communication preferences v3 shape)."""
    stamp = "2020-01-01T00:00:00.000Z"
    base = {"portalId": portal_id, "isActive": True, "isInternal": False, "createdAt": stamp, "updatedAt": stamp,
            "communicationMethod": "Email", "businessUnitId": 0}
    return [
        {**base, "id": MARKETING_SUBSCRIPTION_ID, "name": "Marketing Information", "isDefault": True,
         "description": "Marketing offers and updates.", "purpose": "Marketing"},
        {**base, "id": "7002", "name": "One to One", "isDefault": True, "description": "One to one emails.",
         "purpose": "Sales"},
    ]


def _person_props(p: Any, engagement: dict[str, Any]) -> dict[str, str]:
    props = {
        "email": p.email, "firstname": p.first_name, "lastname": p.last_name, "lifecyclestage": p.lifecyclestage,
        "hs_email_optout": "true" if p.crm_email_optout else "false", "age": str(p.age),
        "account_tier": p.account_tier, "aum": f"{p.aum:.2f}", "household_id": p.household_id,
    }
    if p.previous_email:
        props["hs_additional_emails"] = p.previous_email
    for name, value in engagement.items():
        props[name] = iso(value) if isinstance(value, datetime) else str(value)
    return props


def _engagement(book: Book) -> dict[str, dict[str, Any]]:
    """Per person: last open/click, page views, distinct sessions, last visit."""
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    sessions: dict[str, set[str]] = defaultdict(set)
    for e in book.events:  # events are sorted by time, so "last" is simply the latest assignment
        d = out[e.person_key]
        if e.type == "email_open":
            d["hs_email_last_open_date"] = e.occurred_at
        elif e.type == "email_click":
            d["hs_email_last_click_date"] = e.occurred_at
        elif e.type == "page_view":
            d["hs_analytics_num_page_views"] = d.get("hs_analytics_num_page_views", 0) + 1
            d["hs_analytics_last_visit_timestamp"] = e.occurred_at
            sessions[e.person_key].add(e.session_id or "")
    for key, ids in sessions.items():
        out[key]["hs_analytics_num_visits"] = len(ids)
    return out


def load_book(sim: HubSpotSim, book: Book) -> None:
    """Load CRM people in book order; losers of a merge are merged into their survivor afterwards."""
    engagement = _engagement(book)
    for p in book.people:
        if not p.in_crm:
            continue
        eng = engagement.get(p.key, {})
        # Engagement properties change the record, so it was last modified at its latest activity.
        stamps = [v for v in eng.values() if isinstance(v, datetime)]
        rec = sim.contacts.add(_person_props(p, eng), p.created_at, max([p.created_at, *stamps]))
        sim.index_email(rec)
        sim.person_ids[p.key] = rec.id
        if p.crm_email_optout:
            sim.sub_status.setdefault(p.email.lower(), {})[MARKETING_SUBSCRIPTION_ID] = _status(
                "NOT_SUBSCRIBED", "LEGITIMATE_INTEREST_OTHER", "Opted out before import")
    for p in book.people:
        if p.merged_into and p.key in sim.person_ids and p.merged_into in sim.person_ids:
            sim.merge(sim.person_ids[p.merged_into], sim.person_ids[p.key], at=book.as_of)
    deal_id = 1_000_001
    for n, e in enumerate(ev for ev in book.events if ev.type in ("deposit", "upgrade")):
        contact = sim.person_ids.get(e.person_key)
        if contact is None:
            continue
        rec = sim.deals.add({"dealname": f"{e.type.title()} {n + 1}", "amount": f"{e.value or 0:.2f}",
                             "closedate": iso(e.occurred_at), "dealtype": e.type, "dealstage": "closedwon",
                             "pipeline": "default"}, e.occurred_at, record_id=str(deal_id))
        rec.associations["contacts"] = [contact]
        sim.contacts.records[contact].associations.setdefault("deals", []).append(rec.id)
        deal_id += 1
    for n, e in enumerate(ev for ev in book.events if ev.type == "page_view"):
        contact = sim.person_ids.get(e.person_key)
        if contact is None:
            continue
        sim.web_events.append({
            "objectType": "CONTACT", "objectId": contact, "eventType": "e_visited_page",
            "occurredAt": iso(e.occurred_at), "id": f"pv-{n + 1:09d}",
            "properties": {"hs_url": f"https://advisor.example.com{e.url}", "hs_session_id": e.session_id or ""},
        })


def _status(status: str, legal_basis: str | None, explanation: str | None) -> dict[str, Any]:
    return {"status": status, "legalBasis": legal_basis, "legalBasisExplanation": explanation,
            "sourceOfStatus": "SUBSCRIPTION_STATUS"}

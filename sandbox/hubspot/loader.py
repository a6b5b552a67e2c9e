"""Seeding the HubSpot portal from a generated book: contacts, merges, deals, web analytics.

Engagement lives on the contact as HubSpot keeps it (knowledge base "HubSpot's default contact
properties"; the names and types as the properties API lists them): counts ``hs_email_delivered``
("Marketing emails delivered"), ``hs_email_open`` ("Marketing emails opened"), ``hs_email_click``
("Marketing emails clicked"), all ``number``; the last dates ``hs_email_last_send_date``,
``hs_email_last_open_date``, ``hs_email_last_click_date``; and web analytics
``hs_analytics_num_page_views``, ``hs_analytics_num_visits`` (sessions) and
``hs_analytics_last_visit_timestamp``. Deals: :mod:`sandbox.hubspot.deals`.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sandbox.hubspot import deals
from sandbox.hubspot.schema import iso

if TYPE_CHECKING:
    from sandbox.book import Book, BookEvent
    from sandbox.hubspot.sim import HubSpotSim

MARKETING_SUBSCRIPTION_ID = "7001"
ONE_TO_ONE_SUBSCRIPTION_ID = "7002"
NOTICES_SUBSCRIPTION_ID = "7003"  # transactional-like: not marketing


def subscription_definitions(portal_id: int, kind: str = "standard") -> list[dict[str, Any]]:
    """The portal's email subscription types (communication preferences v3 ``SubscriptionDefinition`` shape).

    HubSpot's spec (``Communication Preferences/Subscriptions/Rollouts/147906/v3/subscriptions.json``)
    requires id, name, description, isActive, isDefault, isInternal, createdAt, updatedAt; ``purpose`` is
    optional. Every portal has "One to One" (sales email sent from the CRM) besides marketing types, and
    many keep a non-marketing, transactional-like type for account notices. ``kind="standard"`` marks each
    type's purpose; ``kind="legacy"`` leaves ``purpose`` out (as the spec allows), so nothing says which
    type is marketing. Inferred: the purpose labels "Sales" and "Customer Service", and the notice type.
    """
    if kind not in ("standard", "legacy"):
        raise ValueError("subscription_types must be 'standard' or 'legacy' (no purpose on any type)")
    stamp = "2020-01-01T00:00:00.000Z"
    base = {"portalId": portal_id, "isActive": True, "isInternal": False, "createdAt": stamp, "updatedAt": stamp,
            "communicationMethod": "Email", "businessUnitId": 0}
    types = [
        {**base, "id": MARKETING_SUBSCRIPTION_ID, "name": "Marketing Information", "isDefault": True,
         "description": "Marketing offers and updates.", "purpose": "Marketing"},
        {**base, "id": ONE_TO_ONE_SUBSCRIPTION_ID, "name": "One to One", "isDefault": True,
         "description": "One to one emails.", "purpose": "Sales"},
        {**base, "id": NOTICES_SUBSCRIPTION_ID, "name": "Account and statement notices", "isDefault": False,
         "description": "Statements, confirmations and notices about your accounts.", "purpose": "Customer Service"},
    ]
    if kind == "legacy":
        for t in types:
            del t["purpose"]
    return types


def _person_props(p: Any, engagement: dict[str, Any]) -> dict[str, str]:
    props = {
        "email": p.email, "firstname": p.first_name, "lastname": p.last_name, "lifecyclestage": p.lifecyclestage,
        "hs_email_optout": "true" if p.crm_email_optout else "false", "age": str(p.age), "age_band": p.age_band,
        "account_tier": p.account_tier, "aum": f"{p.aum:.2f}", "household_id": p.household_id,
    }
    if p.previous_email:
        props["hs_additional_emails"] = p.previous_email
    for name, value in engagement.items():
        props[name] = iso(value) if isinstance(value, datetime) else str(value)
    return props


def _stage_dates(stage: str, created: datetime, as_of: datetime) -> dict[str, datetime]:
    """``hs_lifecyclestage_<stage>_date`` for the stages a person passed through (lead, then later ones)."""
    path = {"lead": ("lead",), "opportunity": ("lead", "opportunity"), "customer": ("lead", "opportunity", "customer")}
    offsets = {"lead": 0, "opportunity": 7, "customer": 30}
    latest = max(created, as_of - timedelta(days=1))
    return {f"hs_lifecyclestage_{s}_date": min(created + timedelta(days=offsets[s]), latest)
            for s in path.get(stage, (stage,))}


def _engagement(book: Book) -> tuple[dict[str, dict[str, Any]], list[BookEvent], list[BookEvent]]:
    """One pass over the events: per person last open/click/send, counts, sessions; deals; page views."""
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    sessions: dict[str, set[str]] = defaultdict(set)
    money: list[BookEvent] = []
    views: list[BookEvent] = []
    last_and_count = {"email_sent": ("hs_email_last_send_date", "hs_email_delivered"),
                      "email_open": ("hs_email_last_open_date", "hs_email_open"),
                      "email_click": ("hs_email_last_click_date", "hs_email_click"),
                      "page_view": ("hs_analytics_last_visit_timestamp", "hs_analytics_num_page_views")}
    for e in book.events:  # events are sorted by time, so "last" is simply the latest assignment
        names = last_and_count.get(e.type)
        if names is None:
            money.append(e)
            continue
        d = out[e.person_key]
        d[names[0]] = e.occurred_at
        d[names[1]] = d.get(names[1], 0) + 1
        if e.type == "page_view":
            sessions[e.person_key].add(e.session_id or "")
            views.append(e)
    for key, ids in sessions.items():
        out[key]["hs_analytics_num_visits"] = len(ids)
    return out, money, views


def load_book(sim: HubSpotSim, book: Book) -> None:
    """Load CRM people in book order; losers of a merge are merged into their survivor afterwards."""
    engagement, money, views = _engagement(book)
    for p in book.people:
        if not p.in_crm:
            continue
        eng = {**engagement.get(p.key, {}), **_stage_dates(p.lifecyclestage, p.created_at, book.as_of)}
        # Engagement properties change the record, so it was last modified at its latest activity.
        stamps = [v for v in eng.values() if isinstance(v, datetime)]
        rec = sim.contacts.add(_person_props(p, eng), p.created_at, max([p.created_at, *stamps]))
        sim.index_email(rec)
        sim.person_ids[p.key] = rec.id
    for p in book.people:
        if p.merged_into and p.key in sim.person_ids and p.merged_into in sim.person_ids:
            sim.merge(sim.person_ids[p.merged_into], sim.person_ids[p.key], at=book.as_of)
    deals.seed_deals(sim, book, money, sim.deal_noise)
    ids = sim.person_ids
    sim.web_events.extend((e.occurred_at, ids[e.person_key], e.url or "/", e.session_id or "")
                          for e in views if e.person_key in ids)

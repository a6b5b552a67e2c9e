"""Deal pipelines and the deals a real advisor portal holds: won, lost and still open, in two pipelines.

What HubSpot documents (developers.hubspot.com, "CRM API | Pipelines", and the published OpenAPI file
``PublicApiSpecs/CRM/Pipelines/Rollouts/145896/v3/pipelines.json``):

* ``GET /crm/v3/pipelines/deals`` answers ``{results: [Pipeline]}``; a pipeline has ``id``, ``label``,
  ``displayOrder``, ``stages``, ``createdAt``, ``updatedAt``, ``archived``; every account starts with the
  pipeline whose id is ``default``, and Starter and above may add more.
* A stage has ``id``, ``label``, ``displayOrder``, ``metadata``, ``createdAt``, ``updatedAt``, ``archived``;
  deal stage metadata carries ``isClosed`` and ``probability`` (HubSpot returns both as strings,
  ``"true"``/``"false"`` and ``"0.0"``..``"1.0"``). A won stage is closed with probability 1.0, a lost one
  closed with probability 0.0. Stage ids are per pipeline: the default pipeline's are the well-known
  words (``closedwon``, ``closedlost``...); stages of a pipeline made in the UI get generated numeric ids.
* The default pipeline's stages and probabilities (20/40/60/80/90/100/0 %) are HubSpot's defaults as
  shown in its knowledge base ("Set up and customize your deal pipelines and deal stages").
* ``closedate`` on an open deal is the expected close date, which is often in the past (VENDORS.md,
  "Facts learned since"; HubSpot's deal property description: "Date the deal was closed. Set
  automatically by HubSpot" when it moves to a closed stage, otherwise set by the owner).

Inferred (not in the docs): the custom pipeline's generated ids and labels below, and how many
deals stay open or are lost - chosen so that every kind exists in a small book.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sandbox.hubspot.schema import iso

if TYPE_CHECKING:
    from sandbox.book import Book, BookEvent
    from sandbox.hubspot.sim import HubSpotSim

_EPOCH = "1970-01-01T00:00:00Z"  # HubSpot: "The stages on default pipelines will have createdAt = 0"
CUSTOM_PIPELINE = "81234567"

# (stage id, label, probability, closed)
DEFAULT_STAGES = [("appointmentscheduled", "Appointment Scheduled", "0.2", False),
                  ("qualifiedtobuy", "Qualified To Buy", "0.4", False),
                  ("presentationscheduled", "Presentation Scheduled", "0.6", False),
                  ("decisionmakerboughtin", "Decision Maker Bought-In", "0.8", False),
                  ("contractsent", "Contract Sent", "0.9", False),
                  ("closedwon", "Closed Won", "1.0", True),
                  ("closedlost", "Closed Lost", "0.0", True)]
CUSTOM_STAGES = [("81234568", "Discovery meeting", "0.1", False),
                 ("81234569", "Transfer paperwork sent", "0.7", False),
                 ("81234570", "Funds received", "1.0", True),
                 ("81234571", "Client declined", "0.0", True)]


def _stage(stage_id: str, label: str, probability: str, closed: bool, order: int, created: str) -> dict[str, Any]:
    return {"id": stage_id, "label": label, "displayOrder": order, "createdAt": created, "updatedAt": created,
            "archived": False, "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
            "metadata": {"isClosed": "true" if closed else "false", "probability": probability}}


def pipelines() -> list[dict[str, Any]]:
    """The portal's deal pipelines: HubSpot's default one and an advisor's custom "Asset transfers"."""
    custom_created = "2023-03-14T09:00:00.000Z"
    return [
        {"id": "default", "label": "Sales Pipeline", "displayOrder": 0, "createdAt": _EPOCH, "updatedAt": _EPOCH,
         "archived": False, "stages": [_stage(*s, order=i, created=_EPOCH) for i, s in enumerate(DEFAULT_STAGES)]},
        {"id": CUSTOM_PIPELINE, "label": "Asset transfers", "displayOrder": 1, "createdAt": custom_created,
         "updatedAt": custom_created, "archived": False,
         "stages": [_stage(*s, order=i, created=custom_created) for i, s in enumerate(CUSTOM_STAGES)]},
    ]


def stage_ids() -> list[str]:
    """Every stage id of every pipeline (the ``dealstage`` property's options)."""
    return [s[0] for s in DEFAULT_STAGES + CUSTOM_STAGES]


def won_stages() -> set[str]:
    """Stage ids that are closed with probability 1.0 (won), in any pipeline."""
    return {s[0] for s in DEFAULT_STAGES + CUSTOM_STAGES if s[3] and float(s[2]) == 1.0}


def _pick(key: str, salt: str) -> int:
    """A stable number in [0, 100) for a person and a purpose (no RNG state to keep in step)."""
    return int(hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()[:8], 16) % 100


def seed_deals(sim: HubSpotSim, book: Book, money: list[BookEvent], noise: bool) -> None:
    """Won deals for the book's deposits/upgrades (the truth); with ``noise``, open and lost ones too.

    Every third won deal sits in the custom pipeline. Open and lost deals are not in the book's hidden
    truth (nothing was deposited); open ones carry an expected close date that has already passed.
    """
    deal_id = 1_000_001

    def add(person_key: str, props: dict[str, str], created: datetime) -> None:
        nonlocal deal_id
        contact = sim.person_ids.get(person_key)
        if contact is None:
            return
        rec = sim.deals.add(props, created, record_id=str(deal_id))
        rec.associations["contacts"] = [contact]
        sim.contacts.records[contact].associations.setdefault("deals", []).append(rec.id)
        deal_id += 1

    for n, e in enumerate(money):
        custom = n % 3 == 2
        add(e.person_key, {"dealname": f"{e.type.title()} {n + 1}", "amount": f"{e.value or 0:.2f}",
                           "closedate": iso(e.occurred_at), "dealtype": e.type,
                           "dealstage": CUSTOM_STAGES[2][0] if custom else "closedwon",
                           "pipeline": CUSTOM_PIPELINE if custom else "default"}, e.occurred_at)
    if not noise:
        return
    for p in book.people:
        roll = _pick(p.key, "deal")
        if roll >= 12 or not p.in_crm:
            continue
        created = max(p.created_at, book.as_of - timedelta(days=200 + roll * 5))
        expected = min(created + timedelta(days=30 + roll * 3), book.as_of - timedelta(days=1 + roll))
        kind = "upgrade" if roll % 2 else "deposit"
        custom = roll % 3 == 0
        if roll < 6:  # still open: the expected close date has passed, nothing was won
            stage = CUSTOM_STAGES[1][0] if custom else DEFAULT_STAGES[roll % 5][0]
            label = "Open"
        else:
            stage = CUSTOM_STAGES[3][0] if custom else "closedlost"
            label = "Lost"
        add(p.key, {"dealname": f"{label} {kind} {p.key}", "amount": f"{1000 * (roll + 1):.2f}",
                    "closedate": iso(expected), "dealtype": kind, "dealstage": stage,
                    "pipeline": CUSTOM_PIPELINE if custom else "default"}, created)

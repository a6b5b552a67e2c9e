"""The Wealthbox workspace behind the simulator: contacts of four types, households, tags, custom fields,
events and opportunities. Plain dicts rendered by the ``*_json`` helpers; one lock guards them all.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.redtail.crmkit import CrmPerson

CONTACT_TYPES = ("Person", "Household", "Organization", "Trust")
HOUSEHOLD_TITLES = ("Head", "Spouse", "Partner", "Child", "Grandchild", "Grandparent", "Parent", "Sibling",
                    "Other Dependent")
STAGE_OF = {"lead": "Prospect", "opportunity": "Prospect", "customer": "Client"}


def iso(t: datetime) -> str:
    """Wealthbox's timestamp format (ISO 8601 with offset, seconds)."""
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")  # isoformat: fast


@dataclass
class Record:
    """One contact of any type; households also list members."""

    id: int
    type: str
    fields: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    person_key: str | None = None
    tags: list[str] = field(default_factory=list)
    custom: dict[int, Any] = field(default_factory=dict)  # custom field id -> value
    household_id: int | None = None  # for a Person in a household
    members: list[dict[str, Any]] = field(default_factory=list)  # for a Household: [{id, title}]
    deleted_at: datetime | None = None  # deleted contacts leave the default listing


class Workspace:
    """All records of one Wealthbox workspace."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.contacts: dict[int, Record] = {}
        self.tags: dict[str, int] = {}  # tag name -> id (tags are created on first use)
        self.custom_fields: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.opportunities: list[dict[str, Any]] = []
        self.by_person: dict[str, int] = {}
        self.household_of: dict[str, int] = {}
        self._next = {"contact": 2_000_001, "tag": 501, "field": 701, "event": 30_001, "opportunity": 40_001,
                      "email": 10_001}

    def next_id(self, kind: str) -> int:
        """The next id of one record kind."""
        value = self._next[kind]
        self._next[kind] += 1
        return value

    def tag_id(self, name: str) -> int:
        """The id of a tag, creating it (Wealthbox creates unknown tags on write)."""
        if name not in self.tags:
            self.tags[name] = self.next_id("tag")
        return self.tags[name]

    def define_field(self, name: str, field_type: str = "text_field", document_type: str = "Contact") -> int:
        """Create a custom field (an admin does this in Wealthbox's settings; see the package docstring)."""
        with self.lock:
            for fid, f in self.custom_fields.items():
                if f["name"] == name and f["document_type"] == document_type:
                    return fid
            fid = self.next_id("field")
            self.custom_fields[fid] = {"id": fid, "name": name, "field_type": field_type,
                                       "document_type": document_type}
            return fid

    # ---- seeding ---------------------------------------------------------------------------------
    def load(self, people: list[CrmPerson], as_of: datetime) -> None:
        """Persons, their households, an AUM custom field, events (reviews) and opportunities (money)."""
        aum = self.define_field("Assets Under Management")
        with self.lock:
            households: dict[str, Record] = {}
            for p in people:
                rec = self._person(p)
                rec.custom[aum] = f"{p.aum:.2f}"
                if p.household is not None:
                    hh = households.get(p.household)
                    if hh is None:
                        hh = households[p.household] = self._add("Household", {"name": f"{p.last_name} Household"},
                                                                 p.created_at, p.updated_at)
                    title = "Head" if not hh.members else "Spouse" if len(hh.members) == 1 else "Child"
                    hh.members.append({"id": rec.id, "title": title})
                    hh.updated_at = max(hh.updated_at, p.updated_at)
                    rec.household_id = hh.id
                    self.household_of[p.key] = hh.id
                self._money(rec, p)
            self._add("Organization", {"name": "Sandbox Custody LLC"}, as_of - timedelta(days=900), as_of)
            self._add("Trust", {"name": "Harbor Family Trust"}, as_of - timedelta(days=600), as_of)

    def _add(self, kind: str, fields: dict[str, Any], created: datetime, updated: datetime) -> Record:
        rec = Record(self.next_id("contact"), kind, fields, created, updated)
        self.contacts[rec.id] = rec
        return rec

    def _person(self, p: CrmPerson) -> Record:
        emails = [{"id": self.next_id("email"), "address": a, "principal": n == 0,
                   "kind": "Personal" if n == 0 else "Work"} for n, a in enumerate(p.emails)]
        fields = {"first_name": p.first_name, "last_name": p.last_name, "birth_date": p.birth_date.isoformat(),
                  "contact_type": STAGE_OF.get(p.lifecycle, "Client"), "email_addresses": emails}
        rec = self._add("Person", fields, p.created_at, p.updated_at)
        rec.person_key = p.key
        self.by_person[p.key] = rec.id
        return rec

    def _money(self, rec: Record, p: CrmPerson) -> None:
        # Deposits become completed review meetings (events), upgrades won opportunities.
        link = [{"id": rec.id, "type": "Contact", "name": f"{p.first_name} {p.last_name}"}]
        for e in p.events:
            stamp = {"created_at": iso(e.occurred_at), "updated_at": iso(e.occurred_at), "linked_to": link}
            if e.type == "deposit":
                self.events.append({"id": self.next_id("event"), "title": "Deposit review",
                                    "starts_at": iso(e.occurred_at), "state": "completed",
                                    "ends_at": iso(e.occurred_at + timedelta(minutes=30)),
                                    "event_category": "Review", "description": f"Deposit ${e.value:,.2f}", **stamp})
            else:
                self.opportunities.append({"id": self.next_id("opportunity"), "name": "Service upgrade",
                                           "target_close": iso(e.occurred_at), "probability": 100, "stage": "Won",
                                           "amounts": [{"amount": round(e.value, 2), "currency": "$", "kind": "Fee"}],
                                           **stamp})

    # ---- rendering -------------------------------------------------------------------------------
    def contact_json(self, rec: Record) -> dict[str, Any]:
        """A contact as ``GET /contacts`` returns it."""
        out: dict[str, Any] = {
            "id": rec.id, "type": rec.type, "created_at": iso(rec.created_at), "updated_at": iso(rec.updated_at),
            "deleted_at": iso(rec.deleted_at) if rec.deleted_at else None,
            "status": "Active", "contact_type": rec.fields.get("contact_type", "Client"),
            "tags": [{"id": self.tags[t], "name": t} for t in rec.tags],
            "custom_fields": [{"id": fid, "name": self.custom_fields[fid]["name"], "value": value,
                               "document_type": "Contact", "document_id": rec.id}
                              for fid, value in sorted(rec.custom.items()) if fid in self.custom_fields],
            "email_addresses": [dict(e) for e in rec.fields.get("email_addresses", [])],
        }
        if rec.type == "Person":
            out.update(first_name=rec.fields["first_name"], last_name=rec.fields["last_name"],
                       name=f"{rec.fields['first_name']} {rec.fields['last_name']}",
                       birth_date=rec.fields["birth_date"], household=self._household_ref(rec))
        else:
            out["name"] = rec.fields["name"]
        if rec.type == "Household":
            out["members"] = [self._member_json(m) for m in rec.members]
        return out

    def _member_json(self, m: dict[str, Any]) -> dict[str, Any]:
        person = self.contacts[m["id"]]
        return {"id": person.id, "first_name": person.fields["first_name"], "last_name": person.fields["last_name"],
                "title": m["title"], "type": "Person"}

    def _household_ref(self, rec: Record) -> dict[str, Any] | None:
        if rec.household_id is None:
            return None
        hh = self.contacts[rec.household_id]
        title = next((m["title"] for m in hh.members if m["id"] == rec.id), "Other Dependent")
        return {"name": hh.fields["name"], "title": title, "id": hh.id,
                "members": [self._member_json(m) for m in hh.members]}

"""The Redtail database behind the simulator: contacts, emails, families, accounts, notes, activities, tags, UDFs.

Shapes follow Redtail's public v1 API (see :mod:`sandbox.redtail` for sources); everything is plain
dicts rendered by the ``*_json`` helpers. One lock guards the data, because tests read and change it
from their own thread while the server thread answers.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.redtail.crmkit import CrmPerson

STATUS_IDS = {"lead": 3, "opportunity": 2, "customer": 1}  # Redtail's contact statuses: 1 Active client ...
CATEGORY_IDS = {"core": 1, "premier": 2, "private": 3}


def iso(t: datetime) -> str:
    """Redtail's timestamp format (UTC, milliseconds, ``Z``)."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")  # isoformat: fast


@dataclass
class Contact:
    """One Redtail contact (an individual) and its dependent records."""

    id: int
    person_key: str
    first_name: str
    last_name: str
    dob: str
    status_id: int
    category_id: int
    created_at: datetime
    updated_at: datetime
    emails: list[dict[str, Any]]
    family_id: int | None = None
    accounts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)
    activities: list[dict[str, Any]] = field(default_factory=list)
    tag_memberships: dict[int, int] = field(default_factory=dict)  # membership id -> tag id
    udfs: dict[int, dict[str, Any]] = field(default_factory=dict)  # contact udf id -> {field id, value}
    deleted: bool = False


class Database:
    """All records of one Redtail database (one firm)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.contacts: dict[int, Contact] = {}
        self.families: dict[int, dict[str, Any]] = {}
        self.tags: dict[int, dict[str, Any]] = {}  # tag group id -> {id, name, description}
        self.udf_fields: dict[int, dict[str, Any]] = {}  # contact UDF field id -> {id, name}
        self.by_person: dict[str, int] = {}
        self.household_of: dict[str, int] = {}  # person key -> family id (the hidden truth, for tests)
        self._next = {"contact": 1001, "email": 5001, "family": 301, "account": 7001, "note": 9001,
                      "activity": 12001, "tag": 41, "membership": 60001, "udf_field": 81, "udf": 90001}

    def next_id(self, kind: str) -> int:
        """The next id of one record kind (ids are per kind and never reused)."""
        value = self._next[kind]
        self._next[kind] += 1
        return value

    # ---- seeding ---------------------------------------------------------------------------------
    def load(self, people: list[CrmPerson]) -> None:
        """Create contacts, families, accounts, notes and activities for ``people``."""
        with self.lock:
            families: dict[str, int] = {}
            for p in people:
                c = Contact(self.next_id("contact"), p.key, p.first_name, p.last_name, p.birth_date.isoformat(),
                            STATUS_IDS.get(p.lifecycle, 1), CATEGORY_IDS.get(p.tier, 1), p.created_at,
                            p.updated_at, [])
                for n, address in enumerate(p.emails):
                    c.emails.append({"id": self.next_id("email"), "contact_id": c.id, "address": address,
                                     "email_type": 1 if n == 0 else 2,
                                     "email_type_description": "Home" if n == 0 else "Work",
                                     "is_primary": n == 0, "is_preferred": n == 0,
                                     "created_at": iso(p.created_at), "updated_at": iso(p.created_at)})
                self._seed_money(c, p)
                if p.household is not None:
                    fam = families.get(p.household)
                    if fam is None:
                        fam = families[p.household] = self.next_id("family")
                        self.families[fam] = {"id": fam, "name": f"{p.last_name} Family", "members": [],
                                              "created_at": iso(p.created_at), "updated_at": iso(p.created_at)}
                    members = self.families[fam]["members"]
                    members.append({"id": len(members) + 1, "contact_id": c.id, "hoh": not members,
                                    "relationship": "Head" if not members else "Spouse" if len(members) == 1
                                    else "Other Dependent", "first_name": c.first_name, "last_name": c.last_name})
                    c.family_id = fam
                    self.household_of[p.key] = fam
                self.contacts[c.id] = c
                self.by_person[p.key] = c.id

    def _seed_money(self, c: Contact, p: CrmPerson) -> None:
        # Account values split over one or two accounts; deposits become notes, upgrades activities.
        shares = (1.0,) if p.aum < 250_000 else (0.7, 0.3)
        for n, share in enumerate(shares):
            c.accounts.append({"id": self.next_id("account"), "contact_id": c.id, "number": f"X{c.id}{n:02d}",
                               "balance": round(p.aum * share, 2), "account_type": ("Individual", "IRA")[n],
                               "company": "Sandbox Custody", "tax_status": ("Taxable", "Tax Deferred")[n],
                               "created_at": iso(p.created_at), "updated_at": iso(p.created_at)})
        for e in p.events:
            if e.type == "deposit":
                c.notes.append({"id": self.next_id("note"), "category_id": 2, "category": "Deposit",
                                "note_type": 1, "note_type_description": "Note",
                                "body": f"Deposit received: ${e.value:,.2f}", "pinned": False, "draft": False,
                                "deleted": False, "created_at": iso(e.occurred_at), "updated_at": iso(e.occurred_at)})
            else:
                c.activities.append({"id": self.next_id("activity"), "subject": "Account upgrade",
                                     "description": f"Upgraded service tier (value ${e.value:,.2f})",
                                     "category_id": 4, "start_date": iso(e.occurred_at),
                                     "end_date": iso(e.occurred_at), "completed": True,
                                     "linked_contacts": [{"contact_id": c.id}],
                                     "created_at": iso(e.occurred_at), "updated_at": iso(e.occurred_at)})

    # ---- rendering -------------------------------------------------------------------------------
    def contact_json(self, c: Contact, include: set[str]) -> dict[str, Any]:
        """A contact as ``GET /contacts`` returns it, with the ``include``d dependent records."""
        out: dict[str, Any] = {
            "id": c.id, "type": "Crm::Contact::Individual", "salutation": None, "first_name": c.first_name,
            "middle_name": None, "last_name": c.last_name, "full_name": f"{c.first_name} {c.last_name}",
            "nickname": None, "company_name": None, "dob": c.dob, "tax_id": None, "status_id": c.status_id,
            "category_id": c.category_id, "source_id": None, "servicing_advisor_id": 1, "writing_advisor_id": 1,
            "family_id": c.family_id, "deleted": c.deleted, "created_at": iso(c.created_at),
            "updated_at": iso(c.updated_at),
        }
        if "emails" in include:
            out["emails"] = [dict(e) for e in c.emails]
        if "family" in include:
            out["family"] = self.family_json(c.family_id) if c.family_id else None
        if "tag_memberships" in include:
            out["tag_memberships"] = self.memberships_json(c)
        if "activities" in include:
            out["activities"] = [dict(a) for a in c.activities]
        return out

    def family_json(self, family_id: int) -> dict[str, Any]:
        """A family (Redtail's household) with its members."""
        fam = self.families[family_id]
        return {**fam, "members": [dict(m) for m in fam["members"]]}

    def memberships_json(self, c: Contact) -> list[dict[str, Any]]:
        """A contact's tag memberships, each naming its tag group."""
        return [{"id": mid, "contact_id": c.id, "tag_id": tid, "name": self.tags[tid]["name"]}
                for mid, tid in sorted(c.tag_memberships.items()) if tid in self.tags]

    def udfs_json(self, c: Contact) -> list[dict[str, Any]]:
        """A contact's user-defined field values."""
        return [{"id": uid, "contact_id": c.id, "contact_udf_field_id": u["field_id"],
                 "field_name": self.udf_fields[u["field_id"]]["name"], "field_value": u["value"]}
                for uid, u in sorted(c.udfs.items())]

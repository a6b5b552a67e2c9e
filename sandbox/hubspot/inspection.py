"""Read-only helpers tests use to look at the simulated portal (never used by the HTTP routes)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sandbox.hubspot import loader

if TYPE_CHECKING:
    from sandbox.hubspot.store import ObjectStore


class Inspection:
    """Mixed into :class:`~sandbox.hubspot.sim.HubSpotSim`; every method takes the portal lock."""

    lock: threading.RLock
    contacts: ObjectStore
    email_index: dict[str, str]
    lists: dict[str, dict[str, Any]]
    memberships: dict[str, dict[str, datetime]]
    sub_status: dict[str, dict[str, dict[str, Any]]]
    portal_optouts: set[str]
    person_ids: dict[str, str]
    clock: Callable[[], datetime]

    def contact_by_email(self, email: str) -> dict[str, Any] | None:
        """The live contact with this email (case-insensitive): {id, properties, archived, ...}."""
        with self.lock:
            rid = self.email_index.get(email.strip().lower())
            rec = self.contacts.records.get(rid) if rid else None
            return None if rec is None else {"id": rec.id, "properties": dict(rec.properties),
                                              "updatedAt": rec.updated_at, "archived": rec.archived}

    def properties_of(self, contact_id: str) -> dict[str, str]:
        """A copy of every stored property of one contact (archived ones too)."""
        with self.lock:
            return dict(self.contacts.records[str(contact_id)].properties)

    def property_values(self, name: str) -> dict[str, list[str]]:
        """``{contact id: [values]}`` of a (multi-select) property on live contacts, e.g. segsync_segments."""
        with self.lock:
            return {r.id: r.properties[name].split(";") for r in self.contacts.live() if r.properties.get(name)}

    def list_members(self, name_or_id: str) -> set[str]:
        """Record ids in a list, by list name or id."""
        with self.lock:
            lst = self.lists.get(name_or_id) or next((x for x in self.lists.values() if x["name"] == name_or_id), None)
            return set(self.memberships.get(lst["listId"], {})) if lst else set()

    @property
    def optouts(self) -> set[str]:
        """Lower-cased emails that may not get marketing email: opted out of all, or of "Marketing Information"."""
        with self.lock:
            out = {r.properties.get("email", "").lower() for r in self.contacts.live()
                   if r.properties.get("hs_email_optout") == "true"} | self.portal_optouts
            out |= {email for email, subs in self.sub_status.items()
                    if subs.get(loader.MARKETING_SUBSCRIPTION_ID, {}).get("status") == "NOT_SUBSCRIBED"}
            return out

    def contact_id_for(self, person_key: str) -> str | None:
        """The contact id a book person was loaded as."""
        return self.person_ids.get(person_key)

    def since(self, days: float) -> datetime:
        """Convenience for tests: now minus ``days``."""
        return self.clock() - timedelta(days=days)

"""Contact merges and restores (mixed into :class:`~sandbox.hubspot.sim.HubSpotSim`).

What HubSpot documents: the developer changelog "Updated merge functionality for contacts and companies"
says a merge now creates a new record with a new id into which both records are merged; fetching either
original id returns the merged record with its new id; the primary's latest property values win while
values of both are merged onto the new record, and the primary's associations are kept first. The
webhooks v3 spec lists ``contact.restore`` beside ``contact.deletion``; HubSpot's knowledge base says a
deleted contact can be restored for 90 days. Inferred: the new record keeps the primary's create date
and takes the next free id; list memberships follow the merge.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from sandbox.hubspot.errors import validation

if TYPE_CHECKING:
    from sandbox.hubspot.store import ObjectStore, Record


class Merges:
    """Merge and restore contacts; relies on the portal's stores, indexes and lock."""

    lock: threading.RLock
    contacts: ObjectStore
    deals: ObjectStore
    memberships: dict[str, dict[str, datetime]]
    person_ids: dict[str, str]
    email_index: dict[str, str]
    merge_new_id: bool
    clock: Callable[[], datetime]
    resolve: Callable[..., Record | None]
    archive: Callable[[ObjectStore, Iterable[str]], None]
    index_email: Callable[[Record], None]

    def merge(self, primary_id: str, merge_id: str, at: datetime | None = None, new_id: bool | None = None) -> Record:
        """Merge contact ``merge_id`` into ``primary_id`` and return the resulting record.

        ``new_id`` (default: the portal's ``merge_new_id``) makes a new record as HubSpot does now (see the
        module docstring); without it the primary keeps its id, as HubSpot merges used to.
        """
        with self.lock:
            primary = self.resolve(self.contacts, primary_id)
            loser = self.resolve(self.contacts, merge_id)
            if primary is None or loser is None or primary is loser:
                raise validation(f"Cannot merge {merge_id} into {primary_id}: both must exist and differ")
            at = at or self.clock()
            old = [primary, loser]
            fresh = self.merge_new_id if new_id is None else new_id
            merged = [primary.id, loser.id] if fresh else [loser.id]
            for rec in old:
                merged += [x for x in (rec.properties.get("hs_merged_object_ids") or "").split(";") if x]
            extra = [x for rec in old for x in (rec.properties.get("hs_additional_emails") or "").split(";") if x]
            if loser.properties.get("email"):
                extra.append(loser.properties["email"])
            if fresh:  # HubSpot today: a new record replaces both
                props = {**loser.properties, **{k: v for k, v in primary.properties.items() if v not in (None, "")}}
                result = self.contacts.add(props, primary.created_at, at)
                for rec in old:
                    self._hand_over(rec, result)
                for key, cid in list(self.person_ids.items()):  # the book's survivor is the new record now
                    if cid == primary.id:
                        self.person_ids[key] = result.id
            else:
                result = primary
                self._hand_over(loser, result)
            result.properties["hs_merged_object_ids"] = ";".join(dict.fromkeys(merged))
            result.properties["hs_additional_emails"] = ";".join(dict.fromkeys(extra))
            self.index_email(result)
            self.contacts.touch(result, at)
            return result

    def _hand_over(self, rec: Record, survivor: Record) -> None:
        """Retire ``rec`` into ``survivor``: archived, redirected, its email, deals and lists moved over."""
        self.archive(self.contacts, [rec.id])
        rec.merged_into = survivor.id
        if rec.properties.get("email"):  # the old address now finds the survivor (idProperty=email)
            self.email_index.setdefault(rec.properties["email"].lower(), survivor.id)
        for deal_id in rec.associations.get("deals", []):
            deal = self.deals.records.get(deal_id)
            if deal is not None:
                deal.associations["contacts"] = [survivor.id if c == rec.id else c
                                                 for c in deal.associations.get("contacts", [])]
            if deal_id not in survivor.associations.setdefault("deals", []):
                survivor.associations["deals"].append(deal_id)
        for members in self.memberships.values():
            if rec.id in members:
                members.setdefault(survivor.id, members.pop(rec.id))

    def restore_contacts(self, ids: Iterable[str]) -> None:
        """Test helper: restore archived contacts (HubSpot keeps a deleted contact restorable for 90 days)."""
        with self.lock:
            for rid in map(str, ids):
                rec = self.contacts.records.get(rid)
                if rec is not None and rec.archived and rec.merged_into is None:
                    rec.archived, rec.archived_at = False, None
                    self.index_email(rec)
                    self.contacts.touch(rec, self.clock())

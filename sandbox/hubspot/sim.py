"""The HubSpot simulator's state and write logic, independent of HTTP.

Routes in :mod:`sandbox.hubspot.app` call into :class:`HubSpotSim`; tests call its inspection
helpers directly (``contact_by_email``, ``properties_of``, ``list_members``, ``optouts``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.responses import Response

from sandbox.hubspot import loader
from sandbox.hubspot.errors import HubSpotError, batch_error, not_found, validation
from sandbox.hubspot.ratelimit import PLAN_DAILY, PLAN_LIMITS, RollingLimiter
from sandbox.hubspot.schema import (CONTACT_GROUPS, READ_ONLY, default_contact_properties, default_deal_properties,
                                    iso, validate_value)
from sandbox.hubspot.store import ObjectStore, Record

if TYPE_CHECKING:
    from sandbox.book import Book

BATCH_MAX = 100
CONTACT_DEFAULTS = ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname")


class HubSpotSim:
    """An in-memory HubSpot portal: contacts, deals, properties, lists, subscriptions, web events."""

    def __init__(self, token: str, plan: str = "unlimited", window_seconds: float = 10.0,
                 search_per_second: float | None = 4, daily_limit: int | None = None, portal_id: int = 4_242_424,
                 batch_errors: str = "partial", clock: Callable[[], datetime] | None = None) -> None:
        if plan not in PLAN_LIMITS:
            raise ValueError(f"unknown HubSpot plan {plan!r}; one of {sorted(PLAN_LIMITS)}")
        if batch_errors not in ("partial", "strict"):
            raise ValueError("batch_errors must be 'partial' (207) or 'strict' (whole batch 400)")
        self.token, self.plan, self.portal_id, self.batch_errors = token, plan, portal_id, batch_errors
        self.clock = clock or (lambda: datetime.now(UTC))
        daily = daily_limit if daily_limit is not None else (PLAN_DAILY[plan] if PLAN_LIMITS[plan] else None)
        self.limiter = RollingLimiter(PLAN_LIMITS[plan], window_seconds, daily)
        self.search_limiter = RollingLimiter(int(search_per_second) if search_per_second else None, 1.0,
                                             policy="SECONDLY")
        self.lock = threading.RLock()
        self.contacts = ObjectStore("contacts", default_contact_properties(), "lastmodifieddate", CONTACT_DEFAULTS)
        self.deals = ObjectStore("deals", default_deal_properties(), "hs_lastmodifieddate",
                                 ("amount", "closedate", "createdate", "dealname", "dealstage", "pipeline"))
        self.groups: dict[str, dict[str, Any]] = {
            n: {"name": n, "label": label, "displayOrder": -1, "archived": False} for n, label in CONTACT_GROUPS}
        self.email_index: dict[str, str] = {}  # lower-cased email -> contact id
        self.person_ids: dict[str, str] = {}  # book person key -> contact id
        self.lists: dict[str, dict[str, Any]] = {}
        self.memberships: dict[str, dict[str, datetime]] = {}
        self.subscriptions = loader.subscription_definitions(portal_id)
        self.sub_status: dict[str, dict[str, dict[str, Any]]] = {}  # email -> subscription id -> status
        self.web_events: list[dict[str, Any]] = []
        self.subscribe_calls: list[dict[str, Any]] = []
        self.unsubscribe_calls: list[dict[str, Any]] = []

    # -- loading and HTTP --------------------------------------------------------

    def load(self, book: Book) -> None:
        """Seed contacts (merges pre-applied), deals and web analytics from a generated book."""
        with self.lock:
            loader.load_book(self, book)

    def app(self) -> Starlette:
        """The Starlette app serving this portal's REST API."""
        from sandbox.hubspot.app import build_app

        return build_app(self)

    def index_email(self, rec: Record) -> None:
        """Keep the email -> id index in step with a record's email."""
        email = (rec.properties.get("email") or "").lower()
        if email:
            self.email_index[email] = rec.id

    # -- writes ------------------------------------------------------------------

    def _clean(self, store: ObjectStore, props: dict[str, Any], exclude: str | None = None) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in (props or {}).items():
            if name in READ_ONLY:
                continue  # HubSpot silently ignores writes to read-only system properties
            out[name] = validate_value(store.schema.get(name), name, value)
        email = out.get("email", "").lower()
        if store is self.contacts and email and self.email_index.get(email) not in (None, exclude):
            raise HubSpotError(409, f"Contact already exists. Existing ID: {self.email_index[email]}", "CONFLICT")
        return out

    def _apply(self, store: ObjectStore, rec: Record, props: dict[str, str], at: datetime) -> None:
        if store is self.contacts and "email" in props:
            self.email_index.pop((rec.properties.get("email") or "").lower(), None)
        rec.properties.update(props)
        store.touch(rec, at)
        if store is self.contacts:
            self.index_email(rec)

    def resolve(self, store: ObjectStore, raw_id: str, id_property: str | None = None) -> Record | None:
        """A live record by id (or by email when ``id_property`` is "email")."""
        if id_property == "email":
            rid = self.email_index.get(str(raw_id).lower())
        elif id_property not in (None, "hs_object_id"):
            rid = next((r.id for r in store.live() if r.properties.get(id_property) == str(raw_id)), None)
        else:
            rid = str(raw_id)
        rec = store.records.get(rid) if rid else None
        return rec if rec and not rec.archived else None

    def batch_write(self, store: ObjectStore, action: str, inputs: list[dict[str, Any]]) -> tuple[int, dict]:
        """create/update/upsert: validate every input, apply the good ones, report the bad (207)."""
        if not isinstance(inputs, list) or not inputs:
            raise validation("inputs must be a non-empty array")
        if len(inputs) > BATCH_MAX:
            raise validation(f"Batch input cannot exceed {BATCH_MAX} inputs (got {len(inputs)}).",
                             sub_category="BATCH_TOO_LARGE")
        started = self.clock()  # one timestamp for the whole batch, as HubSpot's bulk edits share one
        with self.lock:
            planned: list[tuple[Record | None, dict[str, str], dict[str, Any]]] = []
            errors: list[dict[str, Any]] = []
            for item in inputs:
                ref = str(item.get("id", item.get("properties", {}).get("email", "")))
                try:
                    rec = None
                    if action in ("update", "upsert"):
                        rec = self.resolve(store, item.get("id", ""), item.get("idProperty"))
                        if rec is None and action == "update":
                            errors.append(batch_error(f"Object not found. objectId={ref}", "OBJECT_NOT_FOUND", [ref]))
                            continue
                    props = dict(item.get("properties") or {})
                    if action == "upsert" and rec is None and item.get("idProperty") == "email":
                        props.setdefault("email", item.get("id"))
                    planned.append((rec, self._clean(store, props, exclude=rec.id if rec else None), item))
                except HubSpotError as exc:
                    errors.append(batch_error(exc.message, exc.category, [ref], exc.sub_category))
            if errors and self.batch_errors == "strict":
                raise validation("Property values were not valid", errors=[
                    {"message": e["message"], "code": e.get("subCategory", e["category"]), "context": e["context"]}
                    for e in errors])
            results = []
            for rec, props, _item in planned:
                new = rec is None
                if rec is None:
                    rec = store.add(props, started)
                    if store is self.contacts:
                        self.index_email(rec)
                else:
                    self._apply(store, rec, props, started)
                out = store.serialise(rec, list(props) or None)
                if action == "upsert":
                    out["new"] = new
                results.append(out)
        done = self.clock()
        body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": iso(started),
                                "completedAt": iso(done)}
        if errors:
            body.update(errors=errors, numErrors=len(errors))
            return 207, body
        return (201 if action == "create" else 200), body

    def batch_read(self, store: ObjectStore, body: dict[str, Any]) -> tuple[int, dict]:
        """batch/read: merged-away ids resolve to their survivor, as HubSpot does."""
        inputs = body.get("inputs") or []
        if len(inputs) > BATCH_MAX:
            raise validation(f"Batch input cannot exceed {BATCH_MAX} inputs (got {len(inputs)}).")
        started = self.clock()
        results, missing = [], []
        with self.lock:
            for item in inputs:
                rec = self.follow_merge(store, str(item.get("id", "")), body.get("idProperty"))
                if rec is None:
                    missing.append(str(item.get("id", "")))
                else:
                    results.append(store.serialise(rec, body.get("properties")))
        out: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": iso(started),
                               "completedAt": iso(self.clock())}
        if missing:
            out["errors"] = [batch_error(f"Could not get some {store.object_type.upper()[:-1]} objects, they may be "
                                         "deleted or not exist. Check that ids are valid.", "OBJECT_NOT_FOUND", missing)]
            out["numErrors"] = 1
            return 207, out
        return 200, out

    def follow_merge(self, store: ObjectStore, raw_id: str, id_property: str | None = None) -> Record | None:
        """Resolve an id, following a merge to the surviving record."""
        rec = store.records.get(raw_id) if id_property in (None, "hs_object_id") else self.resolve(
            store, raw_id, id_property)
        while rec is not None and rec.merged_into:
            rec = store.records.get(rec.merged_into)
        return rec if rec and not rec.archived else None

    def archive(self, store: ObjectStore, ids: Iterable[str]) -> None:
        """Archive records; deliberately leaves the modification timestamp alone (HubSpot does too)."""
        now = self.clock()
        with self.lock:
            for rid in ids:
                rec = store.records.get(str(rid))
                if rec and not rec.archived:
                    rec.archived, rec.archived_at = True, now
                    if store is self.contacts:
                        self.email_index.pop((rec.properties.get("email") or "").lower(), None)

    def merge(self, primary_id: str, merge_id: str, at: datetime | None = None) -> Record:
        """Merge contact ``merge_id`` into ``primary_id``; the loser disappears, the survivor records it."""
        with self.lock:
            primary = self.resolve(self.contacts, primary_id)
            loser = self.resolve(self.contacts, merge_id)
            if primary is None or loser is None or primary is loser:
                raise validation(f"Cannot merge {merge_id} into {primary_id}: both must exist and differ")
            at = at or self.clock()
            merged = [x for x in (primary.properties.get("hs_merged_object_ids") or "").split(";") if x]
            merged += [loser.id] + [x for x in (loser.properties.get("hs_merged_object_ids") or "").split(";") if x]
            extra = [x for x in (primary.properties.get("hs_additional_emails") or "").split(";") if x]
            if loser.properties.get("email"):
                extra.append(loser.properties["email"])
            self.archive(self.contacts, [loser.id])
            loser.merged_into = primary.id
            primary.properties["hs_merged_object_ids"] = ";".join(merged)
            primary.properties["hs_additional_emails"] = ";".join(extra)
            self.contacts.touch(primary, at)
            return primary

    def touch_contacts(self, ids: Iterable[str], at: datetime | None = None) -> None:
        """Simulate a bulk edit in HubSpot's UI: every contact gets the same lastmodifieddate."""
        at = at or self.clock()
        with self.lock:
            for rid in ids:
                self.contacts.touch(self.contacts.records[str(rid)], at)

    def add_contacts(self, rows: list[dict[str, str]], at: datetime | None = None) -> list[str]:
        """Insert contacts directly (no validation, no HTTP): for big fixtures such as the 10,000-result test."""
        at = at or self.clock()
        with self.lock:
            ids = []
            for props in rows:
                rec = self.contacts.add(props, at)
                self.index_email(rec)
                ids.append(rec.id)
            return ids

    # -- inspection for tests ------------------------------------------------------

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
        """Lower-cased emails of live contacts with hs_email_optout=true."""
        with self.lock:
            return {r.properties.get("email", "").lower() for r in self.contacts.live()
                    if r.properties.get("hs_email_optout") == "true"}

    def contact_id_for(self, person_key: str) -> str | None:
        """The contact id a book person was loaded as."""
        return self.person_ids.get(person_key)

    def since(self, days: float) -> datetime:
        """Convenience for tests: now minus ``days``."""
        return self.clock() - timedelta(days=days)

    def rate_limited_response(self) -> Response:
        """The ten-secondly 429 (used by the fault injector's ``storm``)."""
        from sandbox.hubspot.app import rate_limited

        return rate_limited(self.limiter, "TEN_SECONDLY_ROLLING")

"""The identity aggregate: contacts, vendor identities, email aliases and engagement events.

A pulled page and its cursor are stored in one transaction, so a crash re-pulls at most one page.
Identity resolution goes vendor id, then normalised email or alias, else a new contact whose id is
derived from (tenant, source, vendor id), so a rebuilt store gives the same ids (and holdouts).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from connectors.base import Contact, EngagementEvent
from core.emails import normalize_email
from core.times import as_utc
from core.times import now as utcnow
from sync.store import schema as t
from sync.store.events import store_event_rows
from sync.store.interface import PageResult
from sync.store.sqlcore import canonical, chunks, upsert


def contact_id_for(tenant_id: str, source: str, vendor_id: str) -> str:
    """Deterministic id for a new contact, so a rebuilt store gives the same ids (and holdouts)."""
    return "c" + hashlib.sha256(f"{tenant_id}|{source}|{vendor_id}".encode()).hexdigest()[:15]


def _email_change(tenant_id: str, old_email: str | None, contact_id: str, now: datetime) -> dict[str, Any]:
    """An alias row: ``old_email`` now belongs to ``contact_id``."""
    return {"tenant_id": tenant_id, "email": old_email, "contact_id": contact_id, "reason": "email_change",
            "created_at": now}


def _earliest(*values: datetime | None) -> datetime | None:
    """The earliest of the known times, in UTC (None when none is known)."""
    known = [as_utc(v) for v in values if v is not None]
    return min(known) if known else None


#: Parts of a property name that mark personal identifiers (addresses, names, phone numbers, IPs, hashes of
#: them): never features, so their history is not kept (data minimisation; the current value stays on the contact).
IDENTIFIER_HINTS = ("email", "name", "phone", "ip_", "address", "hash", "merge_fields")


#: Every email of some contacts, per table (the consent re-check before each pushed batch runs these; built once,
#: since building them cost more than running them). No "email IS NOT NULL": with it SQLite picks the email index
#: and reads the whole tenant for every batch of ids; the few NULLs are skipped by the caller instead.
_ADDRESSES_OF = {
    table.name: sa.select(table.c.contact_id, table.c.email).where(
        table.c.tenant_id == sa.bindparam("tenant"), table.c.contact_id.in_(sa.bindparam("ids", expanding=True)))
    for table in (t.contacts, t.identities, t.aliases)
}


def _snapshot_worthy(name: str) -> bool:
    """Whether a property's changes are kept: not segsync's own pushed properties, not ``_``-prefixed bookkeeping
    (a source's row number), not a personal identifier."""
    lowered = str(name).lower()
    return not lowered.startswith(("segsync", "_")) and not any(hint in lowered for hint in IDENTIFIER_HINTS)


def _changed_properties(tenant_id: str, row: dict[str, Any], old: dict[str, Any],
                        known_since: datetime | None) -> list[dict[str, Any]]:
    """Snapshot rows for the properties whose value differs from what is stored (none when nothing changed).

    A value is known from the vendor's last-modified time when the vendor gives one later than
    the contact's previous snapshot (``known_since``): the record says it changed then. A time
    that is missing, in the future or not later than what we already knew says nothing about this
    change, so the pull time is used. Either way a value is never dated before the vendor says it was set.
    """
    now: datetime = row["updated_at"]
    vendor: datetime | None = row.get("vendor_updated_at")
    fits = vendor is not None and vendor <= now and (known_since is None or vendor > known_since)
    valid_from = vendor if fits and vendor is not None else now
    stored = old.get("properties") or {}
    out = []
    for name, value in row["properties"].items():
        if not _snapshot_worthy(name) or (name in stored and canonical(stored[name]) == canonical(value)):
            continue
        out.append({"tenant_id": tenant_id, "contact_id": row["contact_id"], "name": str(name)[:200],
                    "valid_from": valid_from, "value": canonical(value), "observed_at": now})
    return out


def _address(current: str | None, claims: Sequence[tuple[str, str | None, bool]]) -> str | None:
    """The contact's address after a page's records of the person, each claim (address, the address the record had
    before - None when the record is new -, whether the record's source created the contact).

    One person can have a different address at each system (a CRM contact with an additional address that is the
    ESP member's). An address is only news when a record's address changed: a record pulled again unchanged
    (every incremental pull of someone segsync wrote to) never moves it, or the address would follow whichever
    system was pulled last. A changed address moves it when the record gave the current address or its source
    created the contact; a new record of another source only fills an empty one."""
    for email, before, own in claims:
        changed = before is not None and before != email
        if not current or (changed and (own or before == current)):
            current = email
    return current


def _primary(records: set[str]) -> str:
    """Which of one source's live records of a person gives the person's properties and status from that source.

    A person can have two records at one system (two ESP members: the CRM contact's address and an
    additional one, each with its own merge fields, rating and status). Taking each as it is pulled made the
    person's data follow whichever was pulled last, so re-pulling one of them changed a model input. The record
    is the one segsync pushes to - the last in vendor-id order, as :meth:`Store.vendor_ids` and the run's
    chunks (:mod:`sync.store.chunks`) pick it - so the status a plan reads is the status of the member it tags."""
    return max(records)


class IdentityTables:
    """Contacts, identities, aliases and events (mixed into :class:`sync.store.sql.SqlStore`)."""

    engine: Engine

    def store_page(
        self,
        tenant_id: str,
        contacts: Sequence[Contact],
        events: Sequence[EngagementEvent],
        cursor: tuple[str, str | None] | None,
    ) -> PageResult:
        """Store a pulled page and (in the same transaction) its cursor."""
        result = PageResult()
        now = utcnow()
        with self.engine.begin() as conn:
            if contacts:
                self._resolve(conn, tenant_id, contacts, now, result)
            if events:
                result.events = self._store_events(conn, tenant_id, events)
            if cursor is not None and cursor[1] is not None:
                upsert(
                    conn,
                    t.cursors,
                    [{"tenant_id": tenant_id, "stream": cursor[0], "value": cursor[1], "updated_at": now}],
                    ["tenant_id", "stream"],
                )
        return result

    def _lookup(
        self, conn: Connection, tenant_id: str, source: str, vendor_ids: set[str], emails: set[str]
    ) -> tuple[dict[str, tuple[str, str | None]], dict[str, str]]:
        by_vendor: dict[str, tuple[str, str | None]] = {}
        for chunk in chunks(sorted(vendor_ids), 500):
            rows = conn.execute(
                sa.select(t.identities.c.vendor_id, t.identities.c.contact_id, t.identities.c.email).where(
                    t.identities.c.tenant_id == tenant_id,
                    t.identities.c.source == source,
                    t.identities.c.vendor_id.in_(chunk),
                )
            )
            by_vendor.update({r.vendor_id: (r.contact_id, r.email) for r in rows})
        by_email: dict[str, str] = {}
        for chunk in chunks(sorted(emails), 500):
            rows = conn.execute(
                sa.select(t.aliases.c.email, t.aliases.c.contact_id).where(
                    t.aliases.c.tenant_id == tenant_id, t.aliases.c.email.in_(chunk)
                )
            )
            by_email.update({r.email: r.contact_id for r in rows})
            rows = conn.execute(
                sa.select(t.contacts.c.email, t.contacts.c.contact_id).where(
                    t.contacts.c.tenant_id == tenant_id, t.contacts.c.email.in_(chunk)
                )
            )
            by_email.update({r.email: r.contact_id for r in rows})
        return by_vendor, by_email

    def _resolve(
        self, conn: Connection, tenant_id: str, contacts: Sequence[Contact], now: datetime, result: PageResult
    ) -> None:
        """Identity resolution: vendor id, then normalised email or alias, else a new contact."""
        source = contacts[0].source
        emails = {
            e for c in contacts for e in [normalize_email(c.email), *map(normalize_email, c.previous_emails)] if e
        }
        merged = {c.merged_into for c in contacts if c.merged_into}
        by_vendor, by_email = self._lookup(conn, tenant_id, source, {c.vendor_id for c in contacts} | merged, emails)
        contact_rows: dict[str, dict[str, Any]] = {}
        identity_rows, alias_rows = [], []
        for c in contacts:
            email = normalize_email(c.email)
            known = by_vendor.get(c.vendor_id)
            if c.merged_into and c.merged_into in by_vendor:
                contact_id = by_vendor[c.merged_into][0]  # a CRM merge: the loser's id now points at the survivor
            elif known:
                contact_id = known[0]
            elif email and email in by_email:
                contact_id = by_email[email]
            else:
                contact_id = next(
                    (by_email[e] for e in map(normalize_email, c.previous_emails) if e and e in by_email),
                    contact_id_for(tenant_id, source, c.vendor_id),
                )
            if known is None:
                result.new += 1
            else:
                result.changed += 1
            if known and known[1] and email and known[1] != email:
                alias_rows.append(_email_change(tenant_id, known[1], contact_id, now))
            for old in c.previous_emails:
                if normalize_email(old):
                    alias_rows.append(_email_change(tenant_id, normalize_email(old), contact_id, now))
            identity_rows.append(
                {
                    "tenant_id": tenant_id,
                    "source": source,
                    "vendor_id": c.vendor_id,
                    "contact_id": contact_id,
                    "email": email,
                    "archived": bool(c.archived or c.merged_into),
                    "merged_into": c.merged_into,
                    "updated_at": now,
                }
            )
            if c.merged_into or c.archived:
                continue
            if email:
                by_email[email] = contact_id
            by_vendor[c.vendor_id] = (contact_id, email)
            row = contact_rows.setdefault(
                contact_id, {"tenant_id": tenant_id, "contact_id": contact_id, "properties": {}}
            )
            if email:
                row.setdefault("claims", []).append(
                    (email, known[1] if known else None, contact_id == contact_id_for(tenant_id, source, c.vendor_id)))
            row.setdefault("records", []).append(
                (c.vendor_id, {k: v for k, v in c.properties.items() if v is not None}, c.status))
            row["created_at"] = as_utc(c.created_at) or row.get("created_at")
            row["updated_at"] = now
            row["vendor_updated_at"] = as_utc(c.updated_at)
        gone = {c.vendor_id for c in contacts if c.archived or c.merged_into}
        self._merge_contacts(conn, tenant_id, list(contact_rows.values()), source, gone)
        upsert(conn, t.identities, identity_rows, ["tenant_id", "source", "vendor_id"])
        if alias_rows:
            dedup = {(r["tenant_id"], r["email"]): r for r in alias_rows}
            upsert(conn, t.aliases, list(dedup.values()), ["tenant_id", "email"])

    def _merge_contacts(self, conn: Connection, tenant_id: str, rows: list[dict[str, Any]], source: str,
                        gone: set[str]) -> None:
        """Upsert contacts, merging properties with what other sources already said (see :func:`_primary`)."""
        if not rows:
            return
        existing: dict[str, dict[str, Any]] = {}
        known_since: dict[str, datetime] = {}
        records: dict[str, set[str]] = {}  # contact id -> the vendor ids of this source's live records of them
        snap, ident = t.property_snapshots, t.identities
        for chunk in chunks([r["contact_id"] for r in rows], 500):
            for found in conn.execute(
                sa.select(t.contacts).where(t.contacts.c.tenant_id == tenant_id, t.contacts.c.contact_id.in_(chunk))
            ):
                existing[found.contact_id] = found._asdict()
            for vid, cid in conn.execute(
                sa.select(ident.c.vendor_id, ident.c.contact_id).where(
                    ident.c.tenant_id == tenant_id, ident.c.source == source, ident.c.contact_id.in_(chunk),
                    ident.c.archived.is_(False))
            ):
                if vid not in gone:
                    records.setdefault(cid, set()).add(vid)
            for latest in conn.execute(
                sa.select(snap.c.contact_id, sa.func.max(snap.c.valid_from))
                .where(snap.c.tenant_id == tenant_id, snap.c.contact_id.in_(chunk))
                .group_by(snap.c.contact_id)
            ):
                known_since[latest[0]] = as_utc(latest[1])
        out = []
        snapshots: list[dict[str, Any]] = []
        for r in rows:
            old = existing.get(r["contact_id"], {})
            email = _address(old.get("email"), r.get("claims", ()))
            primary = _primary(records.get(r["contact_id"], set()) | {vid for vid, _, _ in r["records"]})
            r["properties"] = {}
            for vid, props, status in r["records"]:
                if vid == primary:
                    r["properties"].update(props)
                    if status is not None:
                        r["esp_status"] = status
            snapshots += _changed_properties(tenant_id, r, old, known_since.get(r["contact_id"]))
            out.append(
                {
                    "tenant_id": tenant_id,
                    "contact_id": r["contact_id"],
                    "email": email,
                    "properties": {**(old.get("properties") or {}), **r["properties"]},
                    # The earliest creation any system reports: stable whichever source is pulled last.
                    "created_at": _earliest(r.get("created_at"), old.get("created_at")),
                    "updated_at": r["updated_at"],
                    "esp_status": r.get("esp_status", old.get("esp_status")),
                    "archived": False,
                }
            )
        upsert(conn, t.contacts, out, ["tenant_id", "contact_id"])
        for part in chunks(snapshots, 2000):
            upsert(conn, t.property_snapshots, part, ["tenant_id", "contact_id", "name", "valid_from"])

    def _store_events(self, conn: Connection, tenant_id: str, evts: Sequence[EngagementEvent]) -> int:
        source = evts[0].source
        ids = {e.contact_vendor_id for e in evts}
        emails = {normalize_email(e.email) for e in evts if e.email}
        by_vendor, by_email = self._lookup(conn, tenant_id, source, ids, {e for e in emails if e})
        rows: dict[str, tuple[Any, ...]] = {}
        for e in evts:
            contact = by_vendor.get(e.contact_vendor_id, (None,))[0] or by_email.get(normalize_email(e.email) or "")
            if contact is None:
                continue  # an event for someone we do not know (yet); the next pull of contacts brings them
            fallback = hashlib.sha1(canonical([e.contact_vendor_id, e.type, e.occurred_at]).encode()).hexdigest()
            key = f"{e.source}:{e.event_id or fallback}"[:200]
            rows[key] = (contact, e.type, as_utc(e.occurred_at), e.value,
                         (e.attributes.get("url") or None) if e.attributes else None,
                         (e.attributes.get("session_id") or None) if e.attributes else None)
        store_event_rows(conn, tenant_id, rows)
        return len(rows)

    # ------------------------------------------------------------------ reads for scoring and planning

    def contacts(self, tenant_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.contacts).where(t.contacts.c.tenant_id == tenant_id, t.contacts.c.archived.is_(False))
            )
            return [r._asdict() for r in rows]

    def property_history(self, tenant_id: str, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Every stored property change (of ``names`` only, if given): contact_id, name, valid_from (UTC), value."""
        snap = t.property_snapshots
        query = sa.select(snap.c.contact_id, snap.c.name, snap.c.valid_from, snap.c.value).where(
            snap.c.tenant_id == tenant_id)
        if names is not None:
            query = query.where(snap.c.name.in_(list(names)))
        with self.engine.connect() as conn:
            return [{"contact_id": r.contact_id, "name": r.name, "valid_from": as_utc(r.valid_from),
                     "value": None if r.value is None else json.loads(r.value)} for r in conn.execute(query)]

    def addresses(self, tenant_id: str, contact_ids: Sequence[str] | None = None) -> dict[str, set[str]]:
        """contact id -> every email we know for the person (current, at each vendor, former)."""
        out: dict[str, set[str]] = {}
        ids = None if contact_ids is None else sorted(set(contact_ids))
        with self.engine.connect() as conn:
            for table in (t.contacts, t.identities, t.aliases):
                if ids is not None:
                    rows = conn.execute(_ADDRESSES_OF[table.name], {"tenant": tenant_id, "ids": ids})
                else:
                    rows = conn.execute(sa.select(table.c.contact_id, table.c.email).where(
                        table.c.tenant_id == tenant_id, table.c.email.is_not(None)))
                for cid, email in rows:
                    if email is not None:
                        out.setdefault(cid, set()).add(email)
        return out

    def contact_by_email(self, tenant_id: str, email: str) -> str | None:
        """The contact id for an email, current or an alias (None when unknown)."""
        email = normalize_email(email) or ""
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(t.contacts.c.contact_id).where(
                    t.contacts.c.tenant_id == tenant_id, t.contacts.c.email == email
                )
            ).scalar()
            if found is None:
                found = conn.execute(
                    sa.select(t.aliases.c.contact_id).where(
                        t.aliases.c.tenant_id == tenant_id, t.aliases.c.email == email
                    )
                ).scalar()
            return found

    def email_for_vendor_id(self, tenant_id: str, source: str, vendor_id: str) -> str | None:
        """The current email of the contact a vendor id belongs to (None when unknown)."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(t.contacts.c.email)
                .join(
                    t.identities,
                    sa.and_(
                        t.identities.c.tenant_id == t.contacts.c.tenant_id,
                        t.identities.c.contact_id == t.contacts.c.contact_id,
                    ),
                )
                .where(
                    t.identities.c.tenant_id == tenant_id,
                    t.identities.c.source == source,
                    t.identities.c.vendor_id == vendor_id,
                )
            ).scalar()

    def vendor_ids(self, tenant_id: str, source: str) -> dict[str, str]:
        """contact id -> the live (not archived or merged) vendor id at ``source``."""
        return self._live_identities(tenant_id, source, t.identities.c.vendor_id)

    def identity_emails(self, tenant_id: str, source: str) -> dict[str, str]:
        """contact id -> the email a vendor has for the person (live identities with an email)."""
        return self._live_identities(tenant_id, source, t.identities.c.email)

    def source_addresses(self, tenant_id: str, source: str, contact_id: str) -> list[str]:
        i = t.identities.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(i.email).where(
                i.tenant_id == tenant_id, i.source == source, i.contact_id == contact_id, i.archived.is_(False),
                i.email.is_not(None)).order_by(i.vendor_id)).scalars().all()
        return list(dict.fromkeys(rows))

    def _live_identities(self, tenant_id: str, source: str, column: sa.Column[Any]) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.identities.c.contact_id, column).where(
                    t.identities.c.tenant_id == tenant_id,
                    t.identities.c.source == source,
                    t.identities.c.archived.is_(False),
                    column.is_not(None),
                ).order_by(t.identities.c.vendor_id)  # two live identities at one source: the last in key order wins
            )
            return {cid: value for cid, value in rows}

    def events(self, tenant_id: str) -> Iterator[dict[str, Any]]:
        names = ("contact_id", "type", "occurred_at", "value", "url", "session_id")
        for row in self.event_rows(tenant_id):
            yield dict(zip(names, row, strict=True))

    def contact_stream(self, tenant_id: str) -> Iterator[dict[str, Any]]:
        """The live contacts (contact_id, email, created_at, properties), streamed from the database."""
        c = t.contacts.c
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=20_000).execute(
                sa.select(c.contact_id, c.email, c.created_at, c.properties).where(
                    c.tenant_id == tenant_id, c.archived.is_(False))
            )
            for r in result:
                yield {"contact_id": r.contact_id, "email": r.email, "created_at": r.created_at,
                       "properties": r.properties}

    def property_values(self, tenant_id: str, name: str) -> Iterator[tuple[str, str]]:
        """(contact id, the property's value as text) of the live contacts that have a non-empty ``name``,
        streamed; the database reads the one value out of each contact's properties (no JSON decoded here)."""
        c = t.contacts.c
        value = c.properties[name].as_string()
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=20_000).execute(
                sa.select(c.contact_id, value).where(c.tenant_id == tenant_id, c.archived.is_(False),
                                                     value.is_not(None)))
            for contact_id, text in result:
                if text not in (None, ""):
                    yield contact_id, str(text)

    def contact_texts(self, tenant_id: str) -> Iterator[tuple[str, str | None, str | None, str]]:
        """The live contacts as (contact_id, email, created_at, properties), the last two as stored text."""
        c = t.contacts.c
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=20_000).execute(
                sa.select(c.contact_id, c.email, sa.cast(c.created_at, sa.Text), sa.cast(c.properties, sa.Text))
                .where(c.tenant_id == tenant_id, c.archived.is_(False)))
            for r in result:
                yield r[0], r[1], r[2], r[3]

    def event_rows(self, tenant_id: str) -> Iterator[tuple[Any, ...]]:
        """Every stored event as a tuple (contact_id, type, occurred_at, value, url, session_id), streamed."""
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=50_000).execute(
                sa.select(
                    t.events.c.contact_id, t.events.c.type, t.events.c.occurred_at, t.events.c.value,
                    t.events.c.url, t.events.c.session_id,
                ).where(t.events.c.tenant_id == tenant_id)
            )
            for r in result:
                yield tuple(r)

    def esp_statuses(self, tenant_id: str) -> dict[str, str | None]:
        """contact id -> the ESP status last seen, for every live contact (two columns, not every property)."""
        c = t.contacts.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(c.contact_id, c.esp_status).where(c.tenant_id == tenant_id,
                                                                            c.archived.is_(False)))
            return {cid: status for cid, status in rows}

    def counts(self, tenant_id: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                "contacts": conn.execute(
                    sa.select(sa.func.count()).select_from(t.contacts).where(t.contacts.c.tenant_id == tenant_id)
                ).scalar()
                or 0,
                "events": conn.execute(
                    sa.select(sa.func.count()).select_from(t.events).where(t.events.c.tenant_id == tenant_id)
                ).scalar()
                or 0,
            }

"""Reads of one chunk of a book: what the consent gate and the planner need for contacts first..last in id order.

A run gates, plans and pushes a large book chunk by chunk (``sync.run.book``) so no step holds every
contact, vendor id, address or last-sent row as Python objects at once. A chunk is a page of live
contacts in id order (keyset paging: ``contact_id > after``); everything else about it is read by the id
range of that page (``BETWEEN first AND last``), which the (tenant, contact id) indexes answer with one
range scan per table instead of an IN list per thousand ids. Rows in the range that belong to no contact of
the page (archived or merged contacts) are dropped here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sync.store import schema as t


@dataclass
class ContactChunk:
    """One chunk of live contacts and what the store holds about them."""

    contacts: list[tuple[str, str | None, str | None]]  # (contact id, email, ESP status), in id order
    identities: dict[str, dict[str, tuple[str, str | None]]] = field(default_factory=dict)
    # ^ source -> contact id -> (live vendor id, the email that vendor knows)
    addresses: dict[str, set[str]] = field(default_factory=dict)  # contact id -> every email known for the person
    sent: dict[str, dict[str, str]] = field(default_factory=dict)  # destination -> contact id -> last-sent value
    in_flight: dict[str, set[str]] = field(default_factory=dict)  # destination -> contact ids sent, never answered

    @property
    def last_id(self) -> str | None:
        """Where the next chunk starts (after this id); None for an empty chunk (the book is done)."""
        return self.contacts[-1][0] if self.contacts else None


class ChunkReads:
    """Chunk reads (mixed into :class:`sync.store.sql.SqlStore`)."""

    engine: Engine

    def contact_chunk(self, tenant_id: str, after: str | None, limit: int, *, sent: bool = True) -> ContactChunk:
        """Up to ``limit`` live contacts with ids after ``after`` (None: from the first), in id order, with their
        live identities, every address and (``sent``) last-sent and in-flight rows - one range read per table."""
        c = t.contacts.c
        query = sa.select(c.contact_id, c.email, c.esp_status).where(c.tenant_id == tenant_id, c.archived.is_(False))
        if after is not None:
            query = query.where(c.contact_id > after)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(c.contact_id).limit(limit)).all()
            chunk = ContactChunk([(r[0], r[1], r[2]) for r in rows])
            if not rows:
                return chunk
            first, last = rows[0][0], rows[-1][0]
            ids = {r[0] for r in rows}
            chunk.identities = _identities(conn, tenant_id, first, last, ids)
            chunk.addresses = _addresses(conn, tenant_id, first, last, ids)
            if sent:
                chunk.sent, chunk.in_flight = _sent(conn, tenant_id, first, last, ids)
        return chunk

    def esp_audience(self, tenant_id: str, source: str) -> Iterator[tuple[str, str, str | None]]:
        """(email ``source`` knows, its vendor id, the contact's ESP status) per live identity at ``source``,
        streamed: the store's copy of an ESP audience without reading every contact with its properties."""
        i, c = t.identities.c, t.contacts.c
        status = sa.case((c.archived.is_(False), c.esp_status), else_=None)
        query = (
            sa.select(i.email, i.vendor_id, status)
            .select_from(t.identities.outerjoin(t.contacts, sa.and_(c.tenant_id == i.tenant_id,
                                                                     c.contact_id == i.contact_id)))
            .where(i.tenant_id == tenant_id, i.source == source, i.archived.is_(False), i.email.is_not(None))
        )
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=20_000).execute(query):
                yield row[0], row[1], row[2]

    def sent_emails(self, tenant_id: str, source: str, destinations: Sequence[str]) -> Iterator[tuple[str, str, str]]:
        """(destination, the email ``source`` knows the contact by, last-sent value) for every last-sent row of
        ``destinations`` whose contact has a live identity with an email at ``source``, streamed."""
        s, i = t.last_sent.c, t.identities.c
        query = (
            sa.select(s.destination, i.email, s.value)
            .select_from(t.last_sent.join(t.identities, sa.and_(i.tenant_id == s.tenant_id, i.contact_id == s.key)))
            .where(s.tenant_id == tenant_id, s.destination.in_(list(destinations)), i.source == source,
                   i.archived.is_(False), i.email.is_not(None))
        )
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=20_000).execute(query):
                yield row[0], row[1], row[2]


    def property_history_rows(self, tenant_id: str, names: Sequence[str]) -> Iterator[tuple[str, str, datetime, Any]]:
        """Like :meth:`Store.property_history` for ``names``, as (contact_id, name, valid_from, value) tuples streamed:
        a book's history is several rows per contact, which as a list of dicts cost more than the book itself.

        Repeated values (a tier, a state) come back as one shared object each, up to :data:`SHARED_VALUES` of them:
        decoded anew per row, a million rows of "premier" would be a million strings."""
        snap = t.property_snapshots.c
        query = sa.select(snap.contact_id, snap.name, snap.valid_from, snap.value).where(
            snap.tenant_id == tenant_id, snap.name.in_(sorted(set(names))))
        shared: dict[str, Any] = {}
        loads = json.loads
        with self.engine.connect() as conn:
            for cid, name, valid_from, text in conn.execution_options(yield_per=20_000).execute(query):
                if text is None:
                    value = None
                elif text in shared:
                    value = shared[text]
                else:
                    value = loads(text)
                    if len(shared) < SHARED_VALUES and isinstance(value, (str, int, float, bool)):
                        shared[text] = value  # immutable: safe to hand to many rows
                yield cid, name, valid_from, value


SHARED_VALUES = 10_000  # distinct values decoded once and shared (low-cardinality properties: all of theirs)


def _identities(conn: Connection, tenant_id: str, first: str, last: str,
                ids: set[str]) -> dict[str, dict[str, tuple[str, str | None]]]:
    i = t.identities.c
    out: dict[str, dict[str, tuple[str, str | None]]] = {}
    for cid, source, vendor_id, email in conn.execute(
        sa.select(i.contact_id, i.source, i.vendor_id, i.email).where(
            i.tenant_id == tenant_id, i.contact_id.between(first, last), i.archived.is_(False))
        # Two live identities at one source (a CRM merge of two ESP members): the last in key order is kept,
        # as :meth:`Store.vendor_ids` keeps it on SQLite (whose scan there follows the primary key).
        .order_by(i.contact_id, i.source, i.vendor_id)
    ):
        if cid in ids:
            out.setdefault(source, {})[cid] = (vendor_id, email)
    return out


def _addresses(conn: Connection, tenant_id: str, first: str, last: str, ids: set[str]) -> dict[str, set[str]]:
    """Like :meth:`Store.addresses` for the contacts of the range (no ``email IS NOT NULL``: see there)."""
    out: dict[str, set[str]] = {}
    for table in (t.contacts, t.identities, t.aliases):
        query = sa.select(table.c.contact_id, table.c.email).where(
            table.c.tenant_id == tenant_id, table.c.contact_id.between(first, last))
        for cid, email in conn.execute(query):
            if email is not None and cid in ids:
                out.setdefault(cid, set()).add(email)
    return out


def _sent(conn: Connection, tenant_id: str, first: str, last: str,
          ids: set[str]) -> tuple[dict[str, dict[str, str]], dict[str, set[str]]]:
    s = t.last_sent.c
    sent: dict[str, dict[str, str]] = {}
    in_flight: dict[str, set[str]] = {}
    for destination, key, value, unsure in conn.execute(
        sa.select(s.destination, s.key, s.value, s.in_flight).where(s.tenant_id == tenant_id,
                                                                     s.key.between(first, last))
    ):
        if key not in ids:
            continue
        sent.setdefault(destination, {})[key] = value
        if unsure:
            in_flight.setdefault(destination, set()).add(key)
    return sent, in_flight

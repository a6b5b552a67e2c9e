"""Storing pulled engagement events: only what is new or changed is written.

Pulls re-read a window of events every run (an ESP's day of overlap, a CRM's records changed since the
cursor), so most of a page is usually stored already. The page's keys are looked up in one query per 500;
new rows are inserted, rows whose content differs are updated, and the rest cost nothing more. Whenever a
row is written the tenant's ``events`` counter (:mod:`sync.store.marks`) moves in the same transaction.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sync.store import schema as t
from sync.store.marks import EVENTS, bump
from sync.store.sqlcore import chunks, insert_for, upsert

#: The event columns after the key, in the order :func:`store_event_rows` takes them.
CONTENT = ("contact_id", "type", "occurred_at", "value", "url", "session_id")


def stored_events(conn: Connection, tenant_id: str, keys: list[str]) -> dict[str, tuple[Any, ...]]:
    """event key -> its stored content (in :data:`CONTENT` order), for the keys of ``keys`` that are stored."""
    ev = t.events.c
    found: dict[str, tuple[Any, ...]] = {}
    for chunk in chunks(keys, 500):
        for row in conn.execute(
            sa.select(ev.event_key, *(ev[c] for c in CONTENT)).where(ev.tenant_id == tenant_id,
                                                                       ev.event_key.in_(chunk))
        ):
            found[row[0]] = tuple(row[1:])
    return found


def store_event_rows(conn: Connection, tenant_id: str, rows: dict[str, tuple[Any, ...]]) -> tuple[int, int]:
    """Write the events of ``rows`` (key -> content in :data:`CONTENT` order) that are new or changed;
    returns (inserted, updated)."""
    if not rows:
        return 0, 0
    stored = stored_events(conn, tenant_id, list(rows))
    new = [k for k in rows if k not in stored]
    changed = [k for k, content in rows.items() if k in stored and stored[k] != content]
    if new:
        stmt = insert_for(conn, t.events).on_conflict_do_nothing(index_elements=["tenant_id", "event_key"])
        for part in chunks(new, 5000):
            conn.execute(stmt, [_row(tenant_id, k, rows[k]) for k in part])
    if changed:
        upsert(conn, t.events, [_row(tenant_id, k, rows[k]) for k in changed], ["tenant_id", "event_key"])
    if new or changed:
        bump(conn, tenant_id, EVENTS)
    return len(new), len(changed)


def _row(tenant_id: str, key: str, content: tuple[Any, ...]) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "event_key": key, **dict(zip(CONTENT, content, strict=True))}

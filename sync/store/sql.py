"""The SQLAlchemy store (SQLite and PostgreSQL): the :class:`~sync.store.interface.Store` interface
implemented by aggregate - identity (contacts, identities, aliases, events), sent state (cursors,
last-sent, outcomes, scores, segments) and runs (run log, locks) - plus erasure across all of them.

One module per aggregate owns its tables (the consent ledger has its own, in ``consent``). Writes
that belong together go in one transaction: a pulled page and its cursor; a confirmed batch and its
last-sent rows and outcomes. That is what makes a crash resumable without loss or duplicates.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core.emails import normalize_email
from sync.store import schema as t
from sync.store.chunks import ChunkReads
from sync.store.identity import IdentityTables
from sync.store.interface import Store
from sync.store.marks import EVENTS, DataMarks, bump
from sync.store.objects import ObjectRecords
from sync.store.runs import RunLog
from sync.store.sqlcore import make_engine
from sync.store.state import SentState


class SqlStore(IdentityTables, ChunkReads, SentState, RunLog, ObjectRecords, DataMarks, Store):
    """All sync state over one SQLAlchemy engine. Construct with :meth:`open`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str, migrate: bool = True) -> SqlStore:
        """Open the store at ``url`` and (unless ``migrate=False``) bring its schema to the latest revision."""
        store = cls(make_engine(url))
        if migrate:
            store.migrate()
        return store

    def migrate(self) -> None:
        """Bring the schema to the latest Alembic revision (sync and consent tables alike)."""
        from sync.store.migrate import upgrade

        upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ erasure

    def erase(self, tenant_id: str, email: str) -> int:
        """Delete a person's data (contact, identities, aliases, events, scores, state); return rows removed."""
        email = normalize_email(email) or ""
        removed = 0
        with self.engine.begin() as conn:
            ids = {
                r.contact_id
                for r in conn.execute(
                    sa.select(t.contacts.c.contact_id).where(
                        t.contacts.c.tenant_id == tenant_id, t.contacts.c.email == email
                    )
                )
            }
            ids |= {
                r.contact_id
                for r in conn.execute(
                    sa.select(t.aliases.c.contact_id).where(
                        t.aliases.c.tenant_id == tenant_id, t.aliases.c.email == email
                    )
                )
            }
            ids |= {
                r.contact_id
                for r in conn.execute(
                    sa.select(t.identities.c.contact_id).where(
                        t.identities.c.tenant_id == tenant_id, t.identities.c.email == email
                    )
                )
            }
            for table, col in (
                (t.contacts, t.contacts.c.contact_id),
                (t.identities, t.identities.c.contact_id),
                (t.aliases, t.aliases.c.contact_id),
                (t.events, t.events.c.contact_id),
                (t.property_snapshots, t.property_snapshots.c.contact_id),
                (t.scores, t.scores.c.contact_id),
                (t.segment_members, t.segment_members.c.contact_id),
                (t.last_sent, t.last_sent.c.key),
                (t.record_outcomes, t.record_outcomes.c.key),
            ):
                if ids:
                    removed += (
                        conn.execute(
                            table.delete().where(table.c.tenant_id == tenant_id, col.in_(sorted(ids)))
                        ).rowcount
                        or 0
                    )
            if ids:
                _scrub_run_reports(conn, tenant_id, ids)
                bump(conn, tenant_id, EVENTS)  # the person's events are gone: what scoring reads changed
        return removed


ERASED_ID = "[erased]"


def _scrub_run_reports(conn: sa.Connection, tenant_id: str, ids: set[str]) -> int:
    """Older run reports name contacts by id (failures, plan examples): an erased person's ids go too."""
    changed = 0
    for row in conn.execute(sa.select(t.runs.c.id, t.runs.c.report).where(t.runs.c.tenant_id == tenant_id)):
        clean = _without_ids(row.report, ids)
        if clean != row.report:
            conn.execute(t.runs.update().where(t.runs.c.id == row.id).values(report=clean))
            changed += 1
    return changed


def _without_ids(value: Any, ids: set[str]) -> Any:
    # Exact matches only: an id is an opaque token, and a substring match could hit someone else's.
    if isinstance(value, str):
        return ERASED_ID if value in ids else value
    if isinstance(value, list):
        return [_without_ids(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _without_ids(v, ids) for k, v in value.items() if k not in ids}
    return value

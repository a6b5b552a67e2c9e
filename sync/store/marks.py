"""Per-tenant data marks: a counter of changes to the stored events and the fingerprint of the last scoring.

The identity aggregate bumps ``events`` in the transaction that inserts or changes an event row (and erasure
does, for the rows it deletes), so "has any event changed since?" is one read. The pipeline writes the
``scoring`` mark after the scores and segments it describes are saved, and clears it before saving new ones:
a crash in between leaves no mark, and the next run scores in full (see :mod:`sync.run.reuse`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from core.times import as_utc
from core.times import now as utcnow
from sync.store import schema as t
from sync.store.sqlcore import insert_for

EVENTS = "events"
SCORING = "scoring"


def bump(conn: Connection, tenant_id: str, name: str) -> None:
    """Add one to the tenant's counter ``name`` (created at 1), inside the caller's transaction."""
    marks = t.data_marks
    stmt = insert_for(conn, marks).values(tenant_id=tenant_id, name=name, version=1, updated_at=utcnow())
    conn.execute(stmt.on_conflict_do_update(
        index_elements=["tenant_id", "name"],
        set_={"version": marks.c.version + 1, "updated_at": stmt.excluded.updated_at}))


class DataMarks:
    """Counters and marks per tenant (mixed into :class:`sync.store.sql.SqlStore`)."""

    engine: Engine

    def data_version(self, tenant_id: str, name: str = EVENTS) -> int:
        """How many times the tenant's ``name`` data (``"events"``) changed since the store began counting."""
        marks = t.data_marks
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(marks.c.version).where(
                marks.c.tenant_id == tenant_id, marks.c.name == name)).scalar()
        return int(found or 0)

    def scoring_mark(self, tenant_id: str) -> str | None:
        """The fingerprint stored with the tenant's scores and segments (None: none, or being replaced)."""
        marks = t.data_marks
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(marks.c.value).where(
                marks.c.tenant_id == tenant_id, marks.c.name == SCORING)).scalar()
        return str(value) if value is not None else None

    def set_scoring_mark(self, tenant_id: str, value: str | None) -> None:
        """Store (or with None, clear) the fingerprint that the tenant's stored scores and segments match."""
        marks = t.data_marks
        with self.engine.begin() as conn:
            conn.execute(marks.delete().where(marks.c.tenant_id == tenant_id, marks.c.name == SCORING))
            if value is not None:
                conn.execute(marks.insert().values(tenant_id=tenant_id, name=SCORING, version=0, value=value,
                                                   updated_at=utcnow()))

    def snapshot_stamp(self, tenant_id: str, names: Sequence[str]) -> tuple[int, datetime | None]:
        """(rows, latest ``observed_at``) of the stored property changes of ``names``: a written or rewritten
        row raises the latest time, a deleted one lowers the count."""
        snap = t.property_snapshots
        query = sa.select(sa.func.count(), sa.func.max(snap.c.observed_at)).where(
            snap.c.tenant_id == tenant_id, snap.c.name.in_(sorted(set(names))))
        with self.engine.connect() as conn:
            count, latest = conn.execute(query).one()
        value: Any = latest
        if isinstance(value, str):  # SQLite hands an aggregate back as text, without the column's type
            value = datetime.fromisoformat(value)
        return int(count or 0), as_utc(value) if value is not None else None

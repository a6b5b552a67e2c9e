"""The consent tables (SQLAlchemy Core) on one ``metadata``; the lead's Alembic migrations use it.

Every row carries ``tenant_id``. Timestamps are stored timezone-aware and always come back in UTC
(:class:`UTCDateTime`), on SQLite as well, where the driver would otherwise hand back naive values.

``consent_events`` is append-only. The only in-place change ever made is erasure, which nulls
``subject`` and ``evidence_personal`` and sets ``erased_at`` - none of which is part of the row's
hash, so the chain still verifies after an erasure. Evidence is split on the way in: ``evidence``
holds non-personal, hashed facts (request ids, vendor ids); ``evidence_personal`` holds
everything else (IP address, user agent, ...) and is committed to the chain only through the keyed
``personal_digest``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware DateTime that refuses naive values and always returns UTC.

    The one UTC column type: the sync store's tables (``sync.store.schema``) use it too.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: consent timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        # SQLite keeps text; storing naive UTC keeps the text sortable (the ledger's SQL relies on it).
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


consent_events = sa.Table(
    "consent_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),  # position in the tenant's chain, 1-based
    sa.Column("subject", sa.Text, nullable=True),  # normalised email; NULL after erasure
    sa.Column("subject_key", sa.String(64), nullable=False),  # HMAC pseudonym, survives erasure
    sa.Column("purpose", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("basis", sa.String(64), nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.Column("notice_version", sa.String(64), nullable=True),
    # none_as_null: None is SQL NULL, not the JSON text 'null' (erasure and its guard rely on it)
    sa.Column("evidence", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("evidence_personal", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("personal_digest", sa.String(64), nullable=True),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("erased_at", UTCDateTime, nullable=True),
    sa.CheckConstraint("state in ('granted', 'withdrawn')", name="ck_consent_events_state"),
    # Backstops for the head lock: even a broken lock cannot fork the chain or repeat a key.
    sa.UniqueConstraint("tenant_id", "seq", name="uq_consent_events_seq"),
    sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_consent_events_idempotency"),
    sa.Index("ix_consent_events_subject", "tenant_id", "subject_key", "purpose", "occurred_at"),
)

consent_chain_heads = sa.Table(
    "consent_chain_heads",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("last_id", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("last_hash", sa.String(64), nullable=False),
    # Rows from this seq on are HMAC-keyed (chains begun before revision 0003 start unkeyed).
    sa.Column("keyed_from_seq", sa.BigInteger, nullable=False, server_default="1"),
    # Outbox rows of this tenant from this id on carry a MAC (see consent.integrity).
    sa.Column("outbox_keyed_from_id", sa.BigInteger, nullable=False, server_default="0"),
    # Fingerprint of the chain key: a wrong key is refused instead of missing every pseudonym.
    sa.Column("key_check", sa.String(64), nullable=True),
)

consent_outbox = sa.Table(
    "consent_outbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("subject_key", sa.String(64), nullable=False),
    # Kept only while a vendor still has to be told; erasure clears it once nothing is pending.
    sa.Column("email", sa.Text, nullable=True),
    sa.Column("destination", sa.String(64), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("source_event", sa.BigInteger, nullable=False),  # consent_events.id that caused it
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("done_at", UTCDateTime, nullable=True),
    sa.Column("scrub_on_done", sa.Boolean, nullable=False, default=False),
    # HMAC (chain key) over what the row promises and its status: see consent.integrity.
    sa.Column("mac", sa.String(64), nullable=True),
    sa.CheckConstraint("status in ('pending', 'done', 'failed')", name="ck_consent_outbox_status"),
    sa.UniqueConstraint("tenant_id", "source_event", "destination", name="uq_consent_outbox_event_dest"),
    sa.Index("ix_consent_outbox_due", "status", "next_attempt_at"),
    sa.Index("ix_consent_outbox_subject", "tenant_id", "subject_key"),
    sa.Index("ix_consent_outbox_tenant_id", "tenant_id", "id"),  # the tenant's newest row: migration 0010
)

webhook_receipts = sa.Table(
    "webhook_receipts",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    # "<vendor>:<event id>" or "<vendor>:body:<keyed hash of the body>" - never the body itself.
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
)

consent_aliases = sa.Table(
    "consent_aliases",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("old_subject_key", sa.String(64), nullable=False),
    sa.Column("new_subject_key", sa.String(64), nullable=False),
    sa.Column("old_email", sa.Text, nullable=True),  # NULL after erasure of that subject
    sa.Column("new_email", sa.Text, nullable=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("tenant_id", "old_subject_key", "new_subject_key", name="uq_consent_aliases_pair"),
    sa.Index("ix_consent_aliases_new", "tenant_id", "new_subject_key"),
)


def insert_ignoring_conflicts(conn: sa.Connection, table: sa.Table, columns: Sequence[str] | None = None) -> Any:
    """An INSERT that does nothing on a unique conflict, on PostgreSQL and SQLite alike.

    ``columns`` names one unique key: only a conflict on it is skipped, any other still raises.
    """
    name = conn.dialect.name
    target = list(columns) if columns is not None else None
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=target)
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=target)
    raise NotImplementedError(f"consent storage supports PostgreSQL and SQLite, not {name}")

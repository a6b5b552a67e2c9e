"""contact property snapshots: each changed value with the time it was known from

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 15:20:00

``contacts.properties`` holds the values as of the latest pull. A backtest or a training window
needs them as of a past cutoff (a tier raised by an upgrade must not explain that upgrade), so
every pull also records the values that changed, from when they were known: the vendor's
last-modified time when it gives one that is newer than our previous pull, else the pull time.
Only changes are stored, so a pull that changes nothing writes no row. Existing contacts get one
row per property, known from their ``updated_at`` (the last pull that stored them).
"""

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

IDENTIFIER_HINTS = ("email", "name", "phone", "ip_", "address", "hash", "merge_fields")

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "property_snapshots",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("contact_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "contact_id", "name", "valid_from"),
    )
    conn = op.get_bind()
    contacts = sa.table("contacts", sa.column("tenant_id"), sa.column("contact_id"),
                        sa.column("properties", sa.JSON), sa.column("updated_at", sa.DateTime(timezone=True)))
    snapshots = sa.table("property_snapshots", sa.column("tenant_id"), sa.column("contact_id"), sa.column("name"),
                         sa.column("valid_from", sa.DateTime(timezone=True)), sa.column("value"),
                         sa.column("observed_at", sa.DateTime(timezone=True)))
    batch: list[dict[str, object]] = []
    now = datetime.now(UTC)
    for row in conn.execute(sa.select(contacts)):
        when = row.updated_at or now  # part of the key: never NULL (PostgreSQL refuses it)
        seen: set[str] = set()
        for name, value in (row.properties or {}).items():
            lowered = str(name).lower()
            if lowered.startswith(("segsync", "_")) or any(hint in lowered for hint in IDENTIFIER_HINTS):
                continue  # segsync's own, bookkeeping, personal identifiers: as sync.store.identity at this revision
            key = str(name)[:200]  # the column's width, as sync.store.identity writes it (PostgreSQL enforces it)
            if key in seen:
                continue
            seen.add(key)
            text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
            batch.append({"tenant_id": row.tenant_id, "contact_id": row.contact_id, "name": key,
                          "valid_from": when, "value": text, "observed_at": when})
            if len(batch) >= 5000:
                conn.execute(snapshots.insert(), batch)
                batch = []
    if batch:
        conn.execute(snapshots.insert(), batch)


def downgrade() -> None:
    op.drop_table("property_snapshots")

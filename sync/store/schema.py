"""The sync store's tables (SQLAlchemy Core). Every row carries its tenant id.

Migrations are Alembic revisions in ``sync/migrations``; this module is what they describe.
"""

from __future__ import annotations

import sqlalchemy as sa

from consent.schema import UTCDateTime

metadata = sa.MetaData()
# The consent tables' column type: aware UTC in, aware UTC out on SQLite too, naive values refused.
TS = UTCDateTime()

contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("contact_id", sa.String(64), primary_key=True),  # segsync's own id, stable across vendors
    sa.Column("email", sa.String(320), nullable=True),  # normalised; NULL after erasure
    sa.Column("properties", sa.JSON, nullable=False, default=dict),
    sa.Column("created_at", TS, nullable=True),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("esp_status", sa.String(32), nullable=True),
    sa.Column("archived", sa.Boolean, nullable=False, default=False),
    sa.Index("ix_contacts_email", "tenant_id", "email"),
    # A chunk of the book (sync.store.chunks) reads id, email and ESP status in id order: from this index alone,
    # without reading each contact's row and its properties (3-5x faster per chunk on SQLite).
    sa.Index("ix_contacts_chunk", "tenant_id", "contact_id", "archived", "email", "esp_status"),
)

identities = sa.Table(
    "identities",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("source", sa.String(32), primary_key=True),
    sa.Column("vendor_id", sa.String(128), primary_key=True),
    sa.Column("contact_id", sa.String(64), nullable=False),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("archived", sa.Boolean, nullable=False, default=False),
    sa.Column("merged_into", sa.String(128), nullable=True),
    sa.Column("updated_at", TS, nullable=False),
    # A person's identities by contact id, answered from the index alone (the chunk reads and the ESP audience).
    sa.Index("ix_identities_chunk", "tenant_id", "contact_id", "source", "vendor_id", "email", "archived"),
)

aliases = sa.Table(
    "aliases",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("email", sa.String(320), primary_key=True),
    sa.Column("contact_id", sa.String(64), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("event_key", sa.String(200), primary_key=True),
    sa.Column("contact_id", sa.String(64), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("occurred_at", TS, nullable=False),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("url", sa.String(500), nullable=True),
    sa.Column("session_id", sa.String(128), nullable=True),
    sa.Index("ix_events_contact", "tenant_id", "contact_id"),
)

cursors = sa.Table(
    "cursors",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("stream", sa.String(64), primary_key=True),  # "<connector name>.contacts", ".engagement", ...
    sa.Column("value", sa.Text, nullable=True),
    sa.Column("updated_at", TS, nullable=False),
)

last_sent = sa.Table(
    "last_sent",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("destination", sa.String(128), primary_key=True),  # "crm.properties", "esp.tags", "esp.segment:<name>"
    sa.Column("key", sa.String(320), primary_key=True),  # contact id
    sa.Column("value", sa.Text, nullable=False),  # canonical JSON of what the vendor confirmed
    sa.Column("run_id", sa.Integer, nullable=True),
    sa.Column("sent_at", TS, nullable=False),
    # Write-ahead: set before the batch is sent (value = what the vendor may now hold), cleared by the
    # vendor's answer. Still set at the next run = the outcome is unknown: re-send idempotently.
    sa.Column("in_flight", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    sa.Index("ix_last_sent_key", "tenant_id", "key"),  # forget_sent: one contact's rows, any destination
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("started_at", TS, nullable=False),
    sa.Column("finished_at", TS, nullable=True),
    sa.Column("status", sa.String(32), nullable=False),  # running | ok | failed_records | error | dry_run | refused
    sa.Column("dry_run", sa.Boolean, nullable=False, default=False),
    sa.Column("report", sa.JSON, nullable=True),
    sa.Index("ix_runs_tenant", "tenant_id", "started_at"),
)

record_outcomes = sa.Table(
    "record_outcomes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("destination", sa.String(128), nullable=False),
    sa.Column("key", sa.String(320), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),  # sent | suppressed | failed | skipped
    sa.Column("message", sa.Text, nullable=False, default=""),
    sa.Column("at", TS, nullable=False),
    sa.Index("ix_outcomes_run", "run_id"),
    sa.Index("ix_outcomes_tenant_key", "tenant_id", "key"),
)

scores = sa.Table(
    "scores",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("contact_id", sa.String(64), primary_key=True),
    sa.Column("score", sa.String(64), primary_key=True),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("label", sa.String(128), nullable=True),  # cluster name or tier
    sa.Column("scored_at", TS, nullable=False),
)

segment_members = sa.Table(
    "segment_members",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("segment", sa.String(64), primary_key=True),
    sa.Column("contact_id", sa.String(64), primary_key=True),
    sa.Column("holdout", sa.Boolean, nullable=False),
    sa.Column("assigned_at", TS, nullable=False),
)

# One row per spell of membership: a contact who leaves and comes back starts a new spell. Lift is
# measured from ``first_assigned``, which scheduled re-runs never move (``last_assigned`` does).
segment_history = sa.Table(
    "segment_history",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("segment", sa.String(64), primary_key=True),
    sa.Column("contact_id", sa.String(64), primary_key=True),
    sa.Column("first_assigned", TS, primary_key=True),
    sa.Column("last_assigned", TS, nullable=False),
    sa.Column("left_at", TS, nullable=True),  # NULL while the spell is open
    sa.Column("holdout", sa.Boolean, nullable=False),
)

# What segsync created (or was told to adopt) at a vendor: the only tags, segments and properties it writes
# into. A name that exists at the vendor without a row here belongs to the customer and is refused.
vendor_objects = sa.Table(
    "vendor_objects",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("system", sa.String(32), primary_key=True),  # the connector's name
    sa.Column("kind", sa.String(32), primary_key=True),  # "tag" (an ESP tag or static segment), "property"
    sa.Column("scope", sa.String(128), primary_key=True),  # where the name is unique: audience id, object type
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("vendor_id", sa.String(128), nullable=False, default=""),
    sa.Column("how", sa.String(16), nullable=False),  # creating | created | adopted | lost
    sa.Column("note", sa.Text, nullable=False, default=""),
    sa.Column("recorded_at", TS, nullable=False),
)

# Contact property values as they changed, each from when it was known (the vendor's last-modified
# time when newer than our previous pull, else the pull time); only changes are written. Features
# as of a past cutoff read the value known then, so a property moved by the outcome cannot leak.
property_snapshots = sa.Table(
    "property_snapshots",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("contact_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("valid_from", TS, primary_key=True),
    sa.Column("value", sa.Text, nullable=True),  # canonical JSON
    sa.Column("observed_at", TS, nullable=False),  # the pull that saw it
)

# Per-tenant counters and marks (migration 0009): ``events`` is bumped whenever the stored events change,
# ``scoring`` holds the fingerprint of the inputs the stored scores and segments were computed from.
data_marks = sa.Table(
    "data_marks",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("value", sa.Text, nullable=True),
    sa.Column("updated_at", TS, nullable=False),
)

tenant_locks = sa.Table(
    "tenant_locks",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("expires_at", TS, nullable=False),
)

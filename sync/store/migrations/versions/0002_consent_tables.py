"""consent ledger tables: events (hash chain), chain heads, outbox, webhook receipts, aliases

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 18:00:00

Written out in full (not imported from ``consent.schema``) so the revision never changes after
it ships. Timestamps are plain ``DateTime(timezone=True)``; ``consent.schema.UTCDateTime`` only
adds the UTC conversion in Python.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit column.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table('consent_aliases',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('old_subject_key', sa.String(length=64), nullable=False),
    sa.Column('new_subject_key', sa.String(length=64), nullable=False),
    sa.Column('old_email', sa.Text(), nullable=True),
    sa.Column('new_email', sa.Text(), nullable=True),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'old_subject_key', 'new_subject_key', name='uq_consent_aliases_pair')
    )
    with op.batch_alter_table('consent_aliases', schema=None) as batch_op:
        batch_op.create_index('ix_consent_aliases_new', ['tenant_id', 'new_subject_key'], unique=False)

    op.create_table('consent_chain_heads',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('last_id', sa.BigInteger(), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('last_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id')
    )
    op.create_table('consent_events',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('subject_key', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('basis', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('notice_version', sa.String(length=64), nullable=True),
    sa.Column('evidence', sa.JSON(), nullable=True),
    sa.Column('evidence_personal', sa.JSON(), nullable=True),
    sa.Column('personal_digest', sa.String(length=64), nullable=True),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('erased_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("state in ('granted', 'withdrawn')", name='ck_consent_events_state'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'idempotency_key', name='uq_consent_events_idempotency'),
    sa.UniqueConstraint('tenant_id', 'seq', name='uq_consent_events_seq')
    )
    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.create_index('ix_consent_events_subject', ['tenant_id', 'subject_key', 'purpose', 'occurred_at'], unique=False)

    op.create_table('consent_outbox',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('subject_key', sa.String(length=64), nullable=False),
    sa.Column('email', sa.Text(), nullable=True),
    sa.Column('destination', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('source_event', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('scrub_on_done', sa.Boolean(), nullable=False),
    sa.CheckConstraint("status in ('pending', 'done', 'failed')", name='ck_consent_outbox_status'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'source_event', 'destination', name='uq_consent_outbox_event_dest')
    )
    with op.batch_alter_table('consent_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_consent_outbox_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_consent_outbox_subject', ['tenant_id', 'subject_key'], unique=False)

    op.create_table('webhook_receipts',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'key')
    )
    _create_append_only_guard()


def downgrade() -> None:
    _drop_append_only_guard()
    op.drop_table('webhook_receipts')
    with op.batch_alter_table('consent_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_consent_outbox_subject')
        batch_op.drop_index('ix_consent_outbox_due')

    op.drop_table('consent_outbox')
    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.drop_index('ix_consent_events_subject')

    op.drop_table('consent_events')
    op.drop_table('consent_chain_heads')
    with op.batch_alter_table('consent_aliases', schema=None) as batch_op:
        batch_op.drop_index('ix_consent_aliases_new')

    op.drop_table('consent_aliases')


# consent_events is append-only: the database refuses a DELETE, and an UPDATE other than erasure
# (which only nulls ``subject`` and ``evidence_personal`` and sets ``erased_at``). The hash chain
# still detects what someone with the rights to drop this guard does; the guard stops accidents.
_KEPT = ("id", "tenant_id", "seq", "subject_key", "purpose", "state", "basis", "source", "occurred_at",
         "recorded_at", "notice_version", "personal_digest", "idempotency_key", "prev_hash", "hash")


def _create_append_only_guard() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        same = " AND ".join(f"NEW.{c} IS NOT DISTINCT FROM OLD.{c}" for c in _KEPT)
        op.execute(f"""
            CREATE FUNCTION consent_events_append_only() RETURNS trigger AS $$
            BEGIN
                IF TG_OP = 'DELETE' THEN
                    RAISE EXCEPTION 'consent_events is append-only: rows are never deleted';
                END IF;
                IF NOT ({same} AND NEW.evidence::text IS NOT DISTINCT FROM OLD.evidence::text
                        AND (NEW.subject IS NULL OR NEW.subject IS NOT DISTINCT FROM OLD.subject)
                        AND (NEW.evidence_personal IS NULL OR NEW.evidence_personal::text = 'null'
                             OR NEW.evidence_personal::text IS NOT DISTINCT FROM OLD.evidence_personal::text)
                        AND (NEW.erased_at IS NOT NULL OR OLD.erased_at IS NULL)) THEN
                    RAISE EXCEPTION 'consent_events is append-only: only erasure may change a row';
                END IF;
                RETURN NEW;
            END $$ LANGUAGE plpgsql
        """)
        op.execute("CREATE TRIGGER consent_events_append_only BEFORE UPDATE OR DELETE ON consent_events "
                   "FOR EACH ROW EXECUTE FUNCTION consent_events_append_only()")
    elif dialect == "sqlite":
        same = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in _KEPT)
        op.execute("CREATE TRIGGER consent_events_no_delete BEFORE DELETE ON consent_events "
                   "BEGIN SELECT RAISE(ABORT, 'consent_events is append-only: rows are never deleted'); END")
        op.execute(f"""
            CREATE TRIGGER consent_events_erasure_only BEFORE UPDATE ON consent_events
            WHEN NOT ({same} AND NEW.evidence IS OLD.evidence
                      AND (NEW.subject IS NULL OR NEW.subject IS OLD.subject)
                      AND (NEW.evidence_personal IS NULL OR NEW.evidence_personal = 'null'
                           OR NEW.evidence_personal IS OLD.evidence_personal)
                      AND (NEW.erased_at IS NOT NULL OR OLD.erased_at IS NULL))
            BEGIN SELECT RAISE(ABORT, 'consent_events is append-only: only erasure may change a row'); END
        """)


def _drop_append_only_guard() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS consent_events_append_only ON consent_events")
        op.execute("DROP FUNCTION IF EXISTS consent_events_append_only()")
    elif dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS consent_events_no_delete")
        op.execute("DROP TRIGGER IF EXISTS consent_events_erasure_only")

"""consent_outbox: an index on (tenant_id, id), so a tenant's newest outbox row is one index lookup

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 00:20:00

Every write that queues outbox actions reads the tenant's newest row first (signed rows name the row
before them). With only (tenant_id, subject_key) to go by, that read visited every outbox row the tenant
ever had, inside the transaction that holds the tenant's chain head, so each webhook group got slower
as the outbox grew.
"""

from alembic import op


revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_consent_outbox_tenant_id", "consent_outbox", ["tenant_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_consent_outbox_tenant_id", table_name="consent_outbox")

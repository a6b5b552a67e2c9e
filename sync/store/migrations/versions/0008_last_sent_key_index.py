"""last_sent: an index on (tenant_id, key), so forgetting one contact's sent state is a lookup

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 15:30:00

After an opt-out the outbox drops the contact's last-sent rows under a destination prefix. The
primary key leads with the destination, so without this index that delete read every last-sent
row of the tenant, once per opt-out (81 % of the drain's CPU at 100,000 contacts).
"""

from alembic import op


revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_last_sent_key", "last_sent", ["tenant_id", "key"])


def downgrade() -> None:
    op.drop_index("ix_last_sent_key", table_name="last_sent")

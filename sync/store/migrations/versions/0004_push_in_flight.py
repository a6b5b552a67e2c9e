"""push write-ahead: last-sent rows may be "in flight" (sent, not yet confirmed by the vendor)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 13:00:00

Before a batch goes to a vendor its records are written to ``last_sent`` with ``in_flight`` set and
the value the vendor may now hold (what was there before combined with what is being sent). The
vendor's answer replaces them with the confirmed value. A run killed in between leaves the flag
set: the next plan re-sends those records idempotently (clears included) and the opt-out handlers
see that something of ours may be there.
"""

from alembic import op
import sqlalchemy as sa


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("last_sent", schema=None) as batch_op:
        batch_op.add_column(sa.Column("in_flight", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("last_sent", schema=None) as batch_op:
        batch_op.drop_column("in_flight")

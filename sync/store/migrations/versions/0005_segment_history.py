"""segment membership history: first assigned, last assigned, left

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 13:10:00

``segment_members`` keeps the current assignment; ``segment_history`` keeps every spell of
membership so lift can be measured from when a contact was first put in a segment, however
often a schedule re-runs the sync. Existing assignments become open spells that start at their
stored ``assigned_at`` (the best date known for them).
"""

from alembic import op
import sqlalchemy as sa


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "segment_history",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("segment", sa.String(length=64), nullable=False),
        sa.Column("contact_id", sa.String(length=64), nullable=False),
        sa.Column("first_assigned", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_assigned", sa.DateTime(timezone=True), nullable=False),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "segment", "contact_id", "first_assigned"),
    )
    op.execute("INSERT INTO segment_history (tenant_id, segment, contact_id, first_assigned, last_assigned, left_at, "
               "holdout) SELECT tenant_id, segment, contact_id, assigned_at, assigned_at, NULL, holdout "
               "FROM segment_members")


def downgrade() -> None:
    op.drop_table("segment_history")

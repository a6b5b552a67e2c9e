"""data_marks: per-tenant counters and marks, so a run with nothing new can reuse the last scoring

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 18:30:00

``events`` counts every time the tenant's stored events changed (a new event, a changed one, an
erasure); ``scoring`` holds the fingerprint of the inputs the stored scores and segments were computed
from. A run whose inputs have the same fingerprint reuses them instead of re-reading and re-scoring
the whole book; anything else (no mark, another fingerprint) scores in full. Existing installs start
with no rows: their first run after the upgrade scores in full and writes the mark.
"""

from alembic import op
import sqlalchemy as sa


revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_marks",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name"),
    )


def downgrade() -> None:
    op.drop_table("data_marks")

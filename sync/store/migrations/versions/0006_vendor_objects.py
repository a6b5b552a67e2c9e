"""vendor objects segsync created or adopted (ESP tags/segments, CRM properties)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 15:20:00

segsync writes only into vendor objects it created (or that the user told it to adopt): a tag or
property that exists under one of segsync's names without a row here is the customer's and is refused.
Existing installs start with no rows; what happens to the objects they already created is decided at
the first push after the upgrade, by each connector (README, "Objects segsync creates"): a CRM property
created through the API in segsync's own group is adopted; an ESP tag is adopted when it holds members
and each is one segsync sent to it; anything else is refused until the user adopts or renames it.
"""

from alembic import op
import sqlalchemy as sa


revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vendor_objects",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("system", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("scope", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("vendor_id", sa.String(length=128), nullable=False),
        sa.Column("how", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "system", "kind", "scope", "name"),
    )


def downgrade() -> None:
    op.drop_table("vendor_objects")

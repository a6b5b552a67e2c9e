"""keyed consent chain: chain-head markers for the keyed part, outbox row MACs

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 12:00:00

From this revision on the consent chain is HMAC-SHA256 with a key kept outside the database
(consent.keys, consent.chain) and outbox rows carry a MAC (consent.integrity). A migration has no
access to that key, so existing rows cannot be re-keyed here. The chain is *versioned* instead:
each existing chain head gets ``keyed_from_seq = last_seq + 1`` (rows before it stay plain
SHA-256 and verify as before) and ``outbox_keyed_from_id`` = the next outbox id (older outbox rows
carry no MAC). Honest note: those older rows are only as safe as before - someone with write
access could recompute them and lower the markers. Take a checkpoint right after upgrading
(``segsync consent checkpoint CONFIG --out FILE``) and keep it outside the database: ``verify
--against FILE`` then detects any such rewrite.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("consent_chain_heads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("keyed_from_seq", sa.BigInteger(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("outbox_keyed_from_id", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("key_check", sa.String(length=64), nullable=True))
    with op.batch_alter_table("consent_outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mac", sa.String(length=64), nullable=True))
    # Existing chains: everything already written stays unkeyed (see the module docstring).
    op.execute("UPDATE consent_chain_heads SET keyed_from_seq = last_seq + 1, "
               "outbox_keyed_from_id = (SELECT COALESCE(MAX(id), 0) + 1 FROM consent_outbox)")


def downgrade() -> None:
    with op.batch_alter_table("consent_outbox", schema=None) as batch_op:
        batch_op.drop_column("mac")
    with op.batch_alter_table("consent_chain_heads", schema=None) as batch_op:
        batch_op.drop_column("key_check")
        batch_op.drop_column("outbox_keyed_from_id")
        batch_op.drop_column("keyed_from_seq")

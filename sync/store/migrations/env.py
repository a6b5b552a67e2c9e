"""Alembic environment: one schema for the sync store and the consent ledger."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from sync.store.schema import metadata as sync_metadata

try:  # the consent ledger's tables live in its own module
    from consent.schema import metadata as consent_metadata

    target_metadata = [sync_metadata, consent_metadata]
except ImportError:  # pragma: no cover - only while bootstrapping
    target_metadata = [sync_metadata]

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    if url is None:  # migrate.py always sets it; a bare `alembic upgrade` without one cannot know the store
        raise RuntimeError("sqlalchemy.url is not set: run migrations through segsync (sync.store.migrate)")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()

"""Run Alembic migrations programmatically (no alembic.ini needed at run time).

Several processes may start at once on a fresh PostgreSQL database (two servers, a server and a
CLI command): each would see no ``alembic_version`` and create the same tables, and all but one
would fail. :func:`upgrade` therefore takes a transaction-scoped advisory lock first, so the
others wait, then find the schema current and do nothing.
"""

from __future__ import annotations

import functools
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"

#: The advisory-lock key that serialises migrations (any constant; "segsync migrate" as a number).
MIGRATION_LOCK_KEY = 0x5E6_5_1C_0_0001


def alembic_config(engine: Engine | None = None) -> AlembicConfig:
    """An Alembic config pointing at segsync's migrations (and ``engine``'s URL if given)."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


@functools.cache
def head() -> str | None:
    """The newest revision of segsync's migrations, read once a process (the scripts do not change under it)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database behind ``engine`` to ``revision`` inside one transaction.

    On PostgreSQL the transaction first takes ``pg_advisory_xact_lock``: concurrent upgrades run
    one after the other, and the lock is released by the commit (or the rollback) by itself.
    A store already at the newest revision is left alone after one read of its version: every
    open of the store (each CLI command, each run) would otherwise have Alembic load every migration
    script only to find nothing to do.
    """
    from alembic.runtime.migration import MigrationContext

    cfg = alembic_config(engine)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        if revision == "head" and MigrationContext.configure(conn).get_current_revision() == head():
            return
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current(engine: Engine) -> str | None:
    """The database's current Alembic revision (None when it was never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()

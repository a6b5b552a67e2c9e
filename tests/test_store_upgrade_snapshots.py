"""Revision 0007 on a store written before it: existing contacts' properties are backfilled as snapshots,
on SQLite and PostgreSQL alike (PostgreSQL enforces the name column's width, SQLite does not)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa

from sync.store.migrate import current, upgrade
from sync.store.sqlcore import make_engine

T = datetime(2025, 6, 1, tzinfo=UTC)
LONG = "custom_" + "x" * 250  # a slugged custom-field name longer than the column


def test_the_snapshot_backfill_survives_long_property_names_on_both_stores(db_url) -> None:
    engine = make_engine(db_url)
    upgrade(engine, "0006")
    with engine.begin() as conn:
        conn.execute(sa.text("insert into contacts (tenant_id, contact_id, email, properties, updated_at, archived) "
                             "values (:t, :c, :e, :p, :u, :a)"),
                     {"t": "harbor", "c": "c1", "e": "ann@example.com", "u": T, "a": False,
                      "p": json.dumps({"aum": 120000, LONG: "a", LONG + "y": "b", "firstname": "Ann"})})
    upgrade(engine)
    assert current(engine) is not None  # at the head, whatever revisions follow 0007
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select name, value from property_snapshots order by name")).all()
    names = [r.name for r in rows]
    assert "aum" in names and "firstname" not in names  # identifiers keep no history
    assert LONG[:200] in names and len(names) == len(set(names))  # cut to the column, once
    assert all(len(n) <= 200 for n in names)
    engine.dispose()


def test_the_migrations_form_one_line_with_one_head() -> None:
    """Branches merged with a revision each off the same parent leave two heads, and `upgrade head` fails."""
    from alembic.script import ScriptDirectory

    from sync.store.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1, script.get_heads()
    assert len(list(script.walk_revisions())) == len({r.revision for r in script.walk_revisions()})

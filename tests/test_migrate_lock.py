"""Migrations started together on a fresh PostgreSQL schema are serialised (issue 20, item 7)."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from sync.store.migrate import current, upgrade

pytestmark = pytest.mark.postgres


def test_five_simultaneous_migrations_on_a_fresh_schema_all_succeed(pg_url) -> None:
    engines = [sa.create_engine(pg_url) for _ in range(5)]
    start = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def migrate(engine: sa.Engine) -> None:
        start.wait()
        try:
            upgrade(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        heads = {current(e) for e in engines}
        assert len(heads) == 1 and None not in heads
        with engines[0].connect() as conn:
            assert conn.execute(sa.text("select count(*) from alembic_version")).scalar_one() == 1
    finally:
        for e in engines:
            e.dispose()

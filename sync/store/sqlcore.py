"""SQL building blocks the store's parts share: the engine, UTC times, canonical JSON, upserts, chunks."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from core.errors import ConfigError


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and foreign keys, PostgreSQL a pool check."""
    try:
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 30})

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            return engine
        return sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise ConfigError(f"store: cannot use {url.split('@')[-1]!r}: {exc}") from None


def canonical(value: Any) -> str:
    """The canonical JSON text of a value: what last-sent state compares."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def insert_for(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT (both have ON CONFLICT) for ``table``."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def upsert(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> None:
    """Insert rows, updating every non-key column on a key conflict (SQLite and PostgreSQL)."""
    if not rows:
        return
    update_cols = tuple(c for c in rows[0] if c not in keys)
    conn.execute(_upsert_statement(conn.dialect.name, table, tuple(keys), update_cols), list(rows))


@functools.lru_cache(maxsize=256)
def _upsert_statement(dialect: str, table: sa.Table, keys: tuple[str, ...], update_cols: tuple[str, ...]) -> Any:
    """The INSERT .. ON CONFLICT for one table and column set, built once: the store upserts per pushed batch
    (one record a batch for CRMs without batch writes), and building the statement cost more than running it."""
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    if update_cols:
        return stmt.on_conflict_do_update(index_elements=list(keys), set_={c: stmt.excluded[c] for c in update_cols})
    return stmt.on_conflict_do_nothing(index_elements=list(keys))


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` in slices of at most ``size`` (keeps IN lists and bulk inserts under driver limits)."""
    items = list(items)
    for i in range(0, len(items), size):
        yield items[i : i + size]

"""The runs aggregate: the run log and the per-tenant run lock (never two runs of one tenant at once)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core.times import as_utc
from core.times import now as utcnow
from sync.store import schema as t
from sync.store.interface import TenantBusy, TenantLease
from sync.store.sqlcore import canonical, insert_for

log = logging.getLogger("segsync.store")


class RunLog:
    """Runs, their outcomes and the tenant lock (mixed into :class:`sync.store.sql.SqlStore`)."""

    engine: Engine

    # ------------------------------------------------------------------ runs

    def start_run(self, tenant_id: str, dry_run: bool) -> int:
        with self.engine.begin() as conn:
            key = conn.execute(
                t.runs.insert().values(tenant_id=tenant_id, started_at=utcnow(), status="running", dry_run=dry_run)
            ).inserted_primary_key
            assert key is not None  # an INSERT of one row always reports its key
            return int(key[0])

    def finish_run(self, run_id: int, status: str, report: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                t.runs.update()
                .where(t.runs.c.id == run_id)
                .values(finished_at=utcnow(), status=status, report=json.loads(canonical(report)))
            )

    def runs(self, tenant_id: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        q = sa.select(t.runs).order_by(t.runs.c.id.desc()).limit(limit)
        if tenant_id:
            q = q.where(t.runs.c.tenant_id == tenant_id)
        with self.engine.connect() as conn:
            return [r._asdict() for r in conn.execute(q)]

    def outcomes(self, run_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                r._asdict()
                for r in conn.execute(sa.select(t.record_outcomes).where(t.record_outcomes.c.run_id == run_id))
            ]

    # ------------------------------------------------------------------ locks

    def _clear_dead_holder(self, tenant_id: str) -> None:
        """SQLite: a lock left by a process on this host that no longer exists (killed) is released."""
        with self.engine.begin() as conn:
            owner = conn.execute(
                sa.select(t.tenant_locks.c.holder).where(t.tenant_locks.c.tenant_id == tenant_id)
            ).scalar()
            if not owner:
                return
            host, _, rest = owner.partition(":")
            pid = rest.partition(":")[0]
            if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
                log.warning("tenant %s: releasing the lock of process %s, which no longer runs", tenant_id, pid)
                conn.execute(
                    t.tenant_locks.delete().where(
                        t.tenant_locks.c.tenant_id == tenant_id, t.tenant_locks.c.holder == owner
                    )
                )

    def _mark_interrupted(self, tenant_id: str) -> None:
        """With the lock just taken, any run of the tenant still "running" died without finishing."""
        with self.engine.begin() as conn:
            done = conn.execute(
                t.runs.update()
                .where(t.runs.c.tenant_id == tenant_id, t.runs.c.status == "running")
                .values(status="interrupted", finished_at=utcnow())
            ).rowcount
        if done:
            log.warning("tenant %s: %d earlier run(s) never finished (killed); marked interrupted", tenant_id, done)

    @contextmanager
    def tenant_lock(self, tenant_id: str, ttl: timedelta = timedelta(hours=2)) -> Iterator[TenantLease]:
        """Hold the tenant's run lock, or raise :class:`TenantBusy`. Never two runs of one tenant at once.

        PostgreSQL: a session advisory lock on a connection of its own (not pooled, TCP keepalives on),
        released by the server if the process dies; the lease checks that very session still holds it.
        SQLite: a row with an expiry, taken with a conditional insert/update; the lease checks the row.
        """
        if self.engine.dialect.name == "postgresql":
            with self._pg_lock(tenant_id) as lease:
                self._mark_interrupted(tenant_id)
                yield lease
            return
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._clear_dead_holder(tenant_id)
        now = utcnow()
        with self.engine.begin() as conn:
            upsert_stmt = insert_for(conn, t.tenant_locks).values(
                tenant_id=tenant_id, holder=holder, expires_at=now + ttl
            )
            upsert_stmt = upsert_stmt.on_conflict_do_update(
                index_elements=["tenant_id"],
                set_={"holder": holder, "expires_at": now + ttl},
                where=t.tenant_locks.c.expires_at < now,
            )
            conn.execute(upsert_stmt)
            owner = conn.execute(
                sa.select(t.tenant_locks.c.holder).where(t.tenant_locks.c.tenant_id == tenant_id)
            ).scalar()
        if owner != holder:
            raise TenantBusy(f"tenant {tenant_id}: another run holds its lock ({owner})")

        # Built once: the check runs before every vendor call, and building the statement cost more than running it.
        lock_row = sa.select(t.tenant_locks.c.holder, t.tenant_locks.c.expires_at).where(
            t.tenant_locks.c.tenant_id == tenant_id
        )

        def still_held() -> bool:
            with self.engine.connect() as conn:
                row = conn.execute(lock_row).first()
            expires = as_utc(row.expires_at) if row else None
            return row is not None and row.holder == holder and expires is not None and expires > utcnow()

        try:
            self._mark_interrupted(tenant_id)
            yield TenantLease(tenant_id, still_held)
        finally:
            with self.engine.begin() as conn:
                conn.execute(
                    t.tenant_locks.delete().where(
                        t.tenant_locks.c.tenant_id == tenant_id, t.tenant_locks.c.holder == holder
                    )
                )

    @contextmanager
    def _pg_lock(self, tenant_id: str) -> Iterator[TenantLease]:
        # A connection of its own, outside the pool: nothing else runs on it, it is never recycled
        # while held, and keepalives make a dead peer (or a cut network) end the session - and so
        # free the lock - within about a minute instead of hours.
        engine = sa.create_engine(self.engine.url, poolclass=sa.pool.NullPool, connect_args=KEEPALIVES)
        conn = engine.connect()
        try:
            schema = conn.execute(sa.text("select current_schema()")).scalar()
            key = advisory_key(str(schema), tenant_id)
            got = conn.execute(sa.text("select pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            conn.commit()
            if not got:
                raise TenantBusy(f"tenant {tenant_id}: another run holds its lock")

            def still_held() -> bool:
                # The fencing check: this very session still holds this very lock.
                held = conn.execute(
                    sa.text(
                        "select count(*) from pg_locks where locktype = 'advisory' and granted "
                        "and pid = pg_backend_pid() and classid = :hi and objid = :lo and objsubid = 1"
                    ),
                    split_key(key),
                ).scalar()
                conn.commit()
                return bool(held)

            lease = TenantLease(tenant_id, still_held)
            try:
                yield lease
            finally:
                if not lease.lost:  # a lost lock died with its session; a new session holds nothing
                    try:
                        conn.execute(sa.text("select pg_advisory_unlock(:k)"), {"k": key})
                        conn.commit()
                    except sa.exc.SQLAlchemyError:
                        log.warning("tenant %s: the lock's session was already gone at release", tenant_id)
        finally:
            try:
                conn.close()
            finally:
                engine.dispose()


# libpq TCP keepalives for the lock's connection: first probe after 30 s idle, then every 10 s, 3 misses.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


def advisory_key(schema: str, tenant_id: str) -> int:
    """The advisory lock key of a tenant. Advisory locks are database-wide: the schema is part of the
    key, so two segsync stores in one database (or parallel test schemas) never block each other."""
    return int.from_bytes(hashlib.sha256(f"segsync:{schema}:{tenant_id}".encode()).digest()[:8], "big", signed=True)


def split_key(key: int) -> dict[str, int]:
    """pg_locks shows a bigint advisory key as two unsigned 32-bit halves (classid, objid)."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""The sync store: contacts and identities, events, cursors, last-sent state, runs, locks.

One module owns this state (the consent ledger has its own, in ``consent``). Writes that
belong together go in one transaction: a pulled page and its cursor; a confirmed batch and
its last-sent rows and outcomes. That is what makes a crash resumable without loss or
duplicates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from connectors.base import Contact, EngagementEvent, normalize_email
from connectors.errors import ConfigError, SegsyncError
from sync.store import schema as t


log = logging.getLogger("segsync.store")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything inside segsync is UTC-aware."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


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


def _insert(conn: Connection, table: sa.Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def upsert(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> None:
    """Insert rows, updating every non-key column on a key conflict (SQLite and PostgreSQL)."""
    if not rows:
        return
    stmt = _insert(conn, table)
    update_cols = [c for c in rows[0] if c not in keys]
    if update_cols:
        stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_={c: stmt.excluded[c] for c in update_cols})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
    conn.execute(stmt, list(rows))


def contact_id_for(tenant_id: str, source: str, vendor_id: str) -> str:
    """Deterministic id for a new contact, so a rebuilt store gives the same ids (and holdouts)."""
    return "c" + hashlib.sha256(f"{tenant_id}|{source}|{vendor_id}".encode()).hexdigest()[:15]


@dataclass
class PageResult:
    new: int = 0
    changed: int = 0
    events: int = 0


@dataclass(frozen=True)
class Identity:
    contact_id: str
    email: str | None
    vendor_ids: dict[str, str]  # source -> vendor id


class Store:
    """All sync state behind one small API. Construct with :meth:`open`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str, migrate: bool = True) -> Store:
        store = cls(make_engine(url))
        if migrate:
            store.migrate()
        return store

    def migrate(self) -> None:
        """Bring the schema to the latest Alembic revision (sync and consent tables alike)."""
        from sync.store.migrate import upgrade

        upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ pulls

    def store_page(
        self,
        tenant_id: str,
        contacts: Sequence[Contact],
        events: Sequence[EngagementEvent],
        cursor: tuple[str, str | None] | None,
    ) -> PageResult:
        """Store a pulled page and (in the same transaction) its cursor."""
        result = PageResult()
        now = utcnow()
        with self.engine.begin() as conn:
            if contacts:
                self._resolve(conn, tenant_id, contacts, now, result)
            if events:
                result.events = self._store_events(conn, tenant_id, events)
            if cursor is not None and cursor[1] is not None:
                upsert(
                    conn,
                    t.cursors,
                    [{"tenant_id": tenant_id, "stream": cursor[0], "value": cursor[1], "updated_at": now}],
                    ["tenant_id", "stream"],
                )
        return result

    def _lookup(self, conn: Connection, tenant_id: str, source: str, vendor_ids: set[str], emails: set[str]) -> tuple[dict, dict]:
        by_vendor: dict[str, tuple[str, str | None]] = {}
        for chunk in _chunks(sorted(vendor_ids), 500):
            rows = conn.execute(
                sa.select(t.identities.c.vendor_id, t.identities.c.contact_id, t.identities.c.email).where(
                    t.identities.c.tenant_id == tenant_id,
                    t.identities.c.source == source,
                    t.identities.c.vendor_id.in_(chunk),
                )
            )
            by_vendor.update({r.vendor_id: (r.contact_id, r.email) for r in rows})
        by_email: dict[str, str] = {}
        for chunk in _chunks(sorted(emails), 500):
            rows = conn.execute(
                sa.select(t.aliases.c.email, t.aliases.c.contact_id).where(
                    t.aliases.c.tenant_id == tenant_id, t.aliases.c.email.in_(chunk)
                )
            )
            by_email.update({r.email: r.contact_id for r in rows})
            rows = conn.execute(
                sa.select(t.contacts.c.email, t.contacts.c.contact_id).where(
                    t.contacts.c.tenant_id == tenant_id, t.contacts.c.email.in_(chunk)
                )
            )
            by_email.update({r.email: r.contact_id for r in rows})
        return by_vendor, by_email

    def _resolve(self, conn: Connection, tenant_id: str, contacts: Sequence[Contact], now: datetime, result: PageResult) -> None:
        """Identity resolution: vendor id, then normalised email or alias, else a new contact."""
        source = contacts[0].source
        emails = {e for c in contacts for e in [normalize_email(c.email), *map(normalize_email, c.previous_emails)] if e}
        merged = {c.merged_into for c in contacts if c.merged_into}
        by_vendor, by_email = self._lookup(conn, tenant_id, source, {c.vendor_id for c in contacts} | merged, emails)
        contact_rows: dict[str, dict[str, Any]] = {}
        identity_rows, alias_rows = [], []
        for c in contacts:
            email = normalize_email(c.email)
            known = by_vendor.get(c.vendor_id)
            if c.merged_into and c.merged_into in by_vendor:
                contact_id = by_vendor[c.merged_into][0]  # a CRM merge: the loser's id now points at the survivor
            elif known:
                contact_id = known[0]
            elif email and email in by_email:
                contact_id = by_email[email]
            else:
                contact_id = next(
                    (by_email[normalize_email(p)] for p in c.previous_emails if normalize_email(p) in by_email),
                    contact_id_for(tenant_id, source, c.vendor_id),
                )
            if known is None:
                result.new += 1
            else:
                result.changed += 1
            if known and known[1] and email and known[1] != email:
                alias_rows.append({"tenant_id": tenant_id, "email": known[1], "contact_id": contact_id, "reason": "email_change", "created_at": now})
            for old in c.previous_emails:
                if normalize_email(old):
                    alias_rows.append({"tenant_id": tenant_id, "email": normalize_email(old), "contact_id": contact_id, "reason": "email_change", "created_at": now})
            identity_rows.append(
                {
                    "tenant_id": tenant_id,
                    "source": source,
                    "vendor_id": c.vendor_id,
                    "contact_id": contact_id,
                    "email": email,
                    "archived": bool(c.archived or c.merged_into),
                    "merged_into": c.merged_into,
                    "updated_at": now,
                }
            )
            if c.merged_into or c.archived:
                continue
            if email:
                by_email[email] = contact_id
            by_vendor[c.vendor_id] = (contact_id, email)
            row = contact_rows.setdefault(contact_id, {"tenant_id": tenant_id, "contact_id": contact_id, "properties": {}})
            if known or contact_id == contact_id_for(tenant_id, source, c.vendor_id):
                # Only a record's own source may change its address; a match by alias must not undo a change.
                row["email"] = email or row.get("email")
            row["properties"] = {**row["properties"], **{k: v for k, v in c.properties.items() if v is not None}}
            row["created_at"] = as_utc(c.created_at) or row.get("created_at")
            row["updated_at"] = now
            if c.status is not None:
                row["esp_status"] = c.status
        self._merge_contacts(conn, tenant_id, list(contact_rows.values()))
        upsert(conn, t.identities, identity_rows, ["tenant_id", "source", "vendor_id"])
        if alias_rows:
            dedup = {(r["tenant_id"], r["email"]): r for r in alias_rows}
            upsert(conn, t.aliases, list(dedup.values()), ["tenant_id", "email"])

    def _merge_contacts(self, conn: Connection, tenant_id: str, rows: list[dict[str, Any]]) -> None:
        """Upsert contacts, merging properties with what other sources already said."""
        if not rows:
            return
        existing: dict[str, dict[str, Any]] = {}
        for chunk in _chunks([r["contact_id"] for r in rows], 500):
            for r in conn.execute(sa.select(t.contacts).where(t.contacts.c.tenant_id == tenant_id, t.contacts.c.contact_id.in_(chunk))):
                existing[r.contact_id] = r._asdict()
        out = []
        for r in rows:
            old = existing.get(r["contact_id"], {})
            out.append(
                {
                    "tenant_id": tenant_id,
                    "contact_id": r["contact_id"],
                    "email": r.get("email") or old.get("email"),
                    "properties": {**(old.get("properties") or {}), **r["properties"]},
                    # The earliest creation any system reports: stable whichever source is pulled last.
                    "created_at": min((d for d in (as_utc(r.get("created_at")), as_utc(old.get("created_at"))) if d), default=None),
                    "updated_at": r["updated_at"],
                    "esp_status": r.get("esp_status", old.get("esp_status")),
                    "archived": False,
                }
            )
        upsert(conn, t.contacts, out, ["tenant_id", "contact_id"])

    def _store_events(self, conn: Connection, tenant_id: str, evts: Sequence[EngagementEvent]) -> int:
        source = evts[0].source
        ids = {e.contact_vendor_id for e in evts}
        emails = {normalize_email(e.email) for e in evts if e.email}
        by_vendor, by_email = self._lookup(conn, tenant_id, source, ids, {e for e in emails if e})
        rows = {}
        for e in evts:
            contact = by_vendor.get(e.contact_vendor_id, (None,))[0] or by_email.get(normalize_email(e.email) or "")
            if contact is None:
                continue  # an event for someone we do not know (yet); the next pull of contacts brings them
            key = f"{e.source}:{e.event_id or hashlib.sha1(canonical([e.contact_vendor_id, e.type, e.occurred_at]).encode()).hexdigest()}"
            rows[key] = {
                "tenant_id": tenant_id,
                "event_key": key[:200],
                "contact_id": contact,
                "type": e.type,
                "occurred_at": as_utc(e.occurred_at),
                "value": e.value,
                "url": (e.attributes.get("url") or None) if e.attributes else None,
                "session_id": (e.attributes.get("session_id") or None) if e.attributes else None,
            }
        upsert(conn, t.events, list(rows.values()), ["tenant_id", "event_key"])
        return len(rows)

    def cursor(self, tenant_id: str, stream: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(t.cursors.c.value).where(t.cursors.c.tenant_id == tenant_id, t.cursors.c.stream == stream)
            ).scalar()

    # ------------------------------------------------------------------ reads for scoring and planning

    def contacts(self, tenant_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.contacts).where(t.contacts.c.tenant_id == tenant_id, t.contacts.c.archived.is_(False))
            )
            return [r._asdict() for r in rows]

    def addresses(self, tenant_id: str, contact_ids: Sequence[str] | None = None) -> dict[str, set[str]]:
        """contact id -> every email we know for the person (current, at each vendor, former)."""
        out: dict[str, set[str]] = {}
        with self.engine.connect() as conn:
            for table in (t.contacts, t.identities, t.aliases):
                query = sa.select(table.c.contact_id, table.c.email).where(table.c.tenant_id == tenant_id, table.c.email.is_not(None))
                if contact_ids is not None:
                    query = query.where(table.c.contact_id.in_(sorted(set(contact_ids))))
                rows = conn.execute(query)
                for cid, email in rows:
                    out.setdefault(cid, set()).add(email)
        return out

    def contact_by_email(self, tenant_id: str, email: str) -> str | None:
        """The contact id for an email, current or an alias (None when unknown)."""
        email = normalize_email(email) or ""
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(t.contacts.c.contact_id).where(t.contacts.c.tenant_id == tenant_id, t.contacts.c.email == email)
            ).scalar()
            if found is None:
                found = conn.execute(
                    sa.select(t.aliases.c.contact_id).where(t.aliases.c.tenant_id == tenant_id, t.aliases.c.email == email)
                ).scalar()
            return found

    def email_for_vendor_id(self, tenant_id: str, source: str, vendor_id: str) -> str | None:
        """The current email of the contact a vendor id belongs to (None when unknown)."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(t.contacts.c.email)
                .join(t.identities, sa.and_(t.identities.c.tenant_id == t.contacts.c.tenant_id, t.identities.c.contact_id == t.contacts.c.contact_id))
                .where(t.identities.c.tenant_id == tenant_id, t.identities.c.source == source, t.identities.c.vendor_id == vendor_id)
            ).scalar()

    def vendor_ids(self, tenant_id: str, source: str) -> dict[str, str]:
        """contact id -> the live (not archived or merged) vendor id at ``source``."""
        return self._live_identities(tenant_id, source, t.identities.c.vendor_id)

    def identity_emails(self, tenant_id: str, source: str) -> dict[str, str]:
        """contact id -> the email a vendor has for the person (live identities with an email)."""
        return self._live_identities(tenant_id, source, t.identities.c.email)

    def _live_identities(self, tenant_id: str, source: str, column: sa.Column) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.identities.c.contact_id, column).where(
                    t.identities.c.tenant_id == tenant_id,
                    t.identities.c.source == source,
                    t.identities.c.archived.is_(False),
                    column.is_not(None),
                )
            )
            return {cid: value for cid, value in rows}

    def events(self, tenant_id: str) -> Iterator[dict[str, Any]]:
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=50_000).execute(
                sa.select(
                    t.events.c.contact_id, t.events.c.type, t.events.c.occurred_at, t.events.c.value,
                    t.events.c.url, t.events.c.session_id,
                ).where(t.events.c.tenant_id == tenant_id)
            )
            for r in result:
                yield r._asdict()

    def counts(self, tenant_id: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                "contacts": conn.execute(sa.select(sa.func.count()).select_from(t.contacts).where(t.contacts.c.tenant_id == tenant_id)).scalar() or 0,
                "events": conn.execute(sa.select(sa.func.count()).select_from(t.events).where(t.events.c.tenant_id == tenant_id)).scalar() or 0,
            }

    # ------------------------------------------------------------------ last-sent state

    def last_sent(self, tenant_id: str, destination: str) -> dict[str, str]:
        """key -> canonical value last confirmed by the vendor, for one destination."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.last_sent.c.key, t.last_sent.c.value).where(
                    t.last_sent.c.tenant_id == tenant_id, t.last_sent.c.destination == destination
                )
            )
            return {r.key: r.value for r in rows}

    def destinations(self, tenant_id: str, prefix: str) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.last_sent.c.destination).distinct().where(
                    t.last_sent.c.tenant_id == tenant_id, t.last_sent.c.destination.like(prefix + "%")
                )
            )
            return [r.destination for r in rows]

    def confirm_batch(
        self,
        tenant_id: str,
        run_id: int | None,
        destination: str,
        confirmed: Iterable[tuple[str, str | None]],
        outcomes: Iterable[tuple[str, str, str]],
    ) -> None:
        """After the vendor answered one batch: write last-sent values and per-record outcomes together.

        ``confirmed`` holds (key, value); value None deletes the row (nothing of ours is there any more).
        ``outcomes`` holds (key, outcome, message).
        """
        now = utcnow()
        confirmed = list(confirmed)
        with self.engine.begin() as conn:
            keep = [{"tenant_id": tenant_id, "destination": destination, "key": k, "value": v, "run_id": run_id, "sent_at": now} for k, v in confirmed if v is not None]
            upsert(conn, t.last_sent, keep, ["tenant_id", "destination", "key"])
            gone = [k for k, v in confirmed if v is None]
            for chunk in _chunks(gone, 500):
                conn.execute(
                    t.last_sent.delete().where(
                        t.last_sent.c.tenant_id == tenant_id, t.last_sent.c.destination == destination, t.last_sent.c.key.in_(chunk)
                    )
                )
            rows = [{"run_id": run_id or 0, "tenant_id": tenant_id, "destination": destination, "key": k, "outcome": o, "message": m[:2000], "at": now} for k, o, m in outcomes]
            if rows:
                conn.execute(t.record_outcomes.insert(), rows)

    def forget_sent(self, tenant_id: str, key: str, prefix: str) -> None:
        """Drop last-sent rows of one contact under a destination prefix (after an opt-out cleared them)."""
        with self.engine.begin() as conn:
            conn.execute(
                t.last_sent.delete().where(
                    t.last_sent.c.tenant_id == tenant_id, t.last_sent.c.key == key, t.last_sent.c.destination.like(prefix + "%")
                )
            )

    # ------------------------------------------------------------------ scores and segments

    def save_scores(self, tenant_id: str, rows: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(t.scores.delete().where(t.scores.c.tenant_id == tenant_id))
            for chunk in _chunks(rows, 5000):
                conn.execute(t.scores.insert(), [{"tenant_id": tenant_id, **r} for r in chunk])

    def save_segments(self, tenant_id: str, members: dict[str, set[str]], holdout: dict[str, set[str]]) -> None:
        now = utcnow()
        rows = [{"tenant_id": tenant_id, "segment": s, "contact_id": c, "holdout": False, "assigned_at": now} for s, ids in members.items() for c in ids]
        rows += [{"tenant_id": tenant_id, "segment": s, "contact_id": c, "holdout": True, "assigned_at": now} for s, ids in holdout.items() for c in ids]
        with self.engine.begin() as conn:
            conn.execute(t.segment_members.delete().where(t.segment_members.c.tenant_id == tenant_id))
            for chunk in _chunks(rows, 5000):
                conn.execute(t.segment_members.insert(), chunk)

    def segment_members(self, tenant_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [r._asdict() for r in conn.execute(sa.select(t.segment_members).where(t.segment_members.c.tenant_id == tenant_id))]

    # ------------------------------------------------------------------ runs

    def start_run(self, tenant_id: str, dry_run: bool) -> int:
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    t.runs.insert().values(tenant_id=tenant_id, started_at=utcnow(), status="running", dry_run=dry_run)
                ).inserted_primary_key[0]
            )

    def finish_run(self, run_id: int, status: str, report: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                t.runs.update().where(t.runs.c.id == run_id).values(finished_at=utcnow(), status=status, report=json.loads(canonical(report)))
            )

    def runs(self, tenant_id: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        q = sa.select(t.runs).order_by(t.runs.c.id.desc()).limit(limit)
        if tenant_id:
            q = q.where(t.runs.c.tenant_id == tenant_id)
        with self.engine.connect() as conn:
            return [r._asdict() for r in conn.execute(q)]

    def outcomes(self, run_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [r._asdict() for r in conn.execute(sa.select(t.record_outcomes).where(t.record_outcomes.c.run_id == run_id))]

    # ------------------------------------------------------------------ erasure

    def erase(self, tenant_id: str, email: str) -> int:
        """Delete a person's personal data (contact, identities, aliases, events, scores, state). Returns rows removed."""
        email = normalize_email(email) or ""
        removed = 0
        with self.engine.begin() as conn:
            ids = {r.contact_id for r in conn.execute(sa.select(t.contacts.c.contact_id).where(t.contacts.c.tenant_id == tenant_id, t.contacts.c.email == email))}
            ids |= {r.contact_id for r in conn.execute(sa.select(t.aliases.c.contact_id).where(t.aliases.c.tenant_id == tenant_id, t.aliases.c.email == email))}
            ids |= {r.contact_id for r in conn.execute(sa.select(t.identities.c.contact_id).where(t.identities.c.tenant_id == tenant_id, t.identities.c.email == email))}
            for table, col in (
                (t.contacts, t.contacts.c.contact_id),
                (t.identities, t.identities.c.contact_id),
                (t.aliases, t.aliases.c.contact_id),
                (t.events, t.events.c.contact_id),
                (t.scores, t.scores.c.contact_id),
                (t.segment_members, t.segment_members.c.contact_id),
                (t.last_sent, t.last_sent.c.key),
                (t.record_outcomes, t.record_outcomes.c.key),
            ):
                if ids:
                    removed += conn.execute(table.delete().where(table.c.tenant_id == tenant_id, col.in_(sorted(ids)))).rowcount or 0
        return removed

    # ------------------------------------------------------------------ locks

    def _clear_dead_holder(self, tenant_id: str) -> None:
        """SQLite: a lock left by a process on this host that no longer exists (killed) is released."""
        with self.engine.begin() as conn:
            owner = conn.execute(sa.select(t.tenant_locks.c.holder).where(t.tenant_locks.c.tenant_id == tenant_id)).scalar()
            if not owner:
                return
            host, _, rest = owner.partition(":")
            pid = rest.partition(":")[0]
            if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
                log.warning("tenant %s: releasing the lock of process %s, which no longer runs", tenant_id, pid)
                conn.execute(t.tenant_locks.delete().where(t.tenant_locks.c.tenant_id == tenant_id, t.tenant_locks.c.holder == owner))

    @contextmanager
    def tenant_lock(self, tenant_id: str, ttl: timedelta = timedelta(hours=2)) -> Iterator[None]:
        """Hold the tenant's run lock, or raise :class:`TenantBusy`. Never two runs of one tenant at once.

        PostgreSQL: a session advisory lock on a dedicated connection (released if the process dies).
        SQLite: a row with an expiry, taken with a conditional insert/update.
        """
        if self.engine.dialect.name == "postgresql":
            conn = self.engine.connect()
            try:
                # Advisory locks are database-wide: the schema is part of the key, so two segsync
                # stores in one database (or parallel test schemas) never block each other.
                schema = conn.execute(sa.text("select current_schema()")).scalar()
                key = int.from_bytes(hashlib.sha256(f"segsync:{schema}:{tenant_id}".encode()).digest()[:8], "big", signed=True)
                got = conn.execute(sa.text("select pg_try_advisory_lock(:k)"), {"k": key}).scalar()
                conn.commit()
                if not got:
                    raise TenantBusy(f"tenant {tenant_id}: another run holds its lock")
                try:
                    yield
                finally:
                    conn.execute(sa.text("select pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
            finally:
                conn.close()
            return
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._clear_dead_holder(tenant_id)
        now = utcnow()
        with self.engine.begin() as conn:
            upsert_stmt = _insert(conn, t.tenant_locks).values(tenant_id=tenant_id, holder=holder, expires_at=now + ttl)
            upsert_stmt = upsert_stmt.on_conflict_do_update(
                index_elements=["tenant_id"],
                set_={"holder": holder, "expires_at": now + ttl},
                where=t.tenant_locks.c.expires_at < now,
            )
            conn.execute(upsert_stmt)
            owner = conn.execute(sa.select(t.tenant_locks.c.holder).where(t.tenant_locks.c.tenant_id == tenant_id)).scalar()
        if owner != holder:
            raise TenantBusy(f"tenant {tenant_id}: another run holds its lock ({owner})")
        try:
            yield
        finally:
            with self.engine.begin() as conn:
                conn.execute(t.tenant_locks.delete().where(t.tenant_locks.c.tenant_id == tenant_id, t.tenant_locks.c.holder == holder))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TenantBusy(SegsyncError):
    """Another run of this tenant is in progress."""


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    items = list(items)
    for i in range(0, len(items), size):
        yield items[i : i + size]

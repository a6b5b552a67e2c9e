"""The webhook's group write on PostgreSQL in two round trips (psycopg pipeline mode).

The general group write (``consent.webhook``) sends its statements one by one through SQLAlchemy:
a connection check-out and ping, BEGIN, the head lock, the receipts, the idempotency look-up, the
events, the head update, the outbox id reservation and insert, COMMIT - ten round trips, each a
wake-up of the database process and of the writer thread. On a busy 2-core machine every one of
them waits for a CPU, and the group's write time (which the next group queues behind) was 15-20 ms
where the commit itself took 2-3 (bench/README.md, issue 21, third pass).

Here the same statements go in two pipelined batches on one connection the writer keeps:

1. [BEGIN] lock each tenant's chain head; insert the receipts (``RETURNING`` the new ones); look up
   the idempotency keys already recorded; reserve event ids and outbox ids from their sequences;
2. insert the events, move the heads, insert the outbox rows; COMMIT.

Every statement is the one the general path sends, in the same order and transaction, so the
guarantees do not change: the head lock is taken before any read, each statement reads what is
committed when it runs (READ COMMITTED), the rows are chained by the same code (``link_rows``),
signed by the same code (``consent.outbox.link_rows``) and the commit is synchronous (a 200 still
means the opt-out is durable). Arrays (``unnest``) instead of multi-row VALUES keep each statement
one short text that psycopg prepares once; they are sent in binary (``%b``), because psycopg's text
format quotes every element of a text array with regular expressions (most of the writer's CPU per
request in a large group, measured with cProfile). Reserved ids that end up unused (a replayed request)
are gaps in a sequence, as a rolled-back insert leaves.

:meth:`PipelinedWrite.write` returns None when the group is not for this path (an alias, a tenant
whose chain has no head yet) or anything at all fails: the caller then writes it the general way,
so error answers (400 for refused data, 503 for a database that is down) come from one place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
import sqlalchemy as sa

from consent.chain import Head, fresh_rows, key_check, link_rows
from consent.ledger import Ledger
from consent.outbox import _now, action_rows
from consent.outbox import link_rows as link_outbox_rows
from consent.records import RecordedEvent, recorded_from_row
from consent.webhook_group import DUPLICATE, Item, Outcome, claim_receipts, withdrawals_of

log = logging.getLogger("segsync.consent.webhook")

# Per tenant: its event rows (every signal of the group, validated), each row's item and the receipt its
# signal came with (None: a signal past the request's receipts, which is never written), and an upper
# bound of the outbox rows to reserve ids for.
_Prepared = dict[str, tuple[list[dict[str, Any]], list[int], list[str | None], int]]

_HEAD = "SELECT last_id, last_seq, last_hash, keyed_from_seq FROM consent_chain_heads WHERE tenant_id = %s FOR UPDATE"
_RECEIPTS = ("INSERT INTO webhook_receipts (tenant_id, key, received_at) SELECT %s, k, %s FROM unnest(%b::text[]) AS k "
             "ON CONFLICT DO NOTHING RETURNING key")
# Sent unprepared, so PostgreSQL plans it for the table as it is now. Prepared, it ran from a generic plan
# cached while the table was small (a sequential scan: nothing refreshes a plan when the table grows with
# autovacuum off, and this connection lives as long as the server), and the writer's first round trip grew
# with every event the tenant had: 1.4 -> 14 ms after 10,000 requests (bench/README.md, issue 21, 4th pass).
_SEEN = "SELECT idempotency_key FROM consent_events WHERE tenant_id = %s AND idempotency_key = ANY(%b::text[])"
_EVENT_IDS = ("SELECT nextval(pg_get_serial_sequence('consent_events', 'id')) FROM generate_series(1, %s)")
_OUTBOX_IDS = ("SELECT (SELECT max(id) FROM consent_outbox WHERE tenant_id = %s), "
               "nextval(pg_get_serial_sequence('consent_outbox', 'id')) FROM generate_series(1, %s)")
_MOVE_HEAD = ("UPDATE consent_chain_heads SET last_id = %s, last_seq = %s, last_hash = %s, key_check = %s "
              "WHERE tenant_id = %s")

# (column, array type, cast after unnest or "")
_EVENT_COLUMNS = (
    ("id", "bigint", ""), ("tenant_id", "text", ""), ("seq", "bigint", ""), ("subject", "text", ""),
    ("subject_key", "text", ""), ("purpose", "text", ""), ("state", "text", ""), ("basis", "text", ""),
    ("source", "text", ""), ("occurred_at", "timestamptz", ""), ("recorded_at", "timestamptz", ""),
    ("notice_version", "text", ""), ("evidence", "text", "json"), ("evidence_personal", "text", "json"),
    ("personal_digest", "text", ""), ("idempotency_key", "text", ""), ("prev_hash", "text", ""), ("hash", "text", ""),
)
_OUTBOX_COLUMNS = (
    ("id", "bigint", ""), ("tenant_id", "text", ""), ("subject_key", "text", ""), ("email", "text", ""),
    ("destination", "text", ""), ("payload", "text", "json"), ("source_event", "bigint", ""), ("status", "text", ""),
    ("attempts", "integer", ""), ("next_attempt_at", "timestamptz", ""), ("created_at", "timestamptz", ""),
    ("scrub_on_done", "boolean", ""), ("mac", "text", ""),
)
_JSON_COLUMNS = frozenset({"evidence", "evidence_personal", "payload"})


def _insert_sql(table: str, columns: tuple[tuple[str, str, str], ...]) -> str:
    names = ", ".join(c for c, _, _ in columns)
    values = ", ".join(f"{c}::{cast}" if cast else c for c, _, cast in columns)
    arrays = ", ".join(f"%b::{kind}[]" for _, kind, _ in columns)
    return f"INSERT INTO {table} ({names}) SELECT {values} FROM unnest({arrays}) AS u({names})"


_INSERT_EVENTS = _insert_sql("consent_events", _EVENT_COLUMNS)
_INSERT_OUTBOX = _insert_sql("consent_outbox", _OUTBOX_COLUMNS)  # a duplicate raises: the group goes the general way


def _arrays(rows: Sequence[dict[str, Any]], columns: tuple[tuple[str, str, str], ...]) -> list[list[Any]]:
    """``rows`` column by column, JSON values as their text (None stays SQL NULL)."""
    return [[(None if r[c] is None else json.dumps(r[c])) if c in _JSON_COLUMNS else r[c] for r in rows]
            for c, _, _ in columns]


class PipelinedWrite:
    """The pipelined group write for one engine's PostgreSQL (see the module docstring). Used by the
    writer thread only: it keeps one connection of the engine's pool for itself."""

    def __init__(self, engine: sa.Engine, ledger: Ledger) -> None:
        self.engine = engine
        self.ledger = ledger
        self.statements = 0  # statements sent (BEGIN and COMMIT not counted), for the bench
        self.round_trips = 0  # waits for the database, COMMIT included
        self.written = 0  # groups this path wrote (the others went the general way)
        self._raw: Any = None  # the pool's connection the writer keeps (PoolProxiedConnection)

    def close(self) -> None:
        if self._raw is not None:
            raw, self._raw = self._raw, None
            try:
                raw.close()
            except Exception:  # already broken: nothing to give back
                log.debug("closing the webhook writer's connection failed", exc_info=True)

    def connect(self) -> None:
        """Open the connection the writer keeps now (before serving), not in the first group."""
        self._connection()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._raw is None:
            self._raw = self.engine.raw_connection()
        pg = self._raw.driver_connection
        if not isinstance(pg, psycopg.Connection) or pg.closed or pg.autocommit:
            raise RuntimeError("the pipelined webhook write needs a psycopg connection in a transaction")
        return pg

    def write(self, items: Sequence[Item], now: datetime) -> list[Outcome] | None:
        """Write the group; None when it must go the general way (nothing of it is then kept)."""
        if any(work.alias is not None for _, _, work in items):
            return None  # an alias appends to the chain in between: the general path does that
        try:
            prepared = self._prepare(items)
        except Exception:
            return None  # refused data: the general path gives each request its own answer
        try:
            return self._write(items, prepared, now)
        except Exception:
            log.warning("pipelined webhook write failed; writing the group the general way", exc_info=True)
            self._discard()
            return None

    def _discard(self) -> None:
        """After a failure: roll back; a connection that cannot is dropped (a fresh one next time)."""
        if self._raw is None:
            return
        try:
            pg = self._raw.driver_connection
            if pg is not None and not pg.closed and not pg.broken:
                pg.rollback()
                return
        except Exception:
            log.debug("rollback after a failed pipelined write failed", exc_info=True)
        try:
            self._raw.invalidate()
        except Exception:
            log.debug("invalidating the webhook writer's connection failed", exc_info=True)
        self._raw = None

    def _prepare(self, items: Sequence[Item]) -> _Prepared:
        """Per tenant: every signal of the group as a validated event row, with its item and receipt, and an
        upper bound of the outbox rows (each withdrawn signal to each destination). Nothing is sent yet."""
        by_tenant: dict[str, list[int]] = {}
        for i, (tenant, _hooks, _work) in enumerate(items):
            by_tenant.setdefault(tenant, []).append(i)
        prepared: _Prepared = {}
        for tenant, indices in sorted(by_tenant.items()):
            rows, owner = self.ledger.prepare_rows(tenant, [items[i][2].signals for i in indices])
            receipt_of: list[str | None] = []
            position: dict[int, int] = {}
            for o in owner:
                receipts = items[indices[o]][2].receipts
                at = position[o] = position.get(o, -1) + 1
                receipt_of.append(receipts[at] if at < len(receipts) else None)
            bound = sum(len(items[i][1].destinations) for i in indices for s in items[i][2].signals
                        if s.state == "withdrawn")
            prepared[tenant] = (rows, [indices[o] for o in owner], receipt_of, bound)
        return prepared

    def _write(self, items: Sequence[Item], prepared: _Prepared, now: datetime) -> list[Outcome] | None:
        pg = self._connection()
        tenants = list(prepared)  # sorted: two writers lock heads in one order and never deadlock
        keys: dict[str, dict[str, None]] = {t: {} for t in tenants}
        for tenant, _hooks, work in items:
            keys[tenant].update(dict.fromkeys(work.receipts))
        with pg.pipeline():
            heads = [pg.execute(_HEAD, (t,), prepare=True) for t in tenants]  # first: the write lock
            receipts = [pg.execute(_RECEIPTS, (t, now, list(keys[t])), prepare=True) for t in tenants]
            # Not prepared: see _SEEN.
            seen = [pg.execute(_SEEN, (t, [r["idempotency_key"] for r in prepared[t][0] if r["idempotency_key"]]),
                               prepare=False) for t in tenants]
            event_ids = [pg.execute(_EVENT_IDS, (len(prepared[t][0]),), prepare=True) for t in tenants]
            outbox_ids = [pg.execute(_OUTBOX_IDS, (t, prepared[t][3]), prepare=True) for t in tenants]
            self.statements += 5 * len(tenants)
            found = [c.fetchone() for c in heads]  # the first fetch sends the batch and waits for it
            self.round_trips += 1
            if any(row is None for row in found):
                pg.rollback()  # a tenant's first write creates its head: the general path does that
                self.round_trips += 1
                return None
            fresh_of, signals_of = claim_receipts(items, {(t, k) for t, c in zip(tenants, receipts, strict=True)
                                                          for (k,) in c.fetchall()})
            recorded_of: dict[int, list[RecordedEvent]] = {i: [] for i in signals_of}
            queued: dict[int, int] = {}
            when = _now(None)  # the outbox's own clock, as Outbox.enqueue_many uses
            event_rows: list[dict[str, Any]] = []
            outbox_rows: list[dict[str, Any]] = []
            moves = []
            for t, head_row, seen_c, ids_c, ob_c in zip(tenants, found, seen, event_ids, outbox_ids, strict=True):
                assert head_row is not None
                rows, owner, receipt_of, _bound = prepared[t]
                # only the signals whose receipt is new to the store (and claimed by their item)
                kept = [(r, i) for r, i, k in zip(rows, owner, receipt_of, strict=True)
                        if k is not None and k in fresh_of.get(i, ())]
                fresh, fresh_owner = fresh_rows([r for r, _ in kept], [i for _, i in kept],
                                                {k for (k,) in seen_c.fetchall()})
                ids = sorted(int(v) for (v,) in ids_c.fetchall())
                ckey = self.ledger.chain_key(t)
                if fresh:
                    for row, row_id in zip(fresh, ids, strict=False):
                        row["id"] = row_id
                    head = Head(int(head_row[0]), int(head_row[1]), head_row[2], int(head_row[3]))
                    seq, last_hash = link_rows(head, fresh, ckey)
                    moves.append((fresh[-1]["id"], seq, last_hash, key_check(ckey), t))
                    event_rows.extend(fresh)
                for row, i in zip(fresh, fresh_owner, strict=True):
                    recorded_of[i].append(recorded_from_row(row))
                reserved = ob_c.fetchall()
                actions = withdrawals_of(self.ledger, items, signals_of, recorded_of, tenant=t)
                rows_ob, owner_ob = action_rows(t, [a for _, a in actions], when)
                if rows_ob:
                    link_outbox_rows(rows_ob, int(reserved[0][0] or 0), sorted(int(r[1]) for r in reserved), ckey)
                    outbox_rows.extend(rows_ob)
                    for o in owner_ob:
                        queued[actions[o][0]] = queued.get(actions[o][0], 0) + 1
            if event_rows:
                pg.execute(_INSERT_EVENTS, _arrays(event_rows, _EVENT_COLUMNS), prepare=True)
                self.statements += 1
            for move in moves:
                pg.execute(_MOVE_HEAD, move, prepare=True)
                self.statements += 1
            if outbox_rows:
                pg.execute(_INSERT_OUTBOX, _arrays(outbox_rows, _OUTBOX_COLUMNS), prepare=True)
                self.statements += 1
            pg.commit()  # synchronous: the answers go out only once this returns
            self.round_trips += 1
        self.written += 1
        return [DUPLICATE if i not in recorded_of else
                ("recorded" if recorded_of[i] else "ignored", len(recorded_of[i]), queued.get(i, 0))
                for i in range(len(items))]


__all__ = ["PipelinedWrite"]

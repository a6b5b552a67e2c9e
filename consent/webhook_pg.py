"""The webhook's group write on PostgreSQL in one round trip, or two (psycopg pipeline mode).

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

Usually a group needs only ONE round trip (``_one_trip``): the writer remembers where it left each
tenant's chain and outbox and keeps ids reserved ahead (``consent.webhook_tail``), so it chains and
signs the group before sending anything, then sends [BEGIN] the head move as a compare-and-set (it
takes the head's row lock first, as the lock above does, and fails unless the head is where this writer
left it), the same check of the outbox's newest row under that lock, the receipts, the events, the
outbox rows and COMMIT together. The receipts and events go in without ``ON CONFLICT``: a replay or an
event recorded before violates their unique keys. Any of these failures rolls the transaction back
whole and the group goes the two-round-trip way above, which reads what is really there; so does a
group when the writer knows nothing yet (its first for a tenant) or has too few ids in reserve.

:meth:`PipelinedWrite.write` returns None when the group is not for this path (an alias, a tenant
whose chain has no head yet) or anything at all fails: the caller then writes it the general way,
so error answers (400 for refused data, 503 for a database that is down) come from one place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any

import psycopg
import sqlalchemy as sa

from consent.chain import Head, fresh_rows, key_check, link_rows
from consent.ledger import Ledger
from consent.outbox import _now, action_rows
from consent.outbox import link_rows as link_outbox_rows
from consent.records import RecordedEvent, recorded_from_row
from consent.webhook_group import DUPLICATE, Item, Outcome, claim_receipts, withdrawals_of
from consent.webhook_tail import IdPool, Tail

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
_OUTBOX_SEQUENCE = "SELECT nextval(pg_get_serial_sequence('consent_outbox', 'id')) FROM generate_series(1, %s)"
# One round trip: each fails (division by zero) unless the tenant's head / newest outbox row is where this writer
# left it; the UPDATE takes the head's row lock before anything else of the tenant is written or read.
_MOVE_HEAD_FROM = ("WITH moved AS (UPDATE consent_chain_heads SET last_id = %s, last_seq = %s, last_hash = %s, "
                   "key_check = %s WHERE tenant_id = %s AND last_seq = %s AND last_hash = %s RETURNING 1) "
                   "SELECT 1 / count(*) FROM moved")
# ORDER BY ... LIMIT 1, not max(): PostgreSQL planned max() under this filter as an aggregate over every
# index entry of the tenant (the group write grew again, 3.9 -> 7.5 ms over 10,000 requests)
_SAME_OUTBOX = ("SELECT 1 / count(*) FROM (SELECT coalesce((SELECT id FROM consent_outbox WHERE tenant_id = %s "
                "ORDER BY id DESC LIMIT 1), 0) AS newest) AS o WHERE o.newest = %s")
_NEW_RECEIPTS = ("INSERT INTO webhook_receipts (tenant_id, key, received_at) "
                 "SELECT %s, k, %s FROM unnest(%b::text[]) AS k")
RESERVE = 1024  # ids reserved at a time once fewer than LOW_WATER are left (a restart leaves them as gaps)
LOW_WATER = 512
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
        self.one_trip = 0  # of them, in one round trip
        self.moved_elsewhere = 0  # one-round-trip attempts that found another writer's rows (then two trips)
        self.replays = 0  # one-round-trip attempts that met a receipt or event stored already (then two trips)
        self._raw: Any = None  # the pool's connection the writer keeps (PoolProxiedConnection)
        self._tails: dict[str, Tail] = {}  # where this writer left each tenant (consent.webhook_tail)
        self._event_ids = IdPool()
        self._outbox_ids = IdPool()

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
            done = self._one_trip(items, prepared, now)
            if done is None:
                done = self._write(items, prepared, now)
        except Exception:
            log.warning("pipelined webhook write failed; writing the group the general way", exc_info=True)
            self._discard()
            done = None
        if done is None:  # the general path writes it: where it leaves these tenants is not known here
            for tenant in prepared:
                self._tails.pop(tenant, None)
        return done

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

    def _one_trip(self, items: Sequence[Item], prepared: _Prepared, now: datetime) -> list[Outcome] | None:
        """The group in ONE round trip from what this writer remembers (see the module docstring); None when
        it cannot be (nothing remembered, too few ids in reserve) or the database says another writer or a
        replay came first: then nothing of it was kept."""
        tenants = list(prepared)
        tails = {t: tail for t in tenants if (tail := self._tails.get(t)) is not None}
        if (len(tails) < len(tenants) or len(self._event_ids) < sum(len(prepared[t][0]) for t in tenants)
                or len(self._outbox_ids) < sum(prepared[t][3] for t in tenants)):
            return None
        keys = _receipt_keys(items, tenants)
        # every receipt taken for new: one the store has fails the INSERT below, and the group goes two trips
        group = _Rows(self.ledger, items, *claim_receipts(items, {(t, k) for t in tenants for k in keys[t]}))
        moved: dict[str, Tail] = {}
        for t, tail in tails.items():
            fresh, fresh_owner = fresh_rows(*group.kept(prepared[t]), set())
            ids = self._event_ids.take(len(fresh), above=tail.head.last_id)
            head = group.chain(t, tail.head, fresh, fresh_owner, ids or [])
            newest = group.queue(t, tail.outbox_id, partial(self._outbox_ids.take, above=tail.outbox_id))
            if ids is None or newest is None:
                return None
            moved[t] = Tail(head, newest)
        refused = self._send_one_trip(group, tails, moved, keys, now)
        if refused is not None:
            if isinstance(refused, psycopg.errors.DivisionByZero):
                self.moved_elsewhere += 1
            else:
                self.replays += 1
            log.debug("one-round-trip webhook write not taken (%s); two round trips", type(refused).__name__)
            self._connection().rollback()
            for t in tenants:
                self._tails.pop(t, None)
            return None
        self.written += 1
        self.one_trip += 1
        self._tails.update(moved)
        return group.outcomes()

    def _send_one_trip(self, group: _Rows, tails: dict[str, Tail], moved: dict[str, Tail],
                       keys: dict[str, dict[str, None]], now: datetime) -> psycopg.Error | None:
        """Send the group's statements and COMMIT at once; the error that refused it, or None (committed)."""
        pg = self._connection()
        more_events, more_outbox = len(self._event_ids) < LOW_WATER, len(self._outbox_ids) < LOW_WATER
        refused: psycopg.Error | None = None
        try:
            with pg.pipeline():
                try:  # caught in the block: leaving it with the error would make psycopg log the skipped statements
                    # ids for the groups after this one: sequences are not transactional, but a failure below
                    # drops their answer too, and they stay gaps
                    reserve_events = pg.execute(_EVENT_IDS, (RESERVE,), prepare=True) if more_events else None
                    reserve_outbox = pg.execute(_OUTBOX_SEQUENCE, (RESERVE,), prepare=True) if more_outbox else None
                    for t, tail in tails.items():  # sorted: two writers lock heads in one order and never deadlock
                        head = moved[t].head
                        pg.execute(_MOVE_HEAD_FROM, (head.last_id, head.last_seq, head.last_hash,
                                                     key_check(self.ledger.chain_key(t)), t, tail.head.last_seq,
                                                     tail.head.last_hash), prepare=True)
                        pg.execute(_SAME_OUTBOX, (t, tail.outbox_id), prepare=True)
                        if keys[t]:
                            pg.execute(_NEW_RECEIPTS, (t, now, list(keys[t])), prepare=True)
                    self.statements += more_events + more_outbox + 3 * len(tails) + group.insert(pg)
                    pg.commit()  # synchronous: the answers go out only once this returns
                except (psycopg.errors.DivisionByZero, psycopg.errors.UniqueViolation) as exc:
                    refused = exc  # another writer moved the head or the outbox; a receipt or event is stored already
        except psycopg.errors.PipelineAborted:  # leaving the block after the refusal above: nothing more to it
            if refused is None:
                raise
        self.round_trips += 1
        if refused is None:
            if reserve_events is not None:
                self._event_ids.add(int(v) for (v,) in reserve_events.fetchall())
            if reserve_outbox is not None:
                self._outbox_ids.add(int(v) for (v,) in reserve_outbox.fetchall())
        return refused

    def _write(self, items: Sequence[Item], prepared: _Prepared, now: datetime) -> list[Outcome] | None:
        pg = self._connection()
        tenants = list(prepared)  # sorted: two writers lock heads in one order and never deadlock
        keys = _receipt_keys(items, tenants)
        with pg.pipeline():
            heads = [pg.execute(_HEAD, (t,), prepare=True) for t in tenants]  # first: the write lock
            receipts = [pg.execute(_RECEIPTS, (t, now, list(keys[t])), prepare=True) for t in tenants]
            # Not prepared: see _SEEN.
            seen = [pg.execute(_SEEN, (t, [r["idempotency_key"] for r in prepared[t][0] if r["idempotency_key"]]),
                               prepare=False) for t in tenants]
            # ids for the next groups too: they replace the reserve, whose ids may now be below rows written here
            # (signed outbox rows must come in id order, so those would go unused anyway)
            event_ids = [pg.execute(_EVENT_IDS, (len(prepared[t][0]) + RESERVE,), prepare=True) for t in tenants]
            outbox_ids = [pg.execute(_OUTBOX_IDS, (t, prepared[t][3] + RESERVE), prepare=True) for t in tenants]
            self.statements += 5 * len(tenants)
            found = [c.fetchone() for c in heads]  # the first fetch sends the batch and waits for it
            self.round_trips += 1
            if any(row is None for row in found):
                pg.rollback()  # a tenant's first write creates its head: the general path does that
                self.round_trips += 1
                return None
            group = _Rows(self.ledger, items, *claim_receipts(
                items, {(t, k) for t, c in zip(tenants, receipts, strict=True) for (k,) in c.fetchall()}))
            tails: dict[str, Tail] = {}
            spare_events: list[int] = []
            spare_outbox: list[int] = []
            for t, head_row, seen_c, ids_c, ob_c in zip(tenants, found, seen, event_ids, outbox_ids, strict=True):
                assert head_row is not None
                before = Head(int(head_row[0]), int(head_row[1]), head_row[2], int(head_row[3]))
                # only the signals whose receipt is new to the store (and claimed by their item)
                fresh, fresh_owner = fresh_rows(*group.kept(prepared[t]), {k for (k,) in seen_c.fetchall()})
                ids = sorted(int(v) for (v,) in ids_c.fetchall())
                spare_events += ids[len(fresh):]
                head = group.chain(t, before, fresh, fresh_owner, ids)
                if head != before:
                    pg.execute(_MOVE_HEAD, (head.last_id, head.last_seq, head.last_hash,
                                            key_check(self.ledger.chain_key(t)), t), prepare=True)
                    self.statements += 1
                reserved = ob_c.fetchall()
                ob_ids = sorted(int(r[1]) for r in reserved)
                newest = group.queue(t, int(reserved[0][0] or 0), partial(_these, ob_ids))
                assert newest is not None
                spare_outbox += [i for i in ob_ids if i > newest]
                tails[t] = Tail(head, newest)
            self.statements += group.insert(pg)
            pg.commit()  # synchronous: the answers go out only once this returns
            self.round_trips += 1
        self.written += 1
        self._tails.update(tails)  # read under the head lock and moved by this transaction: the next group's start
        self._event_ids.clear()
        self._event_ids.add(spare_events)
        self._outbox_ids.clear()
        self._outbox_ids.add(spare_outbox)
        return group.outcomes()


def _these(ids: list[int], _n: int) -> list[int]:
    return ids  # every id reserved for the tenant: the rows take the first ones


def _receipt_keys(items: Sequence[Item], tenants: Sequence[str]) -> dict[str, dict[str, None]]:
    """Each tenant's receipt keys in the group, once each, in order."""
    keys: dict[str, dict[str, None]] = {t: {} for t in tenants}
    for tenant, _hooks, work in items:
        keys[tenant].update(dict.fromkeys(work.receipts))
    return keys


class _Rows:
    """A group's event and outbox rows as they are chained and signed, tenant by tenant; the same code for the
    one-round-trip and the two-round-trip write, so both write the same rows."""

    def __init__(self, ledger: Ledger, items: Sequence[Item], fresh_of: dict[int, set[str]],
                 signals_of: dict[int, list[Any]]) -> None:
        self.ledger, self.items, self.fresh_of, self.signals_of = ledger, items, fresh_of, signals_of
        self.recorded_of: dict[int, list[RecordedEvent]] = {i: [] for i in signals_of}
        self.queued: dict[int, int] = {}
        self.when = _now(None)  # the outbox's own clock, as Outbox.enqueue_many uses
        self.event_rows: list[dict[str, Any]] = []
        self.outbox_rows: list[dict[str, Any]] = []

    def kept(self, prepared: tuple[list[dict[str, Any]], list[int], list[str | None], int]
             ) -> tuple[list[dict[str, Any]], list[int]]:
        """A tenant's rows whose receipt is new (and claimed by their item), with their items."""
        rows, owner, receipt_of, _bound = prepared
        kept = [(r, i) for r, i, k in zip(rows, owner, receipt_of, strict=True)
                if k is not None and k in self.fresh_of.get(i, ())]
        return [r for r, _ in kept], [i for _, i in kept]

    def chain(self, tenant: str, head: Head, fresh: list[dict[str, Any]], owner: list[int], ids: list[int]) -> Head:
        """``fresh`` (of items ``owner``) chained after ``head`` with ``ids`` (at least as many); the new head."""
        if fresh:
            for row, row_id in zip(fresh, ids, strict=False):
                row["id"] = row_id
            seq, last_hash = link_rows(head, fresh, self.ledger.chain_key(tenant))
            self.event_rows.extend(fresh)
            head = Head(int(fresh[-1]["id"]), seq, last_hash, head.keyed_from_seq)
        for row, i in zip(fresh, owner, strict=True):
            self.recorded_of[i].append(recorded_from_row(row))
        return head

    def queue(self, tenant: str, newest: int, ids: Callable[[int], list[int] | None]) -> int | None:
        """The outbox rows of the tenant's recorded withdrawals, signed after its ``newest`` row with ``ids(n)``
        (ascending, at least n); the tenant's newest row then, or None when ``ids`` had too few."""
        actions = withdrawals_of(self.ledger, self.items, self.signals_of, self.recorded_of, tenant=tenant)
        rows, owner = action_rows(tenant, [a for _, a in actions], self.when)
        if not rows:
            return newest
        reserved = ids(len(rows))
        if reserved is None:
            return None
        link_outbox_rows(rows, newest, reserved, self.ledger.chain_key(tenant))
        self.outbox_rows.extend(rows)
        for o in owner:
            self.queued[actions[o][0]] = self.queued.get(actions[o][0], 0) + 1
        return int(rows[-1]["id"])

    def insert(self, pg: psycopg.Connection[Any]) -> int:
        """Send the inserts of the events and the outbox rows (pipelined); how many statements."""
        if self.event_rows:
            pg.execute(_INSERT_EVENTS, _arrays(self.event_rows, _EVENT_COLUMNS), prepare=True)
        if self.outbox_rows:
            pg.execute(_INSERT_OUTBOX, _arrays(self.outbox_rows, _OUTBOX_COLUMNS), prepare=True)
        return bool(self.event_rows) + bool(self.outbox_rows)

    def outcomes(self) -> list[Outcome]:
        return [DUPLICATE if i not in self.recorded_of else
                ("recorded" if self.recorded_of[i] else "ignored", len(self.recorded_of[i]), self.queued.get(i, 0))
                for i in range(len(self.items))]


__all__ = ["PipelinedWrite"]

"""The opt-out outbox: suppression actions written with the ledger event, drained with retries.

``enqueue`` takes the caller's connection so the action is committed in the same transaction as
the ledger event that caused it - a crash between "recorded" and "propagated" loses nothing
(:mod:`consent.propagate` does both in one go). ``drain`` hands each due action to the handler
registered for its destination (the lead wires handlers to connectors) and records the outcome:
done, or failed with backoff until ``max_attempts``, after which the row stays ``failed`` for a
human to see.

Destinations (one action per destination per withdrawal; ``consent.policy.DESTINATION_PURPOSES``
says which purposes each one serves):

=================  ==========================  =================================================
destination        on withdrawal of            what its handler must do
=================  ==========================  =================================================
``esp.unsubscribe``  email_marketing             unsubscribe the member at the ESP
                                                 (``EspConnector.suppress(email, tags)``)
``crm.optout``       email_marketing             opt the contact out of email at the CRM
                                                 (``CrmConnector.suppress(email, vendor_id, prop)``)
``esp.tags``         email_marketing, profiling  deactivate segsync's tags / static segments
``crm.segments``     profiling                   clear segsync's segment property and scores
=================  ==========================  =================================================

Every action's ``payload`` is ``{"purposes": [...withdrawn...], "source": ..., "reason": ...}``
plus ``"vendor_ref"`` (e.g. ``"crm:123"``) when the person is known only by a vendor id, and, on a
signed row, ``"prev_outbox_id"``: the id of the tenant's row before it (see :mod:`consent.integrity`);
``email`` is the normalised address (None after erasure, once the action is done or failed).
A handler returns to confirm and raises to fail; the exception's message is recorded
(handlers must redact secrets first).

Claims are leases: a claimed row's ``next_attempt_at`` moves ``lease`` into the future, so a
crashed drainer's rows come back by themselves. On PostgreSQL claims use ``FOR UPDATE SKIP
LOCKED`` and several drainers may run at once; on SQLite run one drainer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from consent.erasure import redact
from consent.integrity import PREV_LINK, outbox_mac
from consent.schema import consent_outbox, insert_ignoring_conflicts
from core import times

log = logging.getLogger("segsync.consent")

ob = consent_outbox.c
PENDING, DONE, FAILED = "pending", "done", "failed"
SUPERSEDED = "not propagated: superseded"  # the note on an action a later grant made unnecessary
MAX_ERROR = 500


@dataclass(frozen=True, slots=True)
class OutboxAction:
    """One propagation to one destination. ``email`` is None after erasure or when unresolved."""

    id: int
    tenant_id: str
    subject_key: str
    email: str | None
    destination: str
    payload: dict[str, Any]
    source_event: int
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    done_at: datetime | None


@dataclass(slots=True)
class DrainReport:
    """What one :func:`drain` did; ``errors`` maps action id to the handler's message."""

    done: int = 0
    retrying: int = 0
    failed: int = 0
    errors: dict[int, str] = field(default_factory=dict)
    superseded: int = 0  # of ``done``: confirmed without a vendor call, a later grant made them moot


def _now(now: datetime | None) -> datetime:
    return times.now() if now is None else now.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class NewActions:
    """One withdrawal to queue: an action for each of ``destinations`` (see :meth:`Outbox.enqueue_many`)."""

    subject_key: str
    email: str | None
    destinations: tuple[str, ...]
    payload: Mapping[str, Any]
    source_event: int
    scrub_on_done: bool = False


def reserve_ids(conn: sa.Connection, tenant: str, n: int) -> tuple[int, list[int]]:
    """The id of the tenant's newest outbox row (0: none) and ``n`` ascending ids for new rows.

    PostgreSQL: taken from the table's own sequence, so no other writer can be given them. SQLite:
    the ids it would assign itself (past the table's largest), valid while this transaction holds
    the database's write lock, which the chain head taken before the events were appended is.
    """
    newest = sa.select(sa.func.max(ob.id)).where(ob.tenant_id == tenant).scalar_subquery()
    if conn.dialect.name == "postgresql":
        sequence = sa.func.pg_get_serial_sequence(consent_outbox.name, "id")
        rows = conn.execute(
            sa.select(newest, sa.func.nextval(sequence)).select_from(sa.func.generate_series(1, n))
        ).all()
        return int(rows[0][0] or 0), sorted(int(r[1]) for r in rows)
    prev, top = conn.execute(sa.select(newest, sa.select(sa.func.max(ob.id)).scalar_subquery())).one()
    return int(prev or 0), list(range(int(top or 0) + 1, int(top or 0) + 1 + n))


def action_rows(
    tenant: str, actions: Sequence[NewActions], when: datetime
) -> tuple[list[dict[str, Any]], list[int]]:
    """The outbox rows of ``actions`` (one per destination; the same (source event, destination) once)
    and the entry of ``actions`` each row belongs to. Without ids or MACs yet (:func:`link_rows`)."""
    rows: list[dict[str, Any]] = []
    owner: list[int] = []
    seen: set[tuple[int, str]] = set()
    for index, a in enumerate(actions):
        for d in dict.fromkeys(a.destinations):
            if (a.source_event, d) in seen:  # the same action twice in one call: once is enough
                continue
            seen.add((a.source_event, d))
            rows.append({
                "tenant_id": tenant, "subject_key": a.subject_key, "email": a.email, "destination": d,
                "payload": dict(a.payload), "source_event": a.source_event, "status": PENDING, "attempts": 0,
                "next_attempt_at": when, "last_error": None, "created_at": when, "done_at": None,
                "scrub_on_done": a.scrub_on_done,
            })
            owner.append(index)
    return rows, owner


def link_rows(rows: list[dict[str, Any]], prev: int, ids: Sequence[int], key: bytes) -> None:
    """Give signed ``rows`` their reserved ``ids`` (ascending, at least as many as rows) and MACs, each naming
    the row before it (``prev``: the tenant's newest row before them, 0 for none)."""
    if len(ids) < len(rows):
        raise ValueError(f"{len(ids)} reserved outbox ids for {len(rows)} rows")
    for row, row_id in zip(rows, ids, strict=False):
        row["id"] = row_id
        _link(row, prev, key)
        prev = row_id


def _link(row: dict[str, Any], prev: int, key: bytes) -> None:
    row["payload"] = {**row["payload"], PREV_LINK: int(prev)}
    row["mac"] = outbox_mac(key, row)


def _insert_skipping_duplicates(conn: sa.Connection) -> Any:
    """INSERT that skips a row whose (tenant, source event, destination) is queued already, and only that."""
    return insert_ignoring_conflicts(conn, consent_outbox, ("tenant_id", "source_event", "destination"))


def _action(row: Any) -> OutboxAction:
    m = row._mapping
    return OutboxAction(
        id=m["id"], tenant_id=m["tenant_id"], subject_key=m["subject_key"], email=m["email"],
        destination=m["destination"], payload=m["payload"], source_event=m["source_event"], status=m["status"],
        attempts=m["attempts"], next_attempt_at=m["next_attempt_at"], last_error=m["last_error"],
        created_at=m["created_at"], done_at=m["done_at"],
    )


class Outbox:
    """The outbox table over one engine, with retry policy: exponential backoff, capped.

    ``mac_key`` gives a tenant's chain key (``Ledger.chain_key``): every row is then signed
    (:mod:`consent.integrity`) and ``Ledger.verify`` detects a status edited by hand. Without it
    rows are unsigned and ``verify`` reports them.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        mac_key: Callable[[str], bytes] | None = None,
        max_attempts: int = 8,
        base_delay: timedelta = timedelta(seconds=30),
        max_delay: timedelta = timedelta(hours=1),
        lease: timedelta = timedelta(minutes=5),
    ) -> None:
        self.engine = engine
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.lease = lease
        self.mac_key = mac_key

    def _sign(self, conn: sa.Connection, action_id: int) -> None:
        """Rewrite the row's MAC after a change (inside the caller's transaction)."""
        if self.mac_key is None:
            return
        row = conn.execute(sa.select(consent_outbox).where(ob.id == action_id)).mappings().one()
        conn.execute(
            sa.update(consent_outbox)
            .where(ob.id == action_id)
            .values(mac=outbox_mac(self.mac_key(row["tenant_id"]), row))
        )

    def enqueue(
        self,
        conn: sa.Connection,
        tenant: str,
        subject_key: str,
        email: str | None,
        destinations: Iterable[str],
        payload: Mapping[str, Any],
        source_event: int,
        *,
        now: datetime | None = None,
        scrub_on_done: bool = False,
    ) -> int:
        """Add one pending action per destination, inside the caller's transaction.

        ``scrub_on_done`` (set for an erased person) clears the email once the action is
        delivered or given up on.

        Idempotent per (tenant, source event, destination): enqueuing again adds nothing.
        Returns how many rows were added.
        """
        action = NewActions(subject_key, email, tuple(destinations), payload, source_event, scrub_on_done)
        return self.enqueue_many(conn, tenant, [action], now=now)[0]

    def enqueue_many(
        self, conn: sa.Connection, tenant: str, actions: Sequence[NewActions], *, now: datetime | None = None
    ) -> list[int]:
        """:meth:`enqueue` for many withdrawals of one tenant in ONE insert; rows added per entry of ``actions``.

        Signed rows name the tenant's row before them (``prev_outbox_id``, under the MAC), so a row
        deleted from the middle breaks its successor's link. Their ids are therefore reserved before
        the insert (:func:`reserve_ids`); the caller's transaction holds the tenant's chain head (the
        ledger events were appended in it), so the tenant's rows arrive in id order.
        """
        rows, owner = action_rows(tenant, actions, _now(now))
        added = [0] * len(actions)
        if not rows:
            return added
        key = self.mac_key(tenant) if self.mac_key is not None else None
        if key is not None:
            link_rows(rows, *reserve_ids(conn, tenant, len(rows)), key)
        # Only the (tenant, source event, destination) duplicate is skipped; a clash on a reserved id
        # raises. Counted by RETURNING: the driver's rowcount for INSERT ... ON CONFLICT is not portable.
        # executemany, which SQLAlchemy sends as one multi-row INSERT from a statement compiled once and cached
        inserted = {(int(r.source_event), r.destination) for r in conn.execute(
            _insert_skipping_duplicates(conn).returning(ob.source_event, ob.destination), rows)}
        kept = [(row, index) for row, index in zip(rows, owner, strict=True)
                if (row["source_event"], row["destination"]) in inserted]
        for _, index in kept:
            added[index] += 1
        if key is not None and len(kept) < len(rows):
            self._relink(conn, tenant, [row for row, _ in kept], key)
        return added

    def _relink(self, conn: sa.Connection, tenant: str, rows: list[dict[str, Any]], key: bytes) -> None:
        """Some rows of an insert were duplicates (not written): the written ones after them named a
        reserved id that stays unused as their predecessor, so point them at the row really before."""
        if not rows:
            return
        prev = conn.execute(sa.select(sa.func.max(ob.id)).where(ob.tenant_id == tenant, ob.id < rows[0]["id"])).scalar()
        prev = int(prev or 0)
        for row in rows:
            if row["payload"][PREV_LINK] != prev:
                _link(row, prev, key)
                conn.execute(sa.update(consent_outbox).where(ob.id == row["id"])
                             .values(payload=row["payload"], mac=row["mac"]))
            prev = row["id"]

    def due(self, limit: int = 100, *, now: datetime | None = None, tenant: str | None = None) -> list[OutboxAction]:
        """Pending actions whose time has come, oldest first (read only, no claim)."""
        with self.engine.connect() as c:
            return [_action(r) for r in c.execute(self._due_query(limit, _now(now), tenant))]

    def _due_query(self, limit: int, now: datetime, tenant: str | None) -> sa.Select[Any]:
        query = sa.select(consent_outbox).where(ob.status == PENDING, ob.next_attempt_at <= now)
        if tenant is not None:
            query = query.where(ob.tenant_id == tenant)
        return query.order_by(ob.next_attempt_at, ob.id).limit(limit)

    def claim(self, limit: int = 100, *, now: datetime | None = None, tenant: str | None = None) -> list[OutboxAction]:
        """Take up to ``limit`` due actions for this drainer (a lease, see the module docstring).

        One UPDATE ... RETURNING: on SQLite a read followed by a write could fail when a webhook
        commits in between; on PostgreSQL the inner SELECT skips rows other drainers hold.
        """
        when = _now(now)
        due = self._due_query(limit, when, tenant).with_only_columns(ob.id).with_for_update(skip_locked=True)
        stmt = (
            sa.update(consent_outbox)
            .where(ob.id.in_(due.scalar_subquery()))
            .values(next_attempt_at=when + self.lease)
            .returning(*consent_outbox.c)
        )
        with self.engine.begin() as c:
            rows = c.execute(stmt).all()
        return sorted((_action(r) for r in rows), key=lambda a: a.id)

    def mark_done(self, action_id: int, *, now: datetime | None = None, note: str | None = None) -> None:
        """The destination confirmed (or, with ``note``, nothing had to be sent and why); clears the email if
        the subject was erased meanwhile."""
        with self.engine.begin() as c:
            c.execute(
                sa.update(consent_outbox)
                .where(ob.id == action_id)
                .values(
                    status=DONE, done_at=_now(now), last_error=note[:MAX_ERROR] if note else None,
                    email=sa.case((ob.scrub_on_done, sa.null()), else_=ob.email),
                )
            )
            self._sign(c, action_id)

    def backoff(self, attempts: int) -> timedelta:
        """Delay before attempt ``attempts + 1``: base * 2^(attempts-1), capped."""
        delay: timedelta = min(self.base_delay * (2 ** max(attempts - 1, 0)), self.max_delay)
        return delay

    def mark_failed(
        self, action_id: int, error: str, retry_at: datetime | None = None, *, now: datetime | None = None
    ) -> str:
        """Record a failed attempt; returns the new status (``pending`` again, or ``failed``).

        ``retry_at`` overrides the backoff (e.g. a vendor's Retry-After). The handler is expected
        to pass an error already redacted of secrets; it is truncated here.
        """
        when = _now(now)
        with self.engine.begin() as c:
            # A write first (it locks the row, and on SQLite takes the write lock before any read).
            attempts, email, scrub = c.execute(
                sa.update(consent_outbox).where(ob.id == action_id).values(attempts=ob.attempts + 1)
                .returning(ob.attempts, ob.email, ob.scrub_on_done)
            ).one()
            final = attempts >= self.max_attempts
            text = str(error)
            if scrub and email:  # the person was erased meanwhile: keep no copy of the address
                text = redact(text, email)
            values: dict[str, Any] = {
                "last_error": text[:MAX_ERROR],
                "status": FAILED if final else PENDING,
                "next_attempt_at": retry_at.astimezone(UTC)
                if retry_at and not final
                else when + self.backoff(attempts),
            }
            if final:
                values["email"] = sa.case((ob.scrub_on_done, sa.null()), else_=ob.email)
            c.execute(sa.update(consent_outbox).where(ob.id == action_id).values(**values))
            self._sign(c, action_id)
        return str(values["status"])

    def depth(self, tenant: str | None = None) -> int:
        """How many actions are still pending."""
        query = sa.select(sa.func.count()).select_from(consent_outbox).where(ob.status == PENDING)
        if tenant is not None:
            query = query.where(ob.tenant_id == tenant)
        with self.engine.connect() as c:
            return int(c.execute(query).scalar_one())

    def summary(self, tenant: str | None = None) -> dict[str, dict[str, int]]:
        """``{destination: {status: count}}`` - for the run report and ``/metrics``."""
        query = sa.select(ob.destination, ob.status, sa.func.count()).group_by(ob.destination, ob.status)
        if tenant is not None:
            query = query.where(ob.tenant_id == tenant)
        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as c:
            for destination, status, n in c.execute(query):
                out.setdefault(destination, {})[status] = int(n)
        return out

    def actions_for(self, tenant: str, subject_key: str) -> list[OutboxAction]:
        """Every action ever queued for this subject, oldest first."""
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(consent_outbox)
                .where(ob.tenant_id == tenant, ob.subject_key == subject_key)
                .order_by(ob.id)
            )
            return [_action(r) for r in rows]


def drain(
    outbox: Outbox,
    handlers: Mapping[str, Callable[[OutboxAction], str | None]],
    now: datetime | None = None,
    *,
    limit: int = 100,
    tenant: str | None = None,
    max_rounds: int = 1000,
    prepare: Callable[[Sequence[OutboxAction]], None] | None = None,
    abort_on: tuple[type[BaseException], ...] = (),
) -> DrainReport:
    """Hand every due action to its destination's handler until none is due.

    A handler returns to confirm and raises to fail (its message is recorded); a string it returns is kept
    with the confirmation (why nothing was sent, e.g. a later grant superseded the withdrawal). A destination
    without a handler counts as a failed attempt, so a wiring mistake shows up as ``failed``
    rows instead of a queue that silently never empties. ``prepare`` sees each claimed batch first, so
    handlers can act on many actions in one vendor call (a batch write) and then confirm each; if it
    raises, every handler runs on its own. An exception of a type in ``abort_on`` (the run's tenant lock was
    lost) is no failure of the action: it stops the drain at once and propagates, and the claimed actions
    come back when their lease ends, their attempts untouched.
    """
    report = DrainReport()
    when = _now(now)
    for _ in range(max_rounds):
        batch = outbox.claim(limit, now=when, tenant=tenant)
        if not batch:
            break
        if prepare is not None:
            try:
                prepare(batch)
            except abort_on:
                raise
            except Exception:  # the handlers then act one by one and record their own failures
                log.warning("outbox: preparing a batch of %d failed; acting one by one", len(batch), exc_info=True)
        for action in batch:
            handler = handlers.get(action.destination)
            try:
                if handler is None:
                    raise LookupError(f"no handler is registered for destination {action.destination!r}")
                note = handler(action)
            except abort_on:
                raise
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                report.errors[action.id] = message[:MAX_ERROR]
                if outbox.mark_failed(action.id, message, now=when) == FAILED:
                    report.failed += 1
                else:
                    report.retrying += 1
            else:
                outbox.mark_done(action.id, now=when, note=note if isinstance(note, str) else None)
                report.done += 1
                if isinstance(note, str) and note.startswith(SUPERSEDED):
                    report.superseded += 1
    return report

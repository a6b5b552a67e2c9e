"""The sent-state aggregate: pull cursors, what each vendor last confirmed, per-record outcomes, scores and segments.

Before a batch is sent its records are written ahead as "in flight" (:meth:`SentState.intend_batch`)
with the value the vendor may hold afterwards; the vendor's answer then writes the confirmed rows and
the outcomes in one transaction. A crash in between leaves the rows in flight, so the next run knows
the vendor may have applied them and re-sends them idempotently; a re-run sends nothing that was
already confirmed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core.times import now as utcnow
from sync.store import schema as t
from sync.store.sqlcore import chunks, upsert


class SentState:
    """Cursors, last-sent values, outcomes, scores and segment members (mixed into :class:`sync.store.sql.SqlStore`)."""

    engine: Engine

    def cursor(self, tenant_id: str, stream: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(t.cursors.c.value).where(t.cursors.c.tenant_id == tenant_id, t.cursors.c.stream == stream)
            ).scalar()

    def stream_state(self, tenant_id: str) -> dict[str, list[dict[str, Any]]]:
        """What a run resumes from: pull cursors (stream, value, updated_at) and last-sent rows per destination."""
        with self.engine.connect() as conn:
            cursors = conn.execute(
                sa.select(t.cursors.c.stream, t.cursors.c.value, t.cursors.c.updated_at)
                .where(t.cursors.c.tenant_id == tenant_id)
                .order_by(t.cursors.c.stream)
            )
            sent = conn.execute(
                sa.select(
                    t.last_sent.c.destination,
                    sa.func.count().label("records"),
                    sa.func.max(t.last_sent.c.sent_at).label("last_sent_at"),
                )
                .where(t.last_sent.c.tenant_id == tenant_id)
                .group_by(t.last_sent.c.destination)
                .order_by(t.last_sent.c.destination)
            )
            return {"streams": [r._asdict() for r in cursors], "destinations": [r._asdict() for r in sent]}

    def reset_cursors(self, tenant_id: str, streams: Sequence[str] | None = None) -> list[str]:
        """Forget the cursors of ``streams`` (all when None): the next run pulls them in full. Returns those reset.

        Only where to pull from is forgotten: last-sent state stays, so the full pull costs reads, not writes.
        """
        where = [t.cursors.c.tenant_id == tenant_id]
        if streams is not None:
            where.append(t.cursors.c.stream.in_(list(streams)))
        with self.engine.begin() as conn:
            gone = [
                r.stream for r in conn.execute(sa.select(t.cursors.c.stream).where(*where).order_by(t.cursors.c.stream))
            ]
            conn.execute(t.cursors.delete().where(*where))
        return gone

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

    def in_flight(self, tenant_id: str, destination: str) -> set[str]:
        """Keys whose last batch was sent but never answered (a crash): the vendor may or may not hold them."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.last_sent.c.key).where(
                    t.last_sent.c.tenant_id == tenant_id,
                    t.last_sent.c.destination == destination,
                    t.last_sent.c.in_flight.is_(True),
                )
            )
            return {r.key for r in rows}

    def intend_batch(
        self, tenant_id: str, run_id: int | None, destination: str, possible: Iterable[tuple[str, str]]
    ) -> None:
        """Write-ahead before sending a batch: (key, the value the vendor may hold once the batch applies).

        The value covers both outcomes (before and after the batch), so opt-out handlers that ask
        "did we put anything there?" answer yes while the outcome is unknown.
        """
        now = utcnow()
        rows = [
            {"tenant_id": tenant_id, "destination": destination, "key": k, "value": v, "run_id": run_id,
             "sent_at": now, "in_flight": True}
            for k, v in possible
        ]
        with self.engine.begin() as conn:
            upsert(conn, t.last_sent, rows, ["tenant_id", "destination", "key"])

    def destinations(self, tenant_id: str, prefix: str) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.last_sent.c.destination)
                .distinct()
                .where(t.last_sent.c.tenant_id == tenant_id, t.last_sent.c.destination.like(prefix + "%"))
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
        ``outcomes`` holds (key, outcome, message). Confirmed rows are no longer in flight; the rest of
        a batch (failed, unanswered) stays in flight and is re-sent next run.
        """
        now = utcnow()
        confirmed = list(confirmed)
        with self.engine.begin() as conn:
            keep = [
                {
                    "tenant_id": tenant_id,
                    "destination": destination,
                    "key": k,
                    "value": v,
                    "run_id": run_id,
                    "sent_at": now,
                    "in_flight": False,
                }
                for k, v in confirmed
                if v is not None
            ]
            upsert(conn, t.last_sent, keep, ["tenant_id", "destination", "key"])
            gone = [k for k, v in confirmed if v is None]
            for chunk in chunks(gone, 500):
                conn.execute(
                    t.last_sent.delete().where(
                        t.last_sent.c.tenant_id == tenant_id, t.last_sent.c.destination == destination,
                        t.last_sent.c.key.in_(chunk)
                    )
                )
            rows = [{"run_id": run_id or 0, "tenant_id": tenant_id, "destination": destination, "key": k,
                     "outcome": o, "message": m[:2000], "at": now} for k, o, m in outcomes]
            if rows:
                conn.execute(t.record_outcomes.insert(), rows)

    def forget_sent(self, tenant_id: str, key: str, prefix: str) -> None:
        """Drop last-sent rows of one contact under a destination prefix (after an opt-out cleared them)."""
        with self.engine.begin() as conn:
            conn.execute(
                t.last_sent.delete().where(
                    t.last_sent.c.tenant_id == tenant_id, t.last_sent.c.key == key,
                    t.last_sent.c.destination.like(prefix + "%")
                )
            )

    # ------------------------------------------------------------------ scores and segments

    def save_scores(self, tenant_id: str, rows: Iterable[dict[str, Any]]) -> None:
        """Replace the tenant's scores in one transaction; ``rows`` is read 5,000 at a time (a generator
        keeps a whole book's rows from ever existing at once)."""
        rows = iter(rows)
        with self.engine.begin() as conn:
            conn.execute(t.scores.delete().where(t.scores.c.tenant_id == tenant_id))
            while batch := [{"tenant_id": tenant_id, **r} for r in itertools.islice(rows, 5000)]:
                conn.execute(t.scores.insert(), batch)

    def score_rows(self, tenant_id: str) -> Iterator[tuple[str, str, float | None, str | None]]:
        """The saved scores as (contact_id, score, value, label), streamed."""
        sc = t.scores.c
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=50_000).execute(
                sa.select(sc.contact_id, sc.score, sc.value, sc.label).where(sc.tenant_id == tenant_id))
            for r in result:
                yield r[0], r[1], r[2], r[3]

    def confirm_segments(self, tenant_id: str, at: datetime | None = None) -> None:
        """Open spells were last assigned ``at`` (one statement: the members did not change)."""
        hist = t.segment_history
        with self.engine.begin() as conn:
            conn.execute(hist.update().where(hist.c.tenant_id == tenant_id, hist.c.left_at.is_(None))
                         .values(last_assigned=at or utcnow()))

    def save_segments(self, tenant_id: str, members: dict[str, set[str]], holdout: dict[str, set[str]],
                      at: datetime | None = None) -> None:
        now = at or utcnow()
        current = {(s, c): False for s, ids in members.items() for c in ids}
        current.update({(s, c): True for s, ids in holdout.items() for c in ids})
        hist = t.segment_history
        with self.engine.begin() as conn:
            # A continuing member keeps the date it was first assigned: re-runs must not restart the lift window.
            before = {(r.segment, r.contact_id): r.assigned_at for r in conn.execute(
                sa.select(t.segment_members.c.segment, t.segment_members.c.contact_id, t.segment_members.c.assigned_at)
                .where(t.segment_members.c.tenant_id == tenant_id))}
            rows = [{"tenant_id": tenant_id, "segment": s, "contact_id": c, "holdout": h,
                     "assigned_at": before.get((s, c), now)} for (s, c), h in current.items()]
            conn.execute(t.segment_members.delete().where(t.segment_members.c.tenant_id == tenant_id))
            for chunk in chunks(rows, 5000):
                conn.execute(t.segment_members.insert(), chunk)
            open_spells = {(r.segment, r.contact_id): r.first_assigned for r in conn.execute(
                sa.select(hist.c.segment, hist.c.contact_id, hist.c.first_assigned)
                .where(hist.c.tenant_id == tenant_id, hist.c.left_at.is_(None)))}
            key = (hist.c.tenant_id == tenant_id, hist.c.segment == sa.bindparam("s"),
                   hist.c.contact_id == sa.bindparam("c"), hist.c.first_assigned == sa.bindparam("f"))
            gone = [{"s": s, "c": c, "f": f, "v": now} for (s, c), f in open_spells.items() if (s, c) not in current]
            stay = [{"s": s, "c": c, "f": f, "v": now} for (s, c), f in open_spells.items() if (s, c) in current]
            if gone:
                conn.execute(hist.update().where(*key).values(left_at=sa.bindparam("v")), gone)
            if stay:
                conn.execute(hist.update().where(*key).values(last_assigned=sa.bindparam("v")), stay)
            new = [{"tenant_id": tenant_id, "segment": s, "contact_id": c, "first_assigned": now, "last_assigned": now,
                    "left_at": None, "holdout": h} for (s, c), h in current.items() if (s, c) not in open_spells]
            for chunk in chunks(new, 5000):
                conn.execute(hist.insert(), chunk)

    def segment_history(self, tenant_id: str) -> list[dict[str, Any]]:
        """Every spell of segment membership: segment, contact_id, holdout, first/last assigned, left_at."""
        hist = t.segment_history
        with self.engine.connect() as conn:
            return [r._asdict() for r in conn.execute(sa.select(hist).where(hist.c.tenant_id == tenant_id))]

    def segment_members(self, tenant_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            query = sa.select(t.segment_members).where(t.segment_members.c.tenant_id == tenant_id)
            return [r._asdict() for r in conn.execute(query)]

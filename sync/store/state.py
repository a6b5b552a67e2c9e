"""The sent-state aggregate: pull cursors, what each vendor last confirmed, per-record outcomes, scores and segments.

A confirmed batch writes its last-sent rows and its outcomes in one transaction: a crash resumes
from the next batch, and a re-run sends nothing that was already confirmed.
"""

from __future__ import annotations

from collections.abc import Iterable
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
            keep = [
                {
                    "tenant_id": tenant_id,
                    "destination": destination,
                    "key": k,
                    "value": v,
                    "run_id": run_id,
                    "sent_at": now,
                }
                for k, v in confirmed
                if v is not None
            ]
            upsert(conn, t.last_sent, keep, ["tenant_id", "destination", "key"])
            gone = [k for k, v in confirmed if v is None]
            for chunk in chunks(gone, 500):
                conn.execute(
                    t.last_sent.delete().where(
                        t.last_sent.c.tenant_id == tenant_id,
                        t.last_sent.c.destination == destination,
                        t.last_sent.c.key.in_(chunk),
                    )
                )
            rows = [
                {
                    "run_id": run_id or 0,
                    "tenant_id": tenant_id,
                    "destination": destination,
                    "key": k,
                    "outcome": o,
                    "message": m[:2000],
                    "at": now,
                }
                for k, o, m in outcomes
            ]
            if rows:
                conn.execute(t.record_outcomes.insert(), rows)

    def forget_sent(self, tenant_id: str, key: str, prefix: str) -> None:
        """Drop last-sent rows of one contact under a destination prefix (after an opt-out cleared them)."""
        with self.engine.begin() as conn:
            conn.execute(
                t.last_sent.delete().where(
                    t.last_sent.c.tenant_id == tenant_id,
                    t.last_sent.c.key == key,
                    t.last_sent.c.destination.like(prefix + "%"),
                )
            )

    # ------------------------------------------------------------------ scores and segments

    def save_scores(self, tenant_id: str, rows: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(t.scores.delete().where(t.scores.c.tenant_id == tenant_id))
            for chunk in chunks(rows, 5000):
                conn.execute(t.scores.insert(), [{"tenant_id": tenant_id, **r} for r in chunk])

    def save_segments(self, tenant_id: str, members: dict[str, set[str]], holdout: dict[str, set[str]]) -> None:
        now = utcnow()
        rows = [
            {"tenant_id": tenant_id, "segment": s, "contact_id": c, "holdout": False, "assigned_at": now}
            for s, ids in members.items()
            for c in ids
        ]
        rows += [
            {"tenant_id": tenant_id, "segment": s, "contact_id": c, "holdout": True, "assigned_at": now}
            for s, ids in holdout.items()
            for c in ids
        ]
        with self.engine.begin() as conn:
            conn.execute(t.segment_members.delete().where(t.segment_members.c.tenant_id == tenant_id))
            for chunk in chunks(rows, 5000):
                conn.execute(t.segment_members.insert(), chunk)

    def segment_members(self, tenant_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                r._asdict()
                for r in conn.execute(sa.select(t.segment_members).where(t.segment_members.c.tenant_id == tenant_id))
            ]

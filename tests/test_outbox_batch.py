"""Many withdrawals queued in one outbox insert (the webhook's group commit), on SQLite and PostgreSQL: the ids
reserved for the signed rows keep every row's link to the tenant's row before it, also when some rows of the
insert were queued already and are skipped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from consent.chain import lock_head
from consent.ledger import Ledger
from consent.outbox import NewActions, Outbox
from consent.policy import CONSENT, WITHDRAWN
from consent.schema import consent_outbox
from consent.signals import ConsentSignal
from sync.store import open_store

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
DESTS = ("esp.unsubscribe", "crm.optout", "esp.tags")


def withdrawals(ledger: Ledger, emails: list[str]) -> list[NewActions]:
    signals = [ConsentSignal(e, "email_marketing", WITHDRAWN, CONSENT, "preference_center", NOW - timedelta(minutes=1))
               for e in emails]
    events = ledger.record_many("harbor", signals)
    return [NewActions(ev.subject_key, e, DESTS, {"purposes": ["email_marketing"]}, ev.id)
            for ev, e in zip(events, emails, strict=True)]


def test_one_insert_for_many_withdrawals_skips_what_is_queued_and_keeps_the_links(db_url) -> None:
    store = open_store(db_url)
    try:
        ledger = Ledger(store.engine, lambda tenant: b"outbox-batch-key-0123456789")
        outbox = Outbox(store.engine, mac_key=ledger.chain_key)
        ann, bob, cat = withdrawals(ledger, ["ann@x.com", "bob@x.com", "cat@x.com"])
        with store.engine.begin() as conn:  # bob's first two actions are queued already
            lock_head(conn, "harbor")
            assert outbox.enqueue(conn, "harbor", bob.subject_key, bob.email, DESTS[:2], bob.payload,
                                  bob.source_event) == 2
        with store.engine.begin() as conn:
            lock_head(conn, "harbor")
            # bob twice in one call: queued once; his two queued rows are skipped, not written again
            assert outbox.enqueue_many(conn, "harbor", [ann, bob, bob, cat]) == [3, 1, 0, 3]
        with store.engine.begin() as conn:  # everything again: nothing added, nothing broken
            lock_head(conn, "harbor")
            assert outbox.enqueue_many(conn, "harbor", [ann, bob, cat]) == [0, 0, 0]
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(consent_outbox.c.id, consent_outbox.c.payload)
                                .order_by(consent_outbox.c.id)).all()
        assert len(rows) == 2 + 3 + 1 + 3
        links = [r.payload["prev_outbox_id"] for r in rows]
        assert links == [0] + [r.id for r in rows[:-1]]  # each row names the one before it
        result = ledger.verify("harbor")
        assert result.ok, result.first_broken
    finally:
        store.close()

"""The consent ledger and outbox on the real PostgreSQL: concurrent writers, tamper evidence, concurrent drainers."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from consent.ledger import Ledger
from consent.outbox import Outbox, drain
from consent.policy import CONSENT, GRANTED, LEGITIMATE_INTEREST, WITHDRAWN
from consent.propagate import record_and_enqueue
from consent.schema import consent_events
from consent.signals import ConsentSignal
from sync.store import open_store

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = {"email_marketing": CONSENT, "profiling": LEGITIMATE_INTEREST}


@pytest.fixture
def store(pg_url):
    store = open_store(pg_url)
    yield store
    store.close()


def key_for(tenant: str) -> bytes:
    return (tenant * 32).encode()[:32]


def test_eight_concurrent_writers_on_one_contact_never_fork_the_chain(store) -> None:
    ledger = Ledger(store.engine, key_for)
    outbox = Outbox(store.engine, mac_key=ledger.chain_key)
    per_writer, errors = 15, []
    barrier = threading.Barrier(8)

    def writer(w: int) -> None:
        try:
            barrier.wait()
            for i in range(per_writer):
                state = WITHDRAWN if (w + i) % 3 == 0 else GRANTED
                signal = ConsentSignal("shared@x.com", "email_marketing", state, CONSENT, "cli",
                                T0 + timedelta(seconds=w * 100 + i), notice_version="n1",
                                evidence={"request_id": f"w{w}-{i}", "ip": f"10.0.{w}.{i}"})
                if i % 2:
                    record_and_enqueue(ledger, outbox, "harbor", [signal])
                else:
                    ledger.record("harbor", signal.email, signal.purpose, signal.state, basis=signal.basis,
                                  source=signal.source, occurred_at=signal.occurred_at,
                                  notice_version="n1", evidence=signal.evidence)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    result = ledger.verify("harbor")
    assert result.ok and result.checked == 8 * per_writer
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(consent_events.c.seq, consent_events.c.prev_hash)).all()
    assert sorted(r.seq for r in rows) == list(range(1, 8 * per_writer + 1))
    assert max(Counter(r.prev_hash for r in rows).values()) == 1  # no two rows share a parent: no fork
    # the latest event (writer 7, i = 14, a withdrawal) decides
    assert ledger.status("harbor", "shared@x.com")["email_marketing"].state == WITHDRAWN
    assert outbox.depth("harbor") > 0


def test_editing_one_row_makes_verify_fail_and_name_it(store) -> None:
    ledger = Ledger(store.engine, key_for)
    events = ledger.record_many("harbor", [
        ConsentSignal(f"c{i}@x.com", "profiling", WITHDRAWN, LEGITIMATE_INTEREST, "import", T0 + timedelta(minutes=i))
        for i in range(10)
    ])
    assert ledger.verify("harbor").ok
    victim = events[6].id
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), store.engine.begin() as conn:
        conn.execute(sa.text("update consent_events set state = 'granted' where id = :id"), {"id": victim})
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), store.engine.begin() as conn:
        conn.execute(sa.text("delete from consent_events where id = :id"), {"id": victim})
    assert ledger.verify("harbor").ok
    with store.engine.begin() as conn:  # a tamperer with DDL rights drops the guard first
        conn.execute(sa.text("alter table consent_events disable trigger consent_events_append_only"))
        conn.execute(sa.text("update consent_events set state = 'granted' where id = :id"), {"id": victim})
    result = ledger.verify()
    assert not result.ok and result.first_broken is not None
    assert result.first_broken.id == victim and f"id {victim}" in result.first_broken.reason


def test_erasure_passes_the_append_only_guard_on_postgres(store) -> None:
    ledger = Ledger(store.engine, key_for)
    ledger.record("harbor", "eve@x.com", "email_marketing", GRANTED, basis=CONSENT, source="import",
                  occurred_at=T0, notice_version="n1", evidence={"ip": "10.0.0.1"})
    assert ledger.erase("harbor", "eve@x.com").events_scrubbed == 1
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), store.engine.begin() as conn:
        conn.execute(sa.text("update consent_events set subject = 'eve@x.com'"))  # un-erasing is an edit
    assert ledger.verify("harbor").ok and ledger.history("harbor", "eve@x.com")[0].erased


def test_bulk_decisions_follow_the_rule_on_postgres(store) -> None:
    ledger = Ledger(store.engine, key_for)
    ledger.record_many(
        "harbor",
        [
            ConsentSignal("tie@x.com", "email_marketing", GRANTED, CONSENT, "cli", T0, notice_version="n1"),
            ConsentSignal("tie@x.com", "email_marketing", WITHDRAWN, CONSENT, "mailchimp", T0),
            ConsentSignal("late@x.com", "email_marketing", WITHDRAWN, CONSENT, "cli", T0),
            ConsentSignal(
                "late@x.com", "email_marketing", GRANTED, CONSENT, "cli", T0 + timedelta(days=1), notice_version="n2"
            ),
            ConsentSignal("objector@x.com", "profiling", WITHDRAWN, LEGITIMATE_INTEREST, "preference_center", T0),
        ],
    )
    d = ledger.decisions("harbor", ["tie@x.com", "LATE@x.com", "objector@x.com", "unknown@x.com"], POLICY)
    assert d["tie@x.com"].allowed_purposes == {"profiling"}
    assert d["LATE@x.com"].allowed_purposes == {"email_marketing", "profiling"}
    assert d["objector@x.com"].allowed_purposes == frozenset()
    assert d["unknown@x.com"].allowed_purposes == {"profiling"}
    assert d["unknown@x.com"].reasons["email_marketing"] == "no_grant"


def test_two_drainers_never_deliver_one_action_twice(store) -> None:
    ledger = Ledger(store.engine, key_for)
    outbox = Outbox(store.engine, mac_key=ledger.chain_key)
    for i in range(30):
        record_and_enqueue(ledger, outbox, "harbor", [
            ConsentSignal(f"o{i}@x.com", "email_marketing", WITHDRAWN, CONSENT, "mailchimp", T0)
        ], destinations=["esp.unsubscribe", "crm.optout"])
    delivered: list[int] = []
    lock = threading.Lock()

    def handler(action) -> None:
        with lock:
            delivered.append(action.id)

    handlers = {"esp.unsubscribe": handler, "crm.optout": handler}
    threads = [threading.Thread(target=drain, args=(outbox, handlers), kwargs={"limit": 5}) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(delivered) == 60 and len(set(delivered)) == 60
    assert outbox.depth() == 0

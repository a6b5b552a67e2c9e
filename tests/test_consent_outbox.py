"""The opt-out outbox on SQLite: atomic with the ledger, durable, retried with backoff, leased."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from consent.ledger import Ledger
from consent.outbox import DONE, FAILED, PENDING, Outbox, drain
from consent.policy import CONSENT, GRANTED, LEGITIMATE_INTEREST, WITHDRAWN
from consent.propagate import record_and_enqueue
from consent.schema import consent_events, consent_outbox
from consent.signals import ConsentSignal
from sync.store import open_store

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
ALL = ["esp.unsubscribe", "crm.optout", "esp.tags", "crm.segments"]


@pytest.fixture
def engine(sqlite_url):
    store = open_store(sqlite_url)
    yield store.engine
    store.close()


@pytest.fixture
def ledger(engine) -> Ledger:
    return Ledger(engine, lambda tenant: b"outbox-test-key-0123456789")


def unsubscribe(email: str = "ann@x.com", **kw) -> ConsentSignal:
    return ConsentSignal(email, "email_marketing", WITHDRAWN, CONSENT, "mailchimp", NOW - timedelta(minutes=1), **kw)


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_withdrawal_queues_one_action_per_destination_of_its_purpose(ledger) -> None:
    outbox = Outbox(ledger.engine)
    result = record_and_enqueue(ledger, outbox, "harbor", [
        unsubscribe(),
        ConsentSignal("bob@x.com", "profiling", WITHDRAWN, LEGITIMATE_INTEREST, "preference_center", NOW),
        ConsentSignal("cat@x.com", "email_marketing", GRANTED, CONSENT, "preference_center", NOW, "n1"),
    ], ALL, now=NOW)
    assert result.enqueued == 5
    by_email = {}
    for a in outbox.due(now=NOW + timedelta(seconds=1)):
        by_email.setdefault(a.email, set()).add(a.destination)
    assert by_email == {"ann@x.com": {"esp.unsubscribe", "crm.optout", "esp.tags"},
                        "bob@x.com": {"esp.tags", "crm.segments"}}  # a grant queues nothing


def test_a_crash_before_commit_loses_nothing_half_way(ledger) -> None:
    outbox = Outbox(ledger.engine)
    with pytest.raises(RuntimeError), ledger.engine.begin() as conn:
        record_and_enqueue(ledger, outbox, "harbor", [unsubscribe()], ALL, conn=conn)
        raise RuntimeError("process killed between ledger write and propagation")
    assert count(ledger.engine, consent_events) == 0 and count(ledger.engine, consent_outbox) == 0
    # after a crash *after* the commit, a fresh process finds the work waiting
    record_and_enqueue(ledger, outbox, "harbor", [unsubscribe()], ALL, now=NOW)
    assert len(Outbox(ledger.engine).claim(now=NOW + timedelta(seconds=1))) == 3


def test_replayed_signal_queues_nothing_again(ledger) -> None:
    outbox = Outbox(ledger.engine)
    first = record_and_enqueue(ledger, outbox, "harbor", [unsubscribe(idempotency_key="mc:1")], ALL)
    again = record_and_enqueue(ledger, outbox, "harbor", [unsubscribe(idempotency_key="mc:1")], ALL)
    assert (first.enqueued, again.enqueued, again.skipped) == (3, 0, 1)
    with ledger.engine.begin() as conn:  # enqueueing the same event again is a no-op too
        assert outbox.enqueue(conn, "harbor", first.recorded[0].subject_key, "ann@x.com", ALL[:3], {},
                              first.recorded[0].id) == 0


def test_failures_back_off_exponentially_then_give_up(ledger) -> None:
    outbox = Outbox(ledger.engine, max_attempts=4, base_delay=timedelta(seconds=10), max_delay=timedelta(seconds=25))
    record_and_enqueue(ledger, outbox, "harbor", [unsubscribe()], ["esp.unsubscribe"], now=NOW)
    when, waits = NOW, []
    for attempt in range(4):
        report = drain(outbox, {"esp.unsubscribe": lambda a: (_ for _ in ()).throw(OSError("vendor down"))}, when)
        assert report.errors and "OSError: vendor down" in next(iter(report.errors.values()))
        (action,) = outbox.actions_for("harbor", ledger.pseudonym("harbor", "ann@x.com"))
        if attempt < 3:
            assert action.status == PENDING and report.retrying == 1
            waits.append(action.next_attempt_at - when)
            assert drain(outbox, {}, when + waits[-1] - timedelta(seconds=1)).errors == {}  # not due yet
            when = action.next_attempt_at
        else:
            assert action.status == FAILED and report.failed == 1
    assert waits == [timedelta(seconds=10), timedelta(seconds=20), timedelta(seconds=25)]  # capped
    assert action.attempts == 4 and action.last_error == "OSError: vendor down"


def test_drain_retries_until_the_vendor_confirms(ledger) -> None:
    outbox = Outbox(ledger.engine, base_delay=timedelta(seconds=5))
    record_and_enqueue(ledger, outbox, "harbor", [unsubscribe()], ["esp.unsubscribe", "crm.optout"], now=NOW)
    calls = []

    def flaky(action) -> None:
        calls.append(action.destination)
        if calls.count(action.destination) == 1:
            raise TimeoutError("read timed out")

    first = drain(outbox, {"esp.unsubscribe": flaky, "crm.optout": flaky}, NOW)
    assert (first.done, first.retrying) == (0, 2)
    second = drain(outbox, {"esp.unsubscribe": flaky, "crm.optout": flaky}, NOW + timedelta(seconds=6))
    assert second.done == 2 and outbox.depth() == 0
    statuses = {a.status for a in outbox.actions_for("harbor", ledger.pseudonym("harbor", "ann@x.com"))}
    assert statuses == {DONE}


def test_a_destination_without_a_handler_is_a_visible_failure(ledger) -> None:
    outbox = Outbox(ledger.engine)
    record_and_enqueue(ledger, outbox, "harbor", [unsubscribe()], ["crm.optout"], now=NOW)
    report = drain(outbox, {}, NOW)
    assert (
        report.retrying == 1 and "no handler is registered for destination 'crm.optout'" in report.errors.popitem()[1]
    )


def test_a_crashed_drainers_claim_comes_back_after_its_lease(ledger) -> None:
    outbox = Outbox(ledger.engine, lease=timedelta(minutes=5))
    record_and_enqueue(ledger, outbox, "harbor", [unsubscribe()], ["esp.unsubscribe"], now=NOW)
    assert len(outbox.claim(now=NOW)) == 1  # ... and the drainer dies here
    assert outbox.claim(now=NOW + timedelta(minutes=1)) == []
    assert len(outbox.claim(now=NOW + timedelta(minutes=6))) == 1

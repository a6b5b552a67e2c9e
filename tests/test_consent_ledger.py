"""The consent ledger on SQLite: the state rule (property-based), idempotency, tamper evidence, erasure, bulk speed."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent.ledger import Ledger
from consent.outbox import Outbox
from consent.policy import CONSENT, GRANTED, LEGITIMATE_INTEREST, WITHDRAWN, current_state, is_allowed, sort_key
from consent.propagate import erase_and_enqueue, record_and_enqueue
from consent.schema import consent_events
from consent.signals import ConsentSignal
from core.errors import InputError
from sync.store import open_store

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = {"email_marketing": CONSENT, "profiling": LEGITIMATE_INTEREST}
KEY = b"k" * 32


def key_for(tenant: str) -> bytes:
    return hashlib.sha256(KEY + tenant.encode()).digest()


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'ledger.db'}")
    yield store.engine
    store.close()


@pytest.fixture
def ledger(engine) -> Ledger:
    return Ledger(engine, key_for)


_tenant_ids = iter(range(10**9))


@pytest.fixture
def tenant() -> str:
    return f"t{next(_tenant_ids)}"


# -- the state function ---------------------------------------------------------------------------


class Ev:
    def __init__(self, occurred_at: datetime, state: str) -> None:
        self.occurred_at, self.state = occurred_at, state

    def __repr__(self) -> str:
        return f"Ev({self.occurred_at:%H:%M}, {self.state})"


events_st = st.lists(
    st.builds(Ev, st.integers(0, 20).map(lambda m: T0 + timedelta(minutes=m)), st.sampled_from([GRANTED, WITHDRAWN])),
    max_size=12,
)


@given(events_st, st.randoms())
def test_state_is_latest_event_whatever_the_arrival_order(events, rnd) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert current_state(shuffled) == current_state(events)
    if not events:
        assert current_state(events) is None
        return
    latest = max(e.occurred_at for e in events)
    at_latest = {e.state for e in events if e.occurred_at == latest}
    # withdrawn beats granted at the same instant
    assert current_state(events) == (WITHDRAWN if WITHDRAWN in at_latest else GRANTED)


@given(events_st, st.sampled_from([GRANTED, WITHDRAWN]), st.integers(0, 20))
def test_a_later_event_always_decides(events, state, minutes) -> None:
    later = Ev(max([e.occurred_at for e in events], default=T0) + timedelta(minutes=minutes + 1), state)
    assert current_state([*events, later]) == state


@given(st.sampled_from([GRANTED, WITHDRAWN, None]))
def test_unknown_is_refused_under_consent_and_allowed_under_legitimate_interest(state) -> None:
    assert is_allowed(state, CONSENT) is (state == GRANTED)
    assert is_allowed(state, LEGITIMATE_INTEREST) is (state != WITHDRAWN)
    assert is_allowed(state, "legitimate-interest") is False  # a typo fails closed


def test_sort_key_orders_withdrawal_after_grant_at_same_time() -> None:
    assert sort_key(Ev(T0, WITHDRAWN)) > sort_key(Ev(T0, GRANTED))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(list(POLICY)), st.integers(0, 6),
                          st.sampled_from([GRANTED, WITHDRAWN])), max_size=25))
def test_bulk_decisions_agree_with_the_state_function(engine, events) -> None:
    ledger = Ledger(engine, key_for)
    tenant = f"prop{next(_tenant_ids)}"
    ledger.record_many(tenant, [
        ConsentSignal(f"p{who}@x.com", purpose, state, POLICY[purpose], "import", T0 + timedelta(hours=h))
        for who, purpose, h, state in events
    ])
    emails = [f"P{who}@x.com " for who in range(4)]  # as given by a vendor: case and spaces differ
    decisions = ledger.decisions(tenant, emails, POLICY)
    assert set(decisions) == set(emails)
    for who, email in enumerate(emails):
        for purpose, basis in POLICY.items():
            mine = [Ev(T0 + timedelta(hours=h), s) for w, p, h, s in events if w == who and p == purpose]
            assert decisions[email].allows(purpose) is is_allowed(current_state(mine), basis), (email, purpose)


# -- recording ------------------------------------------------------------------------------------


def test_record_normalises_and_idempotency_key_records_once(ledger: Ledger, tenant: str) -> None:
    first = ledger.record(tenant, " Ann@Example.COM", "email_marketing", GRANTED, basis=CONSENT, source="mailchimp",
                          occurred_at=T0, idempotency_key="mailchimp:42")
    again = ledger.record(tenant, "ann@example.com", "email_marketing", GRANTED, basis=CONSENT, source="mailchimp",
                          occurred_at=T0, idempotency_key="mailchimp:42")
    assert first is not None and again is None
    assert [e.state for e in ledger.history(tenant, "ANN@example.com")] == [GRANTED]
    assert ledger.status(tenant, "ann@example.com")["email_marketing"].source == "mailchimp"


def test_repulled_vendor_signals_are_recorded_once(ledger: Ledger, tenant: str) -> None:
    signals = [ConsentSignal(f"m{i}@x.com", "email_marketing", WITHDRAWN, CONSENT, "mailchimp", T0,
                      idempotency_key=f"mailchimp:unsub:{i}") for i in range(5)]
    assert len(ledger.record_many(tenant, signals)) == 5
    assert ledger.record_many(tenant, signals + signals) == []
    assert ledger.verify(tenant).checked == 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"state": "maybe"}, "state must be one of"),
        ({"occurred_at": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"email": "  "}, "email is empty"),
        ({"purpose": ""}, "purpose must be"),
        ({"evidence": {"ip": object()}}, "not JSON-serialisable"),
    ],
    ids=["state", "naive-time", "blank-email", "blank-purpose", "bad-evidence"],
)
def test_bad_signals_are_refused_and_nothing_is_written(ledger: Ledger, tenant: str, change, message) -> None:
    good = ConsentSignal("a@x.com", "email_marketing", GRANTED, CONSENT, "cli", T0)
    bad = ConsentSignal(**{**{f: getattr(good, f) for f in good.__dataclass_fields__}, **change})
    with pytest.raises(InputError, match=message):
        ledger.record_many(tenant, [good, bad])
    assert ledger.verify(tenant).checked == 0


def test_decisions_for_100k_contacts_in_one_bulk_query(engine) -> None:
    tenant = "bulk"
    ledger = Ledger(engine, key_for)
    key = ledger.key(tenant)
    emails = [f"person{i}@example.com" for i in range(100_000)]
    # Cheap data: rows straight into the table (decisions reads states only, not the chain).
    rows = [
        {"tenant_id": tenant, "seq": i + 1, "subject": e, "subject_key": ledger.pseudonym(tenant, e),
         "purpose": "email_marketing", "state": GRANTED if i % 3 else WITHDRAWN, "basis": CONSENT,
         "source": "import", "occurred_at": T0 + timedelta(seconds=i % 1000), "recorded_at": T0,
         "prev_hash": "0" * 64, "hash": "0" * 64}
        for i, e in enumerate(emails)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(consent_events), rows)
    assert key == ledger.key(tenant)
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        start = time.perf_counter()
        decisions = ledger.decisions(tenant, emails, POLICY)
        print(
            f"\ndecisions for 100,000 contacts: {(time.perf_counter() - start) * 1000:.0f} ms "
            "(informational; see bench/)"
        )
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert len(decisions) == 100_000
    assert decisions["person0@example.com"].allowed_purposes == {"profiling"}
    assert decisions["person1@example.com"].allowed_purposes == {"email_marketing", "profiling"}
    # Bulk by construction: one query for the whole run, never one per contact. (Speed itself is
    # measured in bench/, not asserted here.)
    assert len(statements) <= 2, statements


# -- tamper evidence ------------------------------------------------------------------------------
def drop_append_only_guard(conn) -> None:
    """What a tamperer with DDL rights does first; the hash chain must still catch the edit."""
    conn.execute(sa.text("DROP TRIGGER consent_events_no_delete"))
    conn.execute(sa.text("DROP TRIGGER consent_events_erasure_only"))


@pytest.fixture
def unguarded(tmp_path) -> Ledger:
    """A ledger whose append-only triggers were dropped (a separate database: the others keep theirs)."""
    store = open_store(f"sqlite:///{tmp_path / 'tampered.db'}")
    with store.engine.begin() as conn:
        drop_append_only_guard(conn)
    yield Ledger(store.engine, key_for)
    store.close()


def test_the_database_refuses_edits_and_deletes_but_allows_erasure(ledger: Ledger, tenant: str) -> None:
    ids = _seed(ledger, tenant)
    for statement in ("update consent_events set state = 'granted' where id = :id",
                      "update consent_events set subject = 'x@y.z' where id = :id",
                      "delete from consent_events where id = :id"):
        with pytest.raises(sa.exc.IntegrityError, match="append-only"), ledger.engine.begin() as conn:
            conn.execute(sa.text(statement), {"id": ids[0]})
    ledger.erase(tenant, "c0@x.com")
    assert ledger.verify(tenant).ok


def _seed(ledger: Ledger, tenant: str, n: int = 6) -> list[int]:
    events = ledger.record_many(tenant, [
        ConsentSignal(f"c{i % 3}@x.com", "email_marketing", GRANTED if i % 2 else WITHDRAWN, CONSENT, "import",
               T0 + timedelta(minutes=i), evidence={"ip": f"10.0.0.{i}", "request_id": f"r{i}"})
        for i in range(n)
    ])
    return [e.id for e in events]


@pytest.mark.parametrize(
    ("tamper", "expect"),
    [
        ("update consent_events set state = 'granted' where id = :victim", "content does not match"),
        ("update consent_events set occurred_at = '2020-01-01 00:00:00.000000' where id = :victim",
         "content does not match"),
        ("update consent_events set evidence_personal = '{\"ip\": \"6.6.6.6\"}' where id = :victim",
         "personal evidence was edited"),
        ("update consent_events set subject = 'mallory@x.com' where id = :victim", "email does not match"),
        ("delete from consent_events where id = :victim", "seq 4 follows seq 2"),
    ],
    ids=["state", "time", "personal-evidence", "email", "delete"],
)
def test_verify_names_the_first_edited_or_deleted_row(unguarded: Ledger, tamper, expect) -> None:
    ledger, tenant = unguarded, "harbor"
    ids = _seed(ledger, tenant)
    assert ledger.verify(tenant).ok
    victim = ids[2]
    with ledger.engine.begin() as conn:
        conn.execute(sa.text(tamper), {"victim": victim})
    result = ledger.verify(tenant)
    assert not result.ok and result.first_broken is not None
    named = victim if "delete" not in tamper else ids[3]
    assert result.first_broken.id == named
    assert f"id {named}" in result.first_broken.reason and expect in result.first_broken.reason


def test_verify_detects_reordered_and_truncated_chains(unguarded: Ledger) -> None:
    ledger, tenant = unguarded, "harbor"
    ids = _seed(ledger, tenant)
    with ledger.engine.begin() as conn:  # swap two rows' positions
        conn.execute(sa.text("update consent_events set seq = -1 where id = :a"), {"a": ids[1]})
        conn.execute(sa.text("update consent_events set seq = 2 where id = :b"), {"b": ids[2]})
        conn.execute(sa.text("update consent_events set seq = 3 where id = :a"), {"a": ids[1]})
    broken = ledger.verify(tenant).first_broken
    assert broken is not None and broken.id == ids[2]
    other = tenant + "b"
    ids = _seed(ledger, other)
    with ledger.engine.begin() as conn:
        conn.execute(sa.text("delete from consent_events where id = :last"), {"last": ids[-1]})
    broken = ledger.verify(other).first_broken
    assert broken is not None and "deleted from the end" in broken.reason


# -- erasure --------------------------------------------------------------------------------------


def test_erasure_keeps_pseudonymous_withdrawal_and_the_chain(ledger: Ledger, tenant: str) -> None:
    outbox = Outbox(ledger.engine, mac_key=ledger.chain_key)
    ledger.record(tenant, "eve@x.com", "email_marketing", GRANTED, basis=CONSENT, source="import", occurred_at=T0,
                  notice_version="n1", evidence={"ip": "10.1.1.1", "user_agent": "Firefox"})
    record_and_enqueue(ledger, outbox, tenant, [ConsentSignal("keep@x.com", "profiling", WITHDRAWN, LEGITIMATE_INTEREST,
                                                       "cli", T0)])
    result = erase_and_enqueue(ledger, outbox, tenant, "Eve@x.com")
    assert result.erasure is not None and result.erasure.events_scrubbed == 1
    assert result.enqueued >= 3  # the same suppression at every vendor
    with ledger.engine.connect() as conn:
        rows = conn.execute(sa.select(consent_events).where(consent_events.c.tenant_id == tenant))
        text = " ".join(str(v) for row in rows for v in row)
    assert "eve@x.com" not in text and "10.1.1.1" not in text and "Firefox" not in text
    assert ledger.verify(tenant).ok
    # the person comes back with the same address: still refused, and provably so
    decision = ledger.decisions(tenant, ["eve@x.com"], POLICY)["eve@x.com"]
    assert decision.allowed_purposes == frozenset()
    assert all(e.erased for e in ledger.history(tenant, "eve@x.com"))
    # the queued suppression keeps the email until delivered, then loses it
    actions = outbox.actions_for(tenant, ledger.pseudonym(tenant, "eve@x.com"))
    assert {a.email for a in actions} == {"eve@x.com"}
    for a in actions:
        outbox.mark_done(a.id)
    assert {a.email for a in outbox.actions_for(tenant, ledger.pseudonym(tenant, "eve@x.com"))} == {None}


def test_email_change_carries_consent_to_the_new_address(ledger: Ledger, tenant: str) -> None:
    ledger.record(tenant, "old@x.com", "email_marketing", WITHDRAWN, basis=CONSENT, source="mailchimp", occurred_at=T0)
    with ledger.engine.begin() as conn:
        carried = ledger.add_alias(conn, tenant, "old@x.com", "new@x.com", source="mailchimp", occurred_at=T0)
    assert [e.state for e in carried] == [WITHDRAWN]
    assert ledger.status(tenant, "new@x.com")["email_marketing"].state == WITHDRAWN
    assert ledger.verify(tenant).ok


def test_a_vendor_reference_is_carried_to_the_email_once_known(ledger: Ledger, tenant: str) -> None:
    # A HubSpot privacy deletion for contact 77 arrived before any pull knew its email.
    ledger.record_many(tenant, [
        ConsentSignal("hubspot:77", purpose, WITHDRAWN, basis, "hubspot", T0, idempotency_key=f"hubspot:9:{purpose}")
        for purpose, basis in POLICY.items()
    ])
    assert ledger.decisions(tenant, ["zoe@x.com"], POLICY)["zoe@x.com"].allows("profiling")
    carried = ledger.link_vendor_ref(tenant, "hubspot", "77", "Zoe@x.com")
    assert len(carried) == 2 and ledger.link_vendor_ref(tenant, "hubspot", "77", "zoe@x.com") == []
    assert ledger.decisions(tenant, ["zoe@x.com"], POLICY)["zoe@x.com"].allowed_purposes == frozenset()
    seq, head = ledger.head(tenant)
    assert seq == 4 and ledger.verify(tenant).ok and len(head) == 64


def test_decisions_fail_closed_for_an_unencodable_email(ledger: Ledger, tenant: str) -> None:
    decision = ledger.decisions(tenant, ["bad\ud800@x.com"], POLICY)["bad\ud800@x.com"]
    assert not decision.allows("email_marketing") and decision.reasons["email_marketing"] == "no_grant"

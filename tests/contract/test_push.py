"""Push contract: batches within the declared limits, per-record outcomes, no write when nothing changed,
and never a request that subscribes or resubscribes anyone."""

from __future__ import annotations

from tests.contract.subjects import PARTIAL_FAILURE, PROP, TAG, Subject, needs


def test_push_batches_never_exceed_the_declared_limits(subject: Subject) -> None:
    conn = subject.connect()
    subject.prepare(conn)
    keys = subject.push_keys(min(2 * conn.limits.batch_size + 3, 1_203))  # more than two full batches
    subject.mark()
    results = subject.push(conn, keys)
    assert [r.key for r in results] == keys and {r.outcome for r in results} == {"sent"}
    sizes = subject.write_sizes(conn)
    assert sizes, "the push made no write call"
    too_big = [(what, n, limit) for what, n, limit in sizes if not 0 < n <= limit]
    assert too_big == []
    if conn.limits.batch_size < len(keys):
        assert len(sizes) >= 3  # split into batches, not sent in one


def test_a_partial_failure_maps_to_exactly_the_refused_records(subject: Subject) -> None:
    needs(subject, PARTIAL_FAILURE)
    conn = subject.connect()
    subject.prepare(conn)
    keys = subject.push_keys(30)
    refused = [keys[3], keys[17], keys[29]]
    subject.refuse(refused)
    results = subject.push(conn, keys)
    assert [r.key for r in results] == keys
    assert {r.key for r in results if r.outcome != "sent"} == set(refused)
    assert all(r.message for r in results if r.key in refused), "a refused record needs the vendor's reason"


def test_nothing_to_change_makes_zero_write_calls(subject: Subject) -> None:
    """What a connector is asked on a re-run with no change: the schema again (it exists) and no record.

    (The pipeline sends only the diff against what was last sent; tests/test_pipeline.py proves a
    re-run asks for nothing. Here: asking for nothing costs nothing.)
    """
    conn = subject.connect()
    subject.prepare(conn)
    subject.push(conn, subject.push_keys(5))
    subject.mark()
    subject.prepare(conn)
    assert subject.push(conn, []) == []
    assert subject.write_sizes(conn) == []


def test_no_request_ever_subscribes_or_resubscribes_anyone(subject: Subject) -> None:
    conn = subject.connect()
    subject.prepare(conn)
    keys = subject.push_keys(10)
    assert {r.outcome for r in subject.push(conn, keys)} == {"sent"}
    gone = keys[0]
    if subject.kind == "crm":
        assert conn.suppress(subject.email_of(gone), gone, PROP).outcome == "sent"
    else:
        assert conn.suppress(subject.email_of(gone), [TAG]).outcome == "sent"
        again = subject.push(conn, keys)  # asked to tag the person who just opted out: refused, not resubscribed
        assert next(r.outcome for r in again) == "suppressed" and "unsubscribed" in again[0].message
    assert subject.subscribe_requests() == []

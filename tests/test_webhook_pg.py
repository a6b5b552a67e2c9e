"""The pipelined group write on PostgreSQL (consent.webhook_pg) writes what the general write writes.

The same requests - preference-center opt-outs and grants, a Mailchimp unsubscribe, HubSpot batches (one of them
partly replayed), replays, the same body twice in one group - go to the webhook over SQLite (the general write,
statement by statement) and over PostgreSQL (two pipelined round trips per group). The answers, the chained events,
the outbox actions and the receipts must be the same, and the PostgreSQL chain and outbox links must verify. A
pipelined write that fails half-way keeps nothing of itself, and its group is written the general way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

import consent.webhook_pg as webhook_pg
from consent.chain import lock_head
from consent.integrity import PREV_LINK
from consent.schema import consent_events, consent_outbox, webhook_receipts
from sandbox.webhooks import hubspot_event, segsync_signature
from tests.test_consent_webhook import SECRET, Env

pytestmark = pytest.mark.postgres
WHEN = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)


def prefs(email: str, marketing: bool, profiling: bool | None = None) -> tuple[str, dict[str, Any]]:
    purposes = {"email_marketing": marketing, **({} if profiling is None else {"profiling": profiling})}
    doc = {"email": email, "purposes": purposes, "occurred_at": "2026-11-25T18:00:00Z",
           "notice_version": "privacy-2026-03"}
    body = json.dumps(doc).encode()
    stamp = int(time.time())
    return "/hooks/harbor/preferences", {"content": body, "headers": {
        "Content-Type": "application/json", "X-Segsync-Timestamp": str(stamp),
        "X-Segsync-Signature": segsync_signature(SECRET, stamp, body)}}


def together(env: Env, requests: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Send ``requests`` at once (the writer takes them as one group or a few); their answers, in order."""
    async def send() -> list[Any]:
        return list(await asyncio.gather(*(env.client.post(path, **kw) for path, kw in requests)))

    answers = env.loop.run_until_complete(send())
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    return [a.json() for a in answers]


def script(env: Env) -> list[Any]:
    """The same scripted traffic for either store; every answer."""
    answers: list[Any] = []
    first = prefs("first@example.com", False)
    answers.append(together(env, [first]))  # the tenant's first write: its chain head is created
    optouts = [prefs(f"p{i}@example.com", False, i % 2 == 0) for i in range(12)]
    grants = [prefs(f"g{i}@example.com", True, True) for i in range(6)]
    answers.append(together(env, [*optouts, *grants, optouts[3], first]))  # a repeat in the group, a replay
    answers.append(together(env, optouts[:4]))  # replays only: nothing written
    answers.append(env.mailchimp("unsubscribe", "Ann@Example.com", reason="abuse", fired_at=WHEN).json())
    batch = [hubspot_event("contact.propertyChange", 101, property_name="hs_email_optout", property_value="true",
                           event_id=9001, occurred_at=WHEN),
             hubspot_event("contact.propertyChange", 102, property_name="hs_email_optout", property_value="true",
                           event_id=9002, occurred_at=WHEN)]
    answers.append(env.hubspot(batch[:1]).json())
    answers.append(env.hubspot(batch).json())  # partly replayed: only event 9002 is new
    answers.append(together(env, [prefs("p1@example.com", True, True), prefs("late@example.com", False)]))
    return answers


def content(engine: sa.Engine) -> dict[str, list[Any]]:
    """What was written, without what differs by store or by run (ids, hashes, clock times)."""
    ev, ob = consent_events.c, consent_outbox.c
    with engine.connect() as conn:
        seq_of = {row.id: row.seq for row in conn.execute(sa.select(ev.id, ev.seq))}
        events = [tuple(r) for r in conn.execute(sa.select(
            ev.tenant_id, ev.seq, ev.subject, ev.subject_key, ev.purpose, ev.state, ev.basis, ev.source,
            ev.occurred_at, ev.notice_version, ev.evidence, ev.evidence_personal, ev.personal_digest,
            ev.idempotency_key).order_by(ev.tenant_id, ev.seq))]
        outbox = [(r.tenant_id, r.subject_key, r.email, r.destination, seq_of[r.source_event], r.status,
                   r.scrub_on_done, {k: v for k, v in r.payload.items() if k != PREV_LINK}, r.mac is not None)
                  for r in conn.execute(sa.select(consent_outbox).order_by(ob.tenant_id, ob.id))]
        receipts = sorted(tuple(r) for r in conn.execute(
            sa.select(webhook_receipts.c.tenant_id, webhook_receipts.c.key)))
    return {"events": events, "outbox": outbox, "receipts": receipts}


def pipelined(env: Env) -> webhook_pg.PipelinedWrite:
    writer = env.app.state.pipelined
    assert isinstance(writer, webhook_pg.PipelinedWrite)
    return writer


def test_the_pipelined_write_writes_what_the_general_write_writes(sqlite_url, pg_url) -> None:
    general, pg = Env(sqlite_url), Env(pg_url)
    try:
        assert general.app.state.pipelined is None
        expected, answers = script(general), script(pg)
        assert answers == expected
        assert expected[1][-2:] == [{"status": "duplicate", "recorded": 0, "enqueued": 0}] * 2
        assert expected[5]["status"] == "recorded" and expected[5]["recorded"] == 1  # 9002 only
        assert content(pg.store.engine) == content(general.store.engine)
        result = pg.ledger.verify("harbor")  # the chain, and each outbox row's link to the one before it
        assert result.ok, result.first_broken
        # all but the tenant's first write (which creates its chain head) went through the pipeline: in one round
        # trip when the writer knew where it had left the tenant, else in two; the first took one more and the
        # rollback before it went the general way; the replays were refused in one trip, then written in two
        writer = pipelined(pg)
        assert writer.written == pg.app.state.writer.groups - 1 > 0
        assert writer.one_trip > 0 and writer.replays > 0 and writer.moved_elsewhere == 0
        assert writer.round_trips == 2 * (writer.written - writer.one_trip) + writer.one_trip + writer.replays + 2
    finally:
        pg.close()
        general.close()


def test_a_pipelined_write_that_fails_keeps_nothing_and_the_group_is_written_the_general_way(
        pg_url, monkeypatch, caplog) -> None:
    env = Env(pg_url)
    try:
        together(env, [prefs("first@example.com", False)])  # creates the chain head (general write)
        # the outbox insert is the last statement before COMMIT: the events and the head move before it are sent
        monkeypatch.setattr(webhook_pg, "_INSERT_OUTBOX", webhook_pg._INSERT_OUTBOX.replace("status", "no_such_column"))
        with caplog.at_level(logging.WARNING, logger="segsync.consent.webhook"):
            answers = together(env, [prefs(f"p{i}@example.com", False) for i in range(5)])
        assert "pipelined webhook write failed" in caplog.text
        assert answers == [{"status": "recorded", "recorded": 1, "enqueued": 3}] * 5
        with env.store.engine.connect() as conn:
            events = conn.execute(sa.select(sa.func.count()).select_from(consent_events)).scalar_one()
            outbox = conn.execute(sa.select(sa.func.count()).select_from(consent_outbox)).scalar_one()
        assert (events, outbox) == (6, 18)  # once each: the failed attempt left nothing
        result = env.ledger.verify("harbor")
        assert result.ok, result.first_broken
        monkeypatch.undo()
        # the writer's connection was rolled back and is usable: the next group goes through the pipeline again
        before = pipelined(env).written
        assert together(env, [prefs("after@example.com", False)]) == [{"status": "recorded", "recorded": 1,
                                                                       "enqueued": 3}]
        assert pipelined(env).written == before + 1
        assert env.ledger.verify("harbor").ok
    finally:
        env.close()


def primed(env: Env) -> webhook_pg.PipelinedWrite:
    """The tenant's head created (general write), then one group in two round trips: from then on the writer
    knows where it left the tenant, and the next group goes in one."""
    together(env, [prefs("first@example.com", False)])
    together(env, [prefs("second@example.com", False)])
    writer = pipelined(env)
    before = writer.one_trip
    assert together(env, [prefs("third@example.com", False)]) == [{"status": "recorded", "recorded": 1,
                                                                    "enqueued": 3}]
    assert writer.one_trip == before + 1
    return writer


def test_a_foreign_append_between_two_groups_is_detected_and_the_chain_still_verifies(pg_url) -> None:
    env = Env(pg_url)
    try:
        writer = primed(env)
        # another writer (a sync run, the CLI, another server) appends to the chain behind this writer's back
        env.ledger.record("harbor", "cli@example.com", "email_marketing", "withdrawn", basis="consent",
                          source="cli", occurred_at=WHEN)
        trips, one_trip = writer.round_trips, writer.one_trip
        answers = together(env, [prefs(f"after{i}@example.com", False) for i in range(3)])
        assert answers == [{"status": "recorded", "recorded": 1, "enqueued": 3}] * 3
        # the head move found the head elsewhere (not the seq's unique key after the fact): nothing kept,
        # then the group went the two-round-trip way, reading the head as it is
        assert writer.moved_elsewhere == 1 and writer.replays == 0
        assert (writer.one_trip, writer.round_trips) == (one_trip, trips + 1 + 2)
        result = env.ledger.verify("harbor")
        assert result.ok, result.first_broken
        with env.store.engine.connect() as conn:
            seqs = conn.execute(sa.select(consent_events.c.seq).order_by(consent_events.c.seq)).scalars().all()
        assert seqs == list(range(1, 3 + 1 + 3 + 1))  # every row once, no gap
        # and the writer knows the tenant again: the next group is one round trip
        together(env, [prefs("later@example.com", False)])
        assert writer.one_trip == one_trip + 1
        assert env.ledger.verify("harbor").ok
    finally:
        env.close()


def test_a_foreign_outbox_row_between_two_groups_is_detected_and_the_links_still_verify(pg_url) -> None:
    env = Env(pg_url)
    try:
        writer = primed(env)
        # an outbox row and no event (its writer holds the head lock, as every outbox writer does): the head
        # did not move, so only the outbox check can see it; signed rows name the row before them
        with env.store.engine.begin() as conn:
            lock_head(conn, "harbor")
            source = conn.execute(sa.select(sa.func.max(consent_events.c.id))).scalar_one()
            env.outbox.enqueue(conn, "harbor", "s" * 64, "x@example.com", ["crm"], {"action": "suppress"},
                               source_event=source)
        one_trip = writer.one_trip
        answers = together(env, [prefs("optout@example.com", False)])
        assert answers == [{"status": "recorded", "recorded": 1, "enqueued": 3}]
        assert writer.moved_elsewhere == 1 and writer.one_trip == one_trip
        result = env.ledger.verify("harbor")  # each outbox row's link to the one before it
        assert result.ok, result.first_broken
    finally:
        env.close()


def test_a_replay_in_one_round_trip_keeps_nothing_and_answers_duplicate(pg_url) -> None:
    env = Env(pg_url)
    try:
        writer = primed(env)
        counts = env.counts()
        replay = prefs("third@example.com", False)  # the same body: the same receipt
        assert together(env, [replay, prefs("new@example.com", False)]) == [
            {"status": "duplicate", "recorded": 0, "enqueued": 0}, {"status": "recorded", "recorded": 1, "enqueued": 3}]
        assert writer.replays == 1 and writer.moved_elsewhere == 0
        with env.store.engine.connect() as conn:
            events = conn.execute(sa.select(sa.func.count()).select_from(consent_events)).scalar_one()
        assert events == 4  # first, second, third, new: the replay wrote nothing
        assert env.counts() != counts and env.ledger.verify("harbor").ok
    finally:
        env.close()


def test_the_idempotency_look_up_is_never_run_from_a_plan_cached_while_the_table_was_small(pg_url) -> None:
    """PostgreSQL may keep a prepared statement's generic plan for good after five runs; made while the table
    was small, it scans every event the tenant has (nothing re-plans it with autovacuum off, and the writer's
    connection lives as long as the server): the group write grew from 1.4 to 14 ms over 10,000 requests."""
    env = Env(pg_url)
    try:
        together(env, [prefs("first@example.com", False)])
        writer = pipelined(env)
        for i in range(8):  # two round trips each: the look-up runs only there
            writer._tails.clear()
            together(env, [prefs(f"p{i}@example.com", False)])
        assert writer.one_trip == 0 and writer.written == 8
        plans = writer._connection().execute(
            "SELECT statement, generic_plans FROM pg_prepared_statements").fetchall()
        assert any("consent_chain_heads" in statement for statement, _ in plans)  # the others are prepared
        assert [(s, n) for s, n in plans if "idempotency_key = ANY" in s and n] == []
        writer._connection().rollback()
    finally:
        env.close()


def test_the_outbox_check_reads_one_index_entry_however_many_rows_the_tenant_has(pg_url) -> None:
    """The one-round-trip write compares the tenant's newest outbox row in every group: as a generic plan (what
    a prepared statement ends up with) it must be one backward step of the (tenant, id) index, not an aggregate
    over the tenant's rows (max() under the comparison was planned so: the write grew with the outbox)."""
    env = Env(pg_url)
    try:
        primed(env)
        pg = pipelined(env)._connection()
        sql = webhook_pg._SAME_OUTBOX.replace("%s", "$1", 1).replace("%s", "$2", 1)
        pg.execute("SET plan_cache_mode = force_generic_plan")
        pg.execute(f"PREPARE same_outbox (text, bigint) AS {sql}")
        try:
            plan = "\n".join(row[0] for row in pg.execute("EXPLAIN EXECUTE same_outbox('harbor', 0)").fetchall())
        finally:
            pg.execute("DEALLOCATE same_outbox")
            pg.execute("RESET plan_cache_mode")
            pg.rollback()
        assert "Limit" in plan and "Index Only Scan Backward using ix_consent_outbox_tenant_id" in plan, plan
    finally:
        env.close()

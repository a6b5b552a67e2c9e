"""The webhook under load, over real HTTP (uvicorn on loopback), on SQLite and PostgreSQL: a burst loses nothing,
every accepted request is in the ledger exactly once, grouped appends keep the chain verifiable, and a full queue
is answered 429 with Retry-After instead of queueing."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa

from connectors.registry import webhook_handlers
from consent.chain import lock_head
from consent.groupwrite import GroupWriter, Saturated
from consent.ledger import Ledger
from consent.outbox import Outbox
from consent.schema import consent_events, consent_outbox, webhook_receipts
from consent.webhook import TenantHooks, create_app
from sandbox.common import ServerThread
from sandbox.webhooks import mailchimp_form, preference_body, segsync_signature
from sync.store import open_store

SECRET = "harbor-webhook-secret-0123456789"
POLICY = {"email_marketing": "consent", "profiling": "legitimate_interest"}


def key_for(tenant: str) -> bytes:
    return f"pseudonym-key-of-{tenant}".encode()


class Served:
    """The webhook app over a store, served by uvicorn on a free loopback port."""

    def __init__(self, url: str, *, max_pending: int = 256, max_wait: float = 600) -> None:
        self.store = open_store(url)
        self.ledger = Ledger(self.store.engine, key_for)
        self.outbox = Outbox(self.store.engine, mac_key=self.ledger.chain_key)
        self.woken: list[str] = []
        tenants = {"harbor": TenantHooks(SECRET, POLICY, vendors={"mailchimp": {"list_id": "L1"}}),
                   "other": TenantHooks(SECRET, POLICY)}
        self.app = create_app(tenants, self.ledger, self.outbox, on_enqueued=self.woken.append,
                              vendors=webhook_handlers(), max_pending=max_pending, max_wait=max_wait)
        self.writer = self.app.state.writer
        self.server = ServerThread(self.app)

    def count(self, table: sa.Table, tenant: str = "harbor") -> int:
        with self.store.engine.connect() as conn:
            return int(conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c.tenant_id == tenant)).scalar_one())

    def close(self) -> None:
        self.server.stop()
        self.store.close()


def signed(i: int, tenant: str = "harbor") -> tuple[str, bytes, dict[str, str]]:
    """Request i: person i withdraws email marketing (every third also grants profiling)."""
    purposes = {"email_marketing": False, **({"profiling": True} if i % 3 == 0 else {})}
    body = json.dumps(preference_body(f"p{i}@example.com", purposes)).encode()
    stamp = int(time.time())
    headers = {"Content-Type": "application/json", "X-Segsync-Timestamp": str(stamp),
               "X-Segsync-Signature": segsync_signature(SECRET, stamp, body)}
    return f"/hooks/{tenant}/preferences", body, headers


async def _burst(base: str, requests: list[tuple[str, bytes, dict[str, str]]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        return await asyncio.gather(*(client.post(p, content=b, headers=h) for p, b, h in requests))


def events_expected(indices: list[int]) -> int:
    return sum(2 if i % 3 == 0 else 1 for i in indices)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, sqlite_url):
    if request.param == "sqlite":
        return sqlite_url
    return request.getfixturevalue("pg_url")


def test_a_burst_loses_nothing_and_every_accepted_request_is_in_the_ledger_once(store_url) -> None:
    env = Served(store_url, max_pending=10_000)
    try:
        requests = [signed(i) for i in range(300)] + [signed(i, "other") for i in range(40)]
        replays = requests[:50]  # the same bodies again: receipts make them no-ops
        answers = asyncio.run(_burst(env.server.url, requests + replays))
        first, again = answers[: len(requests)], answers[len(requests):]
        assert [r.status_code for r in first] == [200] * len(requests)
        assert {r.json()["status"] for r in again} <= {"duplicate"}
        assert env.count(webhook_receipts) == 300 and env.count(webhook_receipts, "other") == 40
        assert env.count(consent_events) == events_expected(list(range(300)))
        assert env.count(consent_events, "other") == events_expected(list(range(40)))
        assert env.count(consent_outbox) == 300 * 3  # one withdrawal each: esp.unsubscribe, crm.optout, esp.tags
        for tenant in ("harbor", "other"):
            result = env.ledger.verify(tenant)
            assert result.ok, result.first_broken
        # Grouped: fewer transactions than requests (the burst arrives faster than one commit per request).
        assert env.writer.items == len(requests) + len(replays)
        assert env.writer.groups < env.writer.items
        assert env.writer.wait_idle()  # the last group's drain wake-up comes after its answers
        assert set(env.woken) == {"harbor", "other"} and len(env.woken) <= env.writer.groups * 2
    finally:
        env.close()


def test_a_full_queue_is_answered_429_with_retry_after_and_the_queued_requests_still_commit(store_url) -> None:
    env = Served(store_url, max_pending=3)  # the queue's size is what sheds here (waits may last)
    blocker = env.store.engine.connect()
    try:
        tx = blocker.begin()
        lock_head(blocker, "harbor")  # the writer now waits for this lock: nothing it takes can commit
        responses: dict[int, httpx.Response] = {}

        def post(i: int) -> None:
            path, body, headers = signed(i)
            responses[i] = httpx.post(env.server.url + path, content=body, headers=headers, timeout=60)

        first = threading.Thread(target=post, args=(0,))
        first.start()
        deadline = time.monotonic() + 10
        while env.writer.taken < 1 and time.monotonic() < deadline:  # the writer took it and waits on the lock
            time.sleep(0.01)
        queued = [threading.Thread(target=post, args=(i,)) for i in (1, 2, 3)]
        for t in queued:
            t.start()
        while env.writer.pending() < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert env.writer.pending() == 3
        path, body, headers = signed(4)
        shed = httpx.post(env.server.url + path, content=body, headers=headers, timeout=10)
        assert shed.status_code == 429
        assert int(shed.headers["Retry-After"]) >= 1 and "retry" in shed.json()["error"]
        tx.commit()
        for t in [first, *queued]:
            t.join(60)
        assert [responses[i].status_code for i in range(4)] == [200] * 4
        assert env.count(webhook_receipts) == 4  # the shed request wrote nothing; its sender retries it
        assert env.count(consent_events) == events_expected([0, 1, 2, 3])
        assert env.ledger.verify("harbor").ok
        # The retry after the 429 goes through.
        retry = httpx.post(env.server.url + path, content=body, headers=headers, timeout=10)
        assert retry.status_code == 200 and retry.json()["recorded"] == 1
    finally:
        blocker.close()
        env.close()


def test_a_bad_request_in_a_group_fails_alone(sqlite_url) -> None:
    """A request the ledger refuses inside a group commit is retried on its own: the others are written."""
    env = Served(sqlite_url)
    try:
        requests = [signed(i) for i in range(20)]
        path, _, _ = requests[7]
        # A lone surrogate passes the request parser (JSON allows the escape) but not the ledger's check.
        doc = preference_body("p7@example.com", {"email_marketing": True}, notice_version="\ud800")
        body = json.dumps(doc).encode()
        stamp = int(time.time())
        requests[7] = (path, body, {"Content-Type": "application/json", "X-Segsync-Timestamp": str(stamp),
                                    "X-Segsync-Signature": segsync_signature(SECRET, stamp, body)})
        answers = asyncio.run(_burst(env.server.url, requests))
        codes = [r.status_code for r in answers]
        assert codes[7] == 400 and "notice_version" in answers[7].json()["error"]
        assert codes[:7] + codes[8:] == [200] * 19
        assert env.count(webhook_receipts) == 19
        assert env.count(consent_events) == events_expected([i for i in range(20) if i != 7])
        assert env.ledger.verify("harbor").ok
    finally:
        env.close()


def test_the_writer_sheds_when_its_oldest_request_has_waited_too_long() -> None:
    """Not only a full queue: a queue whose head already waited past max_wait refuses new work."""
    release = threading.Event()

    def write(items):
        release.wait(30)
        return [f"done {i}" for i in items]

    writer: GroupWriter[int, str] = GroupWriter(write, window=0, max_pending=100, max_wait=0.05)

    async def scenario() -> tuple[list[str], int]:
        first = writer.submit(1)
        while writer.taken < 1:  # the writer holds item 1 and blocks in write()
            await asyncio.sleep(0.005)
        second = writer.submit(2)  # queued behind it
        await asyncio.sleep(0.1)  # longer than max_wait
        try:
            writer.submit(3)
            refused = 0
        except Saturated as exc:
            refused = exc.retry_after
        release.set()
        return [await first, await second], refused

    done, retry_after = asyncio.run(scenario())
    assert done == ["done 1", "done 2"] and retry_after >= 1


def test_email_changes_in_a_group_keep_one_verifiable_chain(sqlite_url) -> None:
    """Mailchimp address changes (an alias plus carried events, appended inside the group) mixed with preference
    changes in one burst: every request recorded, the carried withdrawals queued for the new address, the chain
    verifies."""
    env = Served(sqlite_url, max_pending=10_000)
    try:
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        first = asyncio.run(_burst(env.server.url, [signed(i) for i in range(10)]))  # p0..p9 withdraw
        assert [r.status_code for r in first] == [200] * 10
        moves = [(f"/hooks/harbor/mailchimp/{SECRET}",
                  urlencode(mailchimp_form("upemail", f"new{i}@example.com", "L1", old_email=f"p{i}@example.com"))
                  .encode(), form) for i in range(10)]
        answers = asyncio.run(_burst(env.server.url, [x for pair in zip(moves, [signed(i) for i in range(10, 30, 2)],
                                                                         strict=True) for x in pair]))
        assert [r.status_code for r in answers] == [200] * 20
        assert all(a.json()["recorded"] >= 1 for a in answers)
        for i in range(10):
            actions = env.outbox.actions_for("harbor", env.ledger.pseudonym("harbor", f"new{i}@example.com"))
            assert {a.email for a in actions} == {f"new{i}@example.com"}
        assert env.ledger.verify("harbor").ok
    finally:
        env.close()


@pytest.mark.postgres
def test_two_servers_on_one_postgresql_keep_one_chain_and_lose_nothing(pg_url) -> None:
    """Two webhook processes (here: two apps, each with its own engine and writer thread) over one PostgreSQL, fed
    at once, with each replay sent to the other one: the tenant's chain head lock serialises their appends, so
    every request is recorded exactly once, the chain and the outbox links verify, and a replay racing its
    original is a duplicate whichever commits first."""
    one, two = Served(pg_url, max_pending=10_000), Served(pg_url, max_pending=10_000)
    try:
        requests = [signed(i) for i in range(100)] + [signed(i, "other") for i in range(30)]
        replayed = list(range(0, len(requests), 5))
        to_one = list(range(0, len(requests), 2)) + replayed[1::2]  # indices into requests
        to_two = list(range(1, len(requests), 2)) + replayed[0::2]

        async def both() -> list[list[httpx.Response]]:
            return list(await asyncio.gather(_burst(one.server.url, [requests[i] for i in to_one]),
                                             _burst(two.server.url, [requests[i] for i in to_two])))

        first, second = asyncio.run(both())
        assert all(r.status_code == 200 for r in first + second)
        statuses: dict[int, list[str]] = {}
        for i, answer in [*zip(to_one, first, strict=True), *zip(to_two, second, strict=True)]:
            statuses.setdefault(i, []).append(answer.json()["status"])
        assert all(sorted(statuses[i]) == (["duplicate", "recorded"] if i in replayed else ["recorded"])
                   for i in range(len(requests)))
        assert one.count(webhook_receipts) == 100 and one.count(webhook_receipts, "other") == 30
        assert one.count(consent_events) == events_expected(list(range(100)))
        assert one.count(consent_events, "other") == events_expected(list(range(30)))
        assert one.count(consent_outbox) == 100 * 3 and one.count(consent_outbox, "other") == 30 * 3
        for tenant in ("harbor", "other"):
            result = one.ledger.verify(tenant)  # the chain, and every outbox row's link to the one before it
            assert result.ok, result.first_broken
        assert one.writer.items > 0 and two.writer.items > 0
    finally:
        two.close()
        one.close()

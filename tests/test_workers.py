"""The task engine's parts (issue 19): retries, schedule ticks, vendor-account slots, enqueueing, dead workers,
and `segsync serve --workers external`. The 3-worker acceptance test is tests/test_workers_scale.py.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from procrastinate.jobs import Job

from core.errors import ConfigError, RetriableApiError
from sync.cli.app import cli
from sync.config import load_config_text
from sync.serve import Service
from sync.store import TenantBusy, open_store
from sync.workers import DRAIN_TASK, PRIORITY_DRAIN, PRIORITY_MANUAL, PRIORITY_SCHEDULED, QUEUE, RUN_TASK
from sync.workers.engine import enqueue_run, ensure_schema, make_app, queue_stats
from sync.workers.slots import AccountBusy, AccountSlots, account_fingerprint, tenant_accounts
from sync.workers.tasks import MAX_ERROR_ATTEMPTS, FailedRecords, Interrupted, RunRetry, Runtime
from sync.workers.ticks import Maintenance, ticks_between
from tests.configs import consent_yaml
from tests.test_serve import ACME_SECRET, Client, World, config_text, sample, signed, tagged_subscriber

TOKEN_A, TOKEN_B = "pat-na1-aaaaaaaa-111111111111", "pat-na1-bbbbbbbb-222222222222"


def config(store: str, tenants: list[tuple[str, str, str | None]], workers: str = "") -> str:
    """(id, HubSpot token, schedule) per tenant; every tenant on its own Mailchimp key."""
    blocks = "".join(f"""
  - id: {tid}
    timezone: America/New_York
    {f'schedule: "{schedule}"' if schedule else ''}
    crm: {{type: hubspot, access_token: {token}}}
    esp: {{type: mailchimp, api_key: {i:032x}-us6, list_id: list{i}}}
    {consent_yaml("workers-webhook-secret-0123")}
""" for i, (tid, token, schedule) in enumerate(tenants))
    return f"version: 1\nstore: {store}\n{workers}tenants:{blocks}"


def job(attempts: int = 0) -> Job:
    return Job(id=1, queue=QUEUE, lock="t", queueing_lock="t", task_name=RUN_TASK, attempts=attempts)


# ---------------------------------------------------------------------------------- without a database


@pytest.mark.parametrize(("exc", "attempts", "wait"), [
    (AccountBusy("busy"), 40, (5, 10)),       # waiting is not failing: no end, whatever the attempts
    (TenantBusy("busy"), 40, (5, 10)),
    (Interrupted("shutdown"), 40, (0, 0)),    # at once, by another worker
    (FailedRecords("3 failed"), 0, (30, 30)),  # backoff: 30 s, 2 min, 8 min ...
    (RetriableApiError("503"), 2, (480, 480)),
    (FailedRecords("3 failed"), MAX_ERROR_ATTEMPTS - 1, None),  # no try left
    (ConfigError("bad token"), 0, None),      # a person must act
    (ValueError("a bug"), 0, None),
], ids=["account-busy", "tenant-busy", "interrupted", "failed-records", "vendor-503", "exhausted", "config",
        "bug"])
def test_when_a_job_is_tried_again(exc, attempts, wait):
    decision = RunRetry().get_retry_decision(exception=exc, job=job(attempts))
    if wait is None:
        assert decision is None
        return
    assert decision is not None and decision.retry_at is not None
    delay = (decision.retry_at - datetime.now(UTC)).total_seconds()
    assert wait[0] - 2 <= delay <= wait[1] + 1, delay


def test_schedule_ticks_follow_the_firms_time_zone_across_daylight_saving():
    cfg = load_config_text(config("sqlite:///x.db", [("acme", TOKEN_A, "0 9 * * *")]))
    tenant = cfg.tenants[0]
    winter = ticks_between(tenant, datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC))
    summer = ticks_between(tenant, datetime(2026, 7, 5, tzinfo=UTC), datetime(2026, 7, 6, tzinfo=UTC))
    assert winter == [datetime(2026, 1, 5, 14, 0, tzinfo=UTC)]  # 9:00 EST
    assert summer == [datetime(2026, 7, 5, 13, 0, tzinfo=UTC)]  # 9:00 EDT
    manual = load_config_text(config("sqlite:///x.db", [("acme", TOKEN_A, None)])).tenants[0]
    assert ticks_between(manual, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)) == []


def test_tenants_on_one_vendor_account_share_a_fingerprint_that_never_shows_the_secret():
    cfg = load_config_text(config("sqlite:///x.db", [("a", TOKEN_A, None), ("b", TOKEN_A, None),
                                                     ("c", TOKEN_B, None)]))
    a, b, c = (tenant_accounts(t) for t in cfg.tenants)
    crm = [account_fingerprint(t.crm) for t in cfg.tenants]
    assert crm[0] == crm[1] != crm[2]
    assert crm[0] in a and crm[0] in b and crm[2] in c
    assert len(set(a) & set(c)) == 0  # their Mailchimp keys differ too
    for fp in a + c:
        assert TOKEN_A not in fp and TOKEN_B not in fp and "aaaaaaaa" not in fp
    assert account_fingerprint(None) is None


def test_the_task_engine_refuses_an_sqlite_store_and_enqueue_refuses_local_only_options(tmp_path):
    path = tmp_path / "segsync.yaml"
    path.write_text(config(f"sqlite:///{tmp_path / 'x.db'}", [("acme", TOKEN_A, None)]))
    for args in (["worker", str(path)], ["sync", str(path), "--enqueue"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert "needs a PostgreSQL store" in result.output
    result = CliRunner().invoke(cli, ["sync", str(path), "--enqueue", "--dry-run"])
    assert result.exit_code == 2 and "--dry-run" in result.output, result.output


def test_the_workers_block_is_validated_with_its_path(tmp_path):
    path = tmp_path / "segsync.yaml"
    path.write_text(config("sqlite:///x.db", [("acme", TOKEN_A, None)], "workers: {per_account: 0, stalled: 3}\n"))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    assert "workers.per_account" in result.output and "workers.stalled" in result.output, result.output


# ---------------------------------------------------------------------------------- PostgreSQL


def queued_runs(cfg, pg_url: str, *tenant_ids: str):
    """The store (the caller closes it) and an unopened app, with a manual run of each tenant queued."""
    store = open_store(pg_url)
    ensure_schema(store.engine)
    app = make_app(cfg)
    with app.open():
        for tenant_id in tenant_ids:
            enqueue_run(app, tenant_id)
    return store, app


@pytest.mark.postgres
def test_enqueue_makes_the_schema_once_and_queues_one_run_per_firm(tmp_path, pg_url):
    path = tmp_path / "segsync.yaml"
    path.write_text(config(pg_url, [("acme", TOKEN_A, None), ("beta", TOKEN_B, None)]))
    first = CliRunner().invoke(cli, ["sync", str(path), "--enqueue", "--tenant", "acme"])
    again = CliRunner().invoke(cli, ["sync", str(path), "--enqueue"])
    assert first.exit_code == 0 and "acme: run queued" in first.output, first.output
    assert again.exit_code == 0, again.output
    assert "acme: a run is already waiting" in again.output and "beta: run queued" in again.output
    engine = sa.create_engine(pg_url)
    try:
        assert ensure_schema(engine) is False  # made by the first enqueue, not again
        with engine.connect() as conn:
            rows = conn.execute(sa.text("select lock, queueing_lock, priority, args->>'reason', status::text "
                                        "from procrastinate_jobs order by id")).all()
        assert [tuple(r) for r in rows] == [("acme", "acme", PRIORITY_MANUAL, "manual", "todo"),
                                            ("beta", "beta", PRIORITY_MANUAL, "manual", "todo")]
        stats = queue_stats(engine, 60)
        assert stats.waiting == {RUN_TASK: 2} and stats.running == {} and stats.workers == 0
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_schedule_tick_seen_by_many_workers_queues_one_run(pg_url):
    now = datetime.now(UTC)
    cron = f"{now.minute} {now.hour} * * *"  # a tick that has just passed (UTC)
    cfg = load_config_text(config(pg_url, [("acme", TOKEN_A, cron)]).replace("America/New_York", "UTC"))
    store = open_store(pg_url)
    ensure_schema(store.engine)

    async def three_workers_look() -> None:
        app = make_app(cfg)
        async with app.open_async():
            for _ in range(3):
                await Maintenance(app, cfg, store.engine).queue_ticks()  # each a fresh worker: catch-up included

    try:
        asyncio.run(three_workers_look())
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text("select priority, args->>'reason' from procrastinate_jobs")).all()
    finally:
        store.close()
    assert [tuple(r) for r in rows] == [(PRIORITY_SCHEDULED, "scheduled")]


@pytest.mark.postgres
def test_a_tick_whose_defer_failed_is_queued_on_the_next_pass(pg_url, monkeypatch):
    now = datetime.now(UTC)
    cron = f"{now.minute} {now.hour} * * *"  # a tick that has just passed (UTC)
    cfg = load_config_text(config(pg_url, [("acme", TOKEN_A, cron)]).replace("America/New_York", "UTC"))
    store = open_store(pg_url)
    ensure_schema(store.engine)

    async def database_restarts_then_recovers() -> None:
        app = make_app(cfg)
        async with app.open_async():
            worker = Maintenance(app, cfg, store.engine)
            manager = type(app.job_manager)
            real = manager.defer_periodic_job

            async def down(self: object, *args: object, **kwargs: object) -> object:
                raise ConnectionError("the database is restarting")

            monkeypatch.setattr(manager, "defer_periodic_job", down)
            await worker.queue_ticks()  # logged, not raised; the tick is not forgotten
            monkeypatch.setattr(manager, "defer_periodic_job", real)
            await worker.queue_ticks()

    try:
        asyncio.run(database_restarts_then_recovers())
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text("select args->>'reason' from procrastinate_jobs")).all()
    finally:
        store.close()
    assert [tuple(r) for r in rows] == [("scheduled",)]


@pytest.mark.postgres
def test_runs_of_firms_on_one_vendor_account_are_capped(pg_url):
    cfg = load_config_text(config(pg_url, [("a", TOKEN_A, None), ("b", TOKEN_A, None), ("c", TOKEN_A, None),
                                           ("d", TOKEN_B, None)]))
    a, b, c, d = (tenant_accounts(t) for t in cfg.tenants)
    store = open_store(pg_url)
    try:
        one = AccountSlots(store.engine, per_account=1)
        with one.hold(a), one.hold(d), pytest.raises(AccountBusy), one.hold(b):  # d: another account, not held up
            pass
        with one.hold(b):  # released when the run ended
            pass
        two = AccountSlots(store.engine, per_account=2)
        with two.hold(a) as first, two.hold(b) as second:
            assert set(first.values()) | set(second.values()) == {0, 1}
            with pytest.raises(AccountBusy), two.hold(c):
                pass
    finally:
        store.close()


@pytest.mark.postgres
def test_the_job_of_a_silent_worker_goes_back_to_the_queue(pg_url):
    cfg = load_config_text(config(pg_url, [("acme", TOKEN_A, None)], "workers: {stalled_after_seconds: 5}\n"))
    store, app = queued_runs(cfg, pg_url, "acme")
    try:
        with store.engine.begin() as conn:  # a worker took the job, then died: its heartbeat is a minute old
            worker = conn.execute(sa.text("select procrastinate_register_worker_v1()")).scalar()
            conn.execute(sa.text("select procrastinate_fetch_job_v2(array['segsync'], :w)"), {"w": worker})
            conn.execute(sa.text("update procrastinate_workers set last_heartbeat = now() - interval '1 minute'"))

        async def rescue() -> None:
            async with app.open_async():
                await Maintenance(app, cfg, store.engine).rescue_stalled()

        asyncio.run(rescue())
        with store.engine.connect() as conn:
            status = conn.execute(sa.text("select status::text, lock from procrastinate_jobs")).all()
    finally:
        store.close()
    assert [tuple(r) for r in status] == [("todo", "acme")]


@pytest.mark.postgres
def test_serve_with_external_workers_queues_the_opt_out_drain_and_a_worker_runs_it(tmp_path, pg_url):
    admin = "admin-token-0123456789abcdef"
    cfg = load_config_text(config_text(pg_url, tmp_path / "models").replace(
        "tenants:", f"server: {{admin_token: {admin}}}\ntenants:", 1))
    world = World()
    service = Service(cfg, tmp_path, store=open_store(pg_url), connectors=world, external_workers=True)
    client = Client(service.app(run_scheduler=False))
    try:
        assert service.schedule() == []  # the workers queue the schedule ticks, not this process
        assert service.firms()["acme"]["next_run"] is not None  # /healthz still says when the next tick is
        assert service.run_sync("acme")["status"] == "ok"  # a first run, so there are tags to clear
        _crm, esp = world.vendors["acme"]
        email = tagged_subscriber(esp)
        body, headers = signed(ACME_SECRET, email, {"email_marketing": False})
        assert client.post("/hooks/acme/preferences", content=body, headers=headers).status_code == 200
        client.get("/metrics")
        assert sample(service, "segsync_queue_jobs", task=DRAIN_TASK, state="waiting") == 1
        with service.store.engine.connect() as conn:
            assert conn.execute(sa.text("select priority from procrastinate_jobs")).scalar() == PRIORITY_DRAIN
        assert esp.members[email]["status"] == "subscribed"  # this process sent nothing
        status_page = client.get("/", headers={"Authorization": f"Bearer {admin}"})
        assert status_page.status_code == 200 and "Workers and queue" in status_page.text
        assert "0 running, 1 waiting" in status_page.text  # the drain

        runtime = Runtime(cfg=cfg, base_dir=tmp_path, store=service.store,
                          slots=AccountSlots(service.store.engine, 1), connectors=world)
        worker_app = make_app(cfg)
        worker_app.run_worker(queues=[QUEUE], wait=False, install_signal_handlers=False, listen_notify=False,
                              additional_context={"segsync": runtime})
        assert esp.members[email]["status"] == "unsubscribed"
        assert service.outbox.depth("acme") == 0
        client.get("/metrics")
        assert sample(service, "segsync_queue_jobs", task=DRAIN_TASK, state="waiting") == 0
    finally:
        client.close()
        service.shutdown()
        service.store.close()


@pytest.mark.postgres
@pytest.mark.slow
def test_two_firms_on_one_vendor_account_never_run_together_even_with_a_free_worker(tmp_path, pg_url):
    """acme and beta share one email-platform key (test_serve's config): with per_account 1 the second run
    waits for the first, although the worker could run both at once, and then runs (a retry, not a failure)."""
    cfg = load_config_text(config_text(pg_url, tmp_path / "models").replace(
        "tenants:", "workers: {per_account: 1}\ntenants:", 1))
    acme, beta = (t for t in cfg.tenants if t.id in ("acme", "beta"))
    assert tenant_accounts(acme) == tenant_accounts(beta) != []
    store, app = queued_runs(cfg, pg_url, "acme", "beta")
    try:
        runtime = Runtime(cfg=cfg, base_dir=tmp_path, store=store, slots=AccountSlots(store.engine, 1),
                          connectors=World())
        for _ in range(30):  # a run refused for a busy account is due again 5-10 s later
            app.run_worker(queues=[QUEUE], wait=False, concurrency=2, install_signal_handlers=False,
                           listen_notify=False, additional_context={"segsync": runtime})
            if queue_stats(store.engine, 60).waiting == {}:
                break
            time.sleep(1)
        runs = {r["tenant_id"]: r for r in store.runs(limit=10)}
        with store.engine.connect() as conn:
            retried = conn.execute(sa.text("select count(*) from procrastinate_events "
                                           "where type = 'deferred_for_retry'")).scalar()
            statuses = conn.execute(sa.text("select status::text from procrastinate_jobs")).scalars().all()
    finally:
        store.close()
    assert statuses == ["succeeded", "succeeded"] and retried >= 1
    first, second = sorted((runs["acme"], runs["beta"]), key=lambda r: r["started_at"])
    assert first["status"] == second["status"] == "ok"
    assert first["finished_at"] <= second["started_at"], (first, second)  # one at a time on the shared account

"""Hosted mode (``segsync serve``): health, metrics, the webhook through the full app, schedules,
the tenant lock across servers, graceful shutdown and secrets kept out of the access log.

Most tests wire the in-memory fakes (``tests.fakes``) in through ``Service(connectors=...)`` and call
the app over httpx's ASGI transport. Two start the real ``segsync serve`` process and stop it with
SIGTERM: one idle (access log, health), one in the middle of a push against the sandbox vendors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import zoneinfo
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
import requests
import sqlalchemy as sa
from click.testing import CliRunner

from connectors.base import Limits
from consent.schema import consent_events, webhook_receipts
from sandbox.webhooks import mailchimp_form, preference_body, segsync_signature
from sync.config import load_config_text
from sync.run.plan import CRM
from sync.serve import AccessLogFilter, Service, mask_path, parse_listen, uvicorn_log_config, uvicorn_options
from sync.store import Store, open_store
from sync.store.schema import runs as runs_table
from tests.configs import consent_yaml, sandbox_config
from tests.fakes import FakeCrm, FakeEsp, make_book

ACME_SECRET = "acme-webhook-secret-0001"
BETA_SECRET = "beta-webhook-secret-0002"

TENANT = """
  - id: {id}
    timezone: {tz}
    {schedule}
    crm: {{type: csv, contacts: unused.csv}}
    esp: {{type: mailchimp, api_key: 0123456789abcdef0123456789abcdef-us6, list_id: list-{id}}}
    {consent}
    scores:
      - {{name: upgrade, kind: propensity, outcome: {{event: upgrade}}, horizon_days: 90}}
    segments:
      - {{name: likely_upgrade, score: upgrade, top_percent: 30}}
    holdout_percent: 10
    max_change_share: 1
"""


def config_text(store: str, models: Path, acme: str = "acme", server: str = "") -> str:
    tenants = [
        TENANT.format(id=acme, tz="Europe/Paris", schedule='schedule: "0 6 * * *"', consent=consent_yaml(ACME_SECRET)),
        TENANT.format(
            id="beta", tz="America/New_York", schedule='schedule: "30 7 * * 1-5"', consent=consent_yaml(BETA_SECRET)
        ),
        TENANT.format(id="gamma", tz="UTC", schedule="", consent=consent_yaml("gamma-webhook-secret-0003")),
    ]
    return f"version: 1\nstore: {store}\nmodel_dir: {models}\n{server}tenants:{''.join(tenants)}"


class World:
    """One fake CRM and ESP per tenant (a small book: a few hundred contacts)."""

    def __init__(self, n: int = 400, crm_class: type[FakeCrm] = FakeCrm) -> None:
        self.vendors: dict[str, tuple[FakeCrm, FakeEsp]] = {}
        self.n, self.crm_class = n, crm_class

    def __call__(self, tenant):
        if tenant.id not in self.vendors:
            people, events = make_book(self.n)
            self.vendors[tenant.id] = (self.crm_class(people, events), FakeEsp(people))
        return self.vendors[tenant.id]


def make_service(tmp_path: Path, db_url: str, world: World | None = None, acme: str = "acme") -> tuple[Service, World]:
    cfg = load_config_text(config_text(db_url, tmp_path / "models", acme))
    world = world or World()
    return Service(cfg, tmp_path, store=open_store(db_url), connectors=world), world


@pytest.fixture
def served(tmp_path, sqlite_url):
    service, world = make_service(tmp_path, sqlite_url)
    yield service, world
    service.shutdown()
    service.store.close()


class Client:
    """A synchronous face on httpx's ASGI transport: requests go straight into the app, no socket."""

    def __init__(self, app) -> None:
        self.loop = asyncio.new_event_loop()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://segsync.test")

    def request(self, method: str, path: str, **kw) -> httpx.Response:
        return self.loop.run_until_complete(self.http.request(method, path, **kw))

    def get(self, path: str, **kw) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return self.request("POST", path, **kw)

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()


@pytest.fixture
def client(served):
    service, _ = served
    c = Client(service.app(run_scheduler=False))
    yield c
    c.close()


def signed(secret: str, email: str, purposes: dict[str, bool]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(preference_body(email, purposes)).encode()
    ts = int(time.time())
    return body, {"Content-Type": "application/json", "X-Segsync-Timestamp": str(ts),
                  "X-Segsync-Signature": segsync_signature(secret, ts, body)}


def sample(service: Service, name: str, **labels: str) -> float | None:
    return service.metrics.registry.get_sample_value(name, labels)


def written(service: Service) -> tuple[int, int]:
    with service.store.engine.connect() as conn:
        return (conn.execute(sa.select(sa.func.count()).select_from(consent_events)).scalar_one(),
                conn.execute(sa.select(sa.func.count()).select_from(webhook_receipts)).scalar_one())


def tagged_subscriber(esp: FakeEsp) -> str:
    return sorted(e for e, m in esp.members.items() if m["status"] == "subscribed" and m["tags"])[0]


# ---------------------------------------------------------------------------------- health, metrics


def test_healthz_reports_the_database(served, client):
    service, _ = served
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["database"] == "ok" and r.json()["status"] == "ok"
    assert r.json()["tenants"] == ["acme", "beta", "gamma"]
    good = service.store.engine
    service.store.engine = sa.create_engine(f"sqlite:///{Path(good.url.database).parent}/missing/dir/x.db")
    try:
        r = client.get("/healthz")
    finally:
        service.store.engine.dispose()
        service.store.engine = good
    assert r.status_code == 503 and r.json()["database"].startswith("error: ")


def test_metrics_expose_runs_outbox_and_webhook_latency(served, client):
    service, _ = served
    assert service.run_sync("acme")["status"] == "ok"
    body, headers = signed(ACME_SECRET, "person3@example.com", {"email_marketing": False})
    assert client.post("/hooks/acme/preferences", content=body, headers=headers).status_code == 200
    # odd paths under /hooks/ answer 404 (no crash) and never become metric labels
    assert client.post("/hooks/acme/").status_code == 404
    assert client.post("/hooks/acme/no-such-kind-xyz").status_code == 404
    text = client.get("/metrics").text
    assert 'segsync_runs_total{status="ok",tenant="acme"} 1.0' in text
    assert 'segsync_records_total{outcome="sent",tenant="acme"}' in text
    assert 'segsync_outbox_depth{tenant="acme"}' in text
    assert 'segsync_webhook_seconds_count{route="preferences"} 1.0' in text
    assert 'segsync_webhook_seconds_count{route="other"} 2.0' in text
    assert "no-such-kind" not in text
    # the webhook queued propagation (no scheduler here): the depth says so until a drain
    assert sample(service, "segsync_outbox_depth", tenant="acme") > 0
    service.drain("acme")
    assert sample(service, "segsync_outbox_depth", tenant="acme") == 0


class CountingCrm(FakeCrm):
    def stats(self) -> dict[str, int]:
        return {"total_calls": sum(self.calls.values()), "rate_limited": 0}


def test_each_run_reports_and_counts_its_own_api_calls(tmp_path, sqlite_url):
    people, events = make_book(400)
    built: list[CountingCrm] = []

    def connectors(tenant):
        built.append(CountingCrm(people, events))
        return built[-1], FakeEsp(people)

    cfg = load_config_text(config_text(sqlite_url, tmp_path / "models"))
    service = Service(cfg, tmp_path, store=open_store(sqlite_url), connectors=connectors)
    try:
        first = service.run_sync("acme")
        second = service.run_sync("acme")
    finally:
        service.store.close()
    assert len(built) == 2, "a run reused another run's connectors"
    assert first["api"]["crm"]["total_calls"] > 1 and second["api"]["crm"]["total_calls"] == 1  # one read, no write
    counted = sample(service, "segsync_api_calls_total", tenant="acme", vendor="crm")
    assert counted == first["api"]["crm"]["total_calls"] + second["api"]["crm"]["total_calls"]


# ---------------------------------------------------------------------------------- webhook, isolation


def test_preference_opt_out_is_recorded_and_reaches_both_vendors(served, client):
    service, world = served
    assert service.run_sync("acme")["status"] == "ok"
    crm, esp = world.vendors["acme"]
    email = tagged_subscriber(esp)
    vendor_id = next(vid for vid, p in crm.people.items() if p["email"] == email)
    body, headers = signed(ACME_SECRET, email, {"email_marketing": False})
    r = client.post("/hooks/acme/preferences", content=body, headers=headers)
    assert r.status_code == 200 and r.json()["recorded"] == 1 and r.json()["enqueued"] >= 1
    assert service.ledger.status("acme", email)["email_marketing"].state == "withdrawn"
    assert esp.members[email]["status"] == "subscribed"  # nothing sent before the drain
    service.drain("acme")
    assert esp.members[email]["status"] == "unsubscribed"
    assert not esp.members[email]["tags"]
    assert vendor_id in crm.optout
    assert service.outbox.depth("acme") == 0
    # the other tenants' vendors saw nothing
    assert all(m["status"] == "subscribed" for t in ("beta", "gamma") if t in world.vendors
               for m in world.vendors[t][1].members.values())


def test_mailchimp_unsubscribe_through_the_full_app(served, client):
    service, world = served
    service.run_sync("acme")
    _, esp = world.vendors["acme"]
    email = tagged_subscriber(esp)
    assert client.get(f"/hooks/acme/mailchimp/{ACME_SECRET}").status_code == 200  # Mailchimp's URL check
    form = urlencode(mailchimp_form("unsubscribe", email, "list-acme"))
    r = client.post(f"/hooks/acme/mailchimp/{ACME_SECRET}", content=form,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json()["recorded"] == 1
    service.drain("acme")
    assert not esp.members[email]["tags"]


def test_rejected_webhooks_write_nothing(served, client):
    service, _ = served
    before = written(service)
    body, headers = signed(ACME_SECRET, "person1@example.com", {"email_marketing": False})
    bad = dict(headers, **{"X-Segsync-Signature": "sha256=" + "0" * 64})
    r = client.post("/hooks/acme/preferences", content=body, headers=bad)
    assert r.status_code == 401 and r.json()["error"] == "bad signature"
    assert client.post("/hooks/nosuch/preferences", content=body, headers=headers).status_code == 404
    assert client.post(f"/hooks/nosuch/mailchimp/{ACME_SECRET}", content=b"type=unsubscribe").status_code == 404
    # tenant isolation: acme's secret opens nothing of beta's
    assert client.post("/hooks/beta/preferences", content=body, headers=headers).status_code == 401
    form = urlencode(mailchimp_form("unsubscribe", "person1@example.com", "list-beta"))
    r = client.post(f"/hooks/beta/mailchimp/{ACME_SECRET}", content=form,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 401
    assert written(service) == before
    assert service.outbox.depth("acme") == 0 and service.outbox.depth("beta") == 0
    # the same body with beta's own secret is accepted, and lands in beta only
    body, headers = signed(BETA_SECRET, "person1@example.com", {"email_marketing": False})
    assert client.post("/hooks/beta/preferences", content=body, headers=headers).status_code == 200
    assert service.ledger.status("beta", "person1@example.com")["email_marketing"].state == "withdrawn"
    assert service.ledger.status("acme", "person1@example.com") == {}


# ---------------------------------------------------------------------------------- schedules


def _backdate_run(store: Store, tenant: str, started: datetime, dry_run: bool = False) -> None:
    run_id = store.start_run(tenant, dry_run)
    store.finish_run(run_id, "dry_run" if dry_run else "ok", {"tenant": tenant})
    with store.engine.begin() as conn:
        conn.execute(
            runs_table.update().where(runs_table.c.id == run_id).values(started_at=started, finished_at=started)
        )


def test_schedule_one_cron_job_per_tenant_in_its_timezone(served):
    service, _ = served
    jobs = {j["tenant"]: j for j in service.schedule()}
    assert set(jobs) == {"acme", "beta"}  # gamma has no schedule
    for tenant, tz in (("acme", "Europe/Paris"), ("beta", "America/New_York")):
        job = service.scheduler.get_job(f"sync:{tenant}")
        assert job.trigger.timezone == zoneinfo.ZoneInfo(tz)
        assert job.coalesce is True and job.max_instances == 1
        assert job.args == (tenant,)
        assert not jobs[tenant]["catch_up"]  # never ran: waits for its first time
    nxt = service.scheduler.get_job("sync:acme").trigger.get_next_fire_time(None, datetime.now(UTC))
    assert (nxt.hour, nxt.minute, str(nxt.tzinfo)) == (6, 0, "Europe/Paris")
    nxt = service.scheduler.get_job("sync:beta").trigger.get_next_fire_time(None, datetime.now(UTC))
    assert (nxt.hour, nxt.minute) == (7, 30) and nxt.weekday() < 5
    assert service.scheduler.get_job("sync:gamma") is None
    assert service.scheduler.get_job("drain-all") is not None


def test_missed_run_after_downtime_runs_once_at_start(served):
    service, world = served
    now = datetime.now(UTC)
    _backdate_run(service.store, "acme", now - timedelta(days=3))  # daily at 06:00: missed twice or more
    _backdate_run(service.store, "beta", now - timedelta(days=9))
    _backdate_run(service.store, "beta", now, dry_run=True)  # a dry run is not a run...
    _backdate_run(service.store, "beta", now - timedelta(seconds=5))  # ...this one is, and is recent
    jobs = {j["tenant"]: j["catch_up"] for j in service.start()}
    assert jobs == {"acme": True, "beta": False}
    assert service.scheduler.get_job("catch-up:beta") is None
    deadline = time.monotonic() + 30
    while not [
        r for r in service.store.runs("acme") if r["status"] == "ok" and r["started_at"].replace(tzinfo=UTC) > now
    ]:
        assert time.monotonic() < deadline, "the catch-up run did not happen"
        time.sleep(0.05)
    assert world.vendors["acme"][0].calls["batch_update"] > 0
    assert "beta" not in world.vendors  # no run, no connectors built
    service.shutdown()
    assert sample(service, "segsync_runs_total", tenant="acme", status="ok") == 1.0


# ---------------------------------------------------------------------------------- the tenant lock


def unique_tenant() -> str:
    """A tenant id of this test's own: PostgreSQL advisory locks are database-wide, so another suite
    running "acme" at the same moment can never make this one's run look busy."""
    return f"acme-{uuid.uuid4().hex[:8]}"


class SlowCrm(FakeCrm):
    def pull_contacts(self, cursor, run_started):
        time.sleep(1.0)
        yield from super().pull_contacts(cursor, run_started)


def test_two_servers_on_one_database_never_run_a_tenant_together(tmp_path, db_url):
    world = World(n=300, crm_class=SlowCrm)  # shared vendors, as two servers of one deployment would see
    tenant = unique_tenant()
    first, _ = make_service(tmp_path, db_url, world, tenant)
    second, _ = make_service(tmp_path, db_url, world, tenant)  # its own engine: another server
    assert first.store.engine is not second.store.engine
    gate = threading.Barrier(2)
    results: dict[str, object] = {}

    def go(name: str, service: Service) -> None:
        gate.wait()
        results[name] = service.run_sync(tenant)

    threads = [threading.Thread(target=go, args=(n, s)) for n, s in (("first", first), ("second", second))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        ran = [n for n, r in results.items() if r is not None]
        skipped = [n for n, r in results.items() if r is None]
        assert len(ran) == 1 and len(skipped) == 1, results
        assert results[ran[0]]["status"] == "ok"
        service_of = {"first": first, "second": second}
        assert sample(service_of[skipped[0]], "segsync_runs_skipped_total", tenant=tenant) == 1.0
        assert sample(service_of[ran[0]], "segsync_runs_skipped_total", tenant=tenant) is None
        # the skip leaves no failed run behind; once free, the other server runs it
        assert [r["status"] for r in first.store.runs(tenant)] == ["ok"]
        assert service_of[skipped[0]].run_sync(tenant)["status"] == "ok"
    finally:
        for s in (first, second):
            s.shutdown()
            s.store.close()


HOLD_LOCK = """
import sys
from sync.store import open_store
store = open_store(sys.argv[1])
with store.tenant_lock(sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.mark.postgres
def test_a_lock_held_by_another_process_skips_the_run_and_dies_with_it(tmp_path, pg_url):
    tenant = unique_tenant()
    service, world = make_service(tmp_path, pg_url, World(n=300), tenant)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, pg_url, tenant],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert service.run_sync(tenant) is None
        assert sample(service, "segsync_runs_skipped_total", tenant=tenant) == 1.0
        assert tenant not in world.vendors  # skipped before any connector was built
        holder.kill()  # SIGKILL: PostgreSQL drops the session's advisory lock with it
        holder.wait(10)
        assert service.run_sync(tenant)["status"] == "ok"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdin.close()
        holder.stdout.close()
        service.shutdown()
        service.store.close()


def test_an_accepted_webhook_drains_at_once_when_the_scheduler_runs(served, client):
    service, world = served
    service.run_sync("acme")
    _, esp = world.vendors["acme"]
    email = tagged_subscriber(esp)
    service.start()
    body, headers = signed(ACME_SECRET, email, {"email_marketing": False})
    assert client.post("/hooks/acme/preferences", content=body, headers=headers).status_code == 200
    deadline = time.monotonic() + 10
    while esp.members[email]["status"] != "unsubscribed":
        assert time.monotonic() < deadline, "the opt-out waited for the periodic drain"
        time.sleep(0.02)
    service.shutdown()
    assert not service.scheduler.running


# ---------------------------------------------------------------------------------- graceful shutdown


def test_stop_mid_push_finishes_the_batch_then_the_next_run_sends_the_rest(served):
    service, world = served
    crm, esp = world(service.tenants["acme"])
    crm.limits = Limits(batch_size=50, requests_per_window=100, window_seconds=10, page_size=100)
    real_push = crm.push_properties

    def push_then_stop(updates):
        results = real_push(updates)
        service.stop.set()
        return results

    crm.push_properties = push_then_stop
    report = service.run_sync("acme")
    assert report["status"] == "stopped"
    assert report["push"]["stopped"] is True
    assert crm.calls["batch_update"] == 1 and esp.writes() == 0
    planned = report["plan"]["destinations"][CRM]["changes"]
    assert planned > 50
    assert len(service.store.last_sent("acme", CRM)) == 50  # the batch in flight was confirmed
    assert any("shutdown requested" in f["message"] for f in report["push"]["failures"])
    assert sample(service, "segsync_runs_total", tenant="acme", status="stopped") == 1.0
    assert service.run_sync("acme") is None  # no new run starts while shutting down
    crm.push_properties = real_push
    service.stop.clear()
    report = service.run_sync("acme")
    assert report["status"] == "ok"
    assert report["plan"]["destinations"][CRM]["changes"] == planned - 50  # exactly the rest
    assert crm.calls["batch_update"] == 1 + -(-(planned - 50) // 50)
    assert service.run_sync("acme")["plan"]["total_changes"] == 0


# ---------------------------------------------------------------------------------- logs, CLI


def test_access_log_masks_the_mailchimp_secret():
    from uvicorn.logging import AccessFormatter

    quoted = "/hooks/acme/mailchimp/s%20cr%2Bt-with-odd-chars"
    for path in (f"/hooks/acme/mailchimp/{ACME_SECRET}", quoted, f"/hooks/acme/mailchimp/{ACME_SECRET}?x=1"):
        record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                                   ("127.0.0.1:5000", "POST", path, "1.1", 200), None)
        assert AccessLogFilter().filter(record) is True
        line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False).format(record)
        assert "/hooks/acme/mailchimp/***" in line and ACME_SECRET not in line and "cr%2Bt" not in line
    assert mask_path("/hooks/acme/preferences") == "/hooks/acme/preferences"
    conf = uvicorn_log_config()
    assert conf["handlers"]["access"]["filters"] == ["segsync_access"]
    assert conf["filters"]["segsync_access"]["()"] is AccessLogFilter
    assert conf["handlers"]["default"]["filters"] == ["segsync_redact"]


@pytest.fixture
def run_cli():
    """Invoke the ``segsync`` group in-process; its logging set-up is undone afterwards."""
    from sync.cli import cli

    root, ours = logging.getLogger(), logging.getLogger("segsync")
    saved = (root.handlers[:], root.level, ours.level)
    yield lambda *args: CliRunner().invoke(cli, list(args), obj={})
    root.handlers[:], _, _ = saved
    root.setLevel(saved[1])
    ours.setLevel(saved[2])


def test_the_access_log_is_off_unless_the_config_asks_for_it(tmp_path):
    default = load_config_text(config_text("sqlite:///x.db", tmp_path))
    asked = load_config_text(config_text("sqlite:///x.db", tmp_path, server="server: {access_log: true}\n"))
    assert uvicorn_options(default.server)["access_log"] is False
    options = uvicorn_options(asked.server)
    assert options["access_log"] is True
    assert options["log_config"]["handlers"]["access"]["filters"] == ["segsync_access"]  # masked when on


def test_listen_is_checked(tmp_path, run_cli):
    from core.errors import ConfigError

    assert parse_listen("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    for bad in ("8080", "host:http", "host:70000"):
        with pytest.raises(ConfigError, match="host:port"):
            parse_listen(bad)
    config = tmp_path / "segsync.yaml"
    config.write_text(config_text(f"sqlite:///{tmp_path / 'segsync.db'}", tmp_path / "models"))
    result = run_cli("serve", str(config), "--listen", "localhost")
    assert result.exit_code == 2 and "--listen 'localhost': use host:port" in result.output
    assert "Traceback" not in result.output


def test_serve_help_describes_hosted_mode(run_cli):
    result = run_cli("serve", "--help")
    assert result.exit_code == 0
    for word in ("CONFIG", "--listen", "/healthz", "/metrics", "webhook"):
        assert word in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_process_answers_then_stops_on_sigterm_without_logging_secrets(tmp_path):
    port = _free_port()
    config = tmp_path / "segsync.yaml"
    config.write_text(config_text(f"sqlite:///{tmp_path / 'segsync.db'}", tmp_path / "models",
                                  server="server: {access_log: true}\n"))  # to check what it masks
    out = tmp_path / "serve.log"
    env = {**os.environ, "CI": "true"}
    with out.open("w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "sync", "serve", str(config), "--listen", f"127.0.0.1:{port}"],
                                env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent)
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, out.read_text()[-2000:]
                assert time.monotonic() < deadline, "serve did not come up"
                try:
                    health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                    break
                except requests.ConnectionError:
                    time.sleep(0.1)
            assert health.status_code == 200 and health.json()["scheduler"] is True
            assert (
                requests.get(f"http://127.0.0.1:{port}/hooks/acme/mailchimp/{ACME_SECRET}", timeout=5).status_code
                == 200
            )
            assert (
                requests.get(f"http://127.0.0.1:{port}/hooks/beta/mailchimp/{ACME_SECRET}", timeout=5).status_code
                == 401
            )
            proc.send_signal(signal.SIGTERM)
            # uvicorn shuts down gracefully, then re-raises the signal it caught (a clean stop by SIGTERM)
            assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = out.read_text()
    assert "GET /healthz" in text and "/hooks/acme/mailchimp/***" in text
    assert "Application shutdown complete" in text and "Traceback" not in text
    assert ACME_SECRET not in text and BETA_SECRET not in text


BATCH_UPDATE = "/crm/v3/objects/contacts/batch/update"


def test_sigterm_mid_push_finishes_the_batch_in_flight_and_the_next_run_sends_the_rest(make_sandbox, tmp_path):
    from sync.config import load_config
    from sync.run.pipeline import RunOptions, run_tenant

    sb = make_sandbox(contacts=600, seed=5)
    config = sandbox_config(tmp_path, sb, schedule="0 3 * * *", secret="serve-webhook-secret-0123")
    store = open_store(f"sqlite:///{tmp_path / 'segsync.db'}")
    _backdate_run(store, "firm", datetime.now(UTC) - timedelta(days=2))  # the server was down: a catch-up run at start
    store.close()
    sb.faults["hubspot"].set(delay=0.4, only_paths=(BATCH_UPDATE,))
    out = tmp_path / "serve.log"
    with out.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sync", "serve", str(config), "--listen", f"127.0.0.1:{_free_port()}"],
            env={**os.environ, "CI": "true"},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).parent.parent,
        )
        try:
            deadline = time.monotonic() + 60
            while sb.calls.count("hubspot", "POST", BATCH_UPDATE) < 1:
                assert proc.poll() is None, out.read_text()[-2000:]
                assert time.monotonic() < deadline, "the catch-up run never reached the push"
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            while "shutting down" not in out.read_text():  # the stop is set: batches after this one are not sent
                assert proc.poll() is None and time.monotonic() < deadline, out.read_text()[-2000:]
                time.sleep(0.02)
            sb.faults["hubspot"].reset()  # the batch in flight keeps its delay; the drains after it need not wait
            assert proc.wait(timeout=60) in (0, -signal.SIGTERM), out.read_text()[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    cfg = load_config(config)
    store = open_store(cfg.store)
    try:
        stopped = store.runs("firm", limit=1)[0]
        assert stopped["status"] == "stopped", (stopped["status"], out.read_text()[-2000:])
        planned = stopped["report"]["plan"]["destinations"][CRM]["changes"]
        sent = stopped["report"]["push"]["by_destination"][CRM].get("sent", 0)
        assert 0 < stopped["report"]["push"]["batches"][CRM] < -(-planned // 100)
        report = run_tenant(cfg, cfg.tenants[0], store, RunOptions(), base_dir=tmp_path)
    finally:
        store.close()
    assert report["status"] == "ok", report.get("error")
    # the next run sends exactly what the stopped one did not: nothing twice, nothing lost
    assert report["plan"]["destinations"][CRM]["changes"] == planned - sent > 0
    assert ACME_SECRET not in out.read_text() and "serve-webhook-secret-0123" not in out.read_text()

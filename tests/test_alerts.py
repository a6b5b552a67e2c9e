"""Alerts (sync.alerts): delivered for real to a local HTTP receiver and a local SMTP server, never
raising, muted for a while after they fire; and the hosted-mode signals behind them (/healthz, /metrics)."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import tenacity
from aiosmtpd.controller import Controller

from connectors.kit.http import redact
from core.errors import ConfigError, FatalApiError
from sync.alerts import (
    OUTBOX_BACKLOG,
    PLAN_REFUSED,
    RECORDS_FAILED,
    RUN_FAILED,
    Alert,
    Alerter,
    AlertsCfg,
    alerts_for_run,
    outbox_alert,
)
from sync.config.models import load_config_text
from sync.serve import Service
from sync.store import open_store
from tests.configs import consent_yaml

HOOK_TOKEN = "T000/B000/alert-hook-secret-9f8e7d"


class Receiver:
    """A local Slack-style incoming webhook: records every POST; answers with the queued statuses, then 200."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append((self.path, json.loads(body)))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/{HOOK_TOKEN}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class Sink:
    """aiosmtpd handler: keeps every message it is handed."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], str]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content.decode("utf-8")))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Sink, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield sink, port
    controller.stop()


def cfg(**values: object) -> AlertsCfg:
    return AlertsCfg.model_validate(values)


def test_an_alert_reaches_a_slack_compatible_webhook(receiver):
    alerter = Alerter(cfg(webhook_url=receiver.url))
    assert alerter.notify(Alert(RUN_FAILED, "harbor", "run #7 failed: hubspot refused the token")) == ["webhook"]
    [(path, body)] = receiver.posts
    assert path == f"/services/{HOOK_TOKEN}"
    assert body == {"text": "segsync [run_failed] firm harbor: run #7 failed: hubspot refused the token"}


def test_an_alert_reaches_an_smtp_server(smtp):
    sink, port = smtp
    alerter = Alerter(cfg(email={"smtp_host": "127.0.0.1", "smtp_port": port, "starttls": False,
                                 "sender": "segsync@example.com", "to": ["ops@example.com", "cto@example.com"]}))
    assert alerter.notify(Alert(PLAN_REFUSED, "harbor", "the plan would change 80% of 400 contacts")) == ["email"]
    [(sender, rcpts, content)] = sink.messages
    assert sender == "segsync@example.com" and rcpts == ["ops@example.com", "cto@example.com"]
    assert "Subject: [segsync] harbor: plan refused" in content
    assert "the plan would change 80% of 400 contacts" in content


def test_the_same_alert_is_not_repeated_within_the_window(receiver):
    now = [1000.0]
    alerter = Alerter(cfg(webhook_url=receiver.url, repeat_minutes=10), clock=lambda: now[0])
    alert = Alert(OUTBOX_BACKLOG, "harbor", "120 pending")
    assert alerter.notify(alert) == ["webhook"]
    assert alerter.notify(alert) == []  # muted
    assert alerter.notify(Alert(OUTBOX_BACKLOG, "beta", "120 pending")) == ["webhook"]  # another firm is news
    now[0] += 601
    assert alerter.notify(alert) == ["webhook"]
    assert [b["text"].split(" firm ")[1].split(":")[0] for _, b in receiver.posts] == ["harbor", "beta", "harbor"]


def test_a_transient_webhook_answer_is_retried(receiver):
    receiver.statuses = [503, 429]
    alerter = Alerter(cfg(webhook_url=receiver.url), wait=tenacity.wait_none())
    assert alerter.notify(Alert(RUN_FAILED, "harbor", "boom")) == ["webhook"]
    assert len(receiver.posts) == 3


def test_a_broken_channel_is_logged_never_raised_and_the_url_stays_secret(caplog):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    config = load_config_text(minimal_config(f"alerts: {{webhook_url: 'http://127.0.0.1:{dead}/hook/{HOOK_TOKEN}'}}"))
    alerter = Alerter(config.alerts, wait=tenacity.wait_none())
    with caplog.at_level(logging.ERROR, logger="segsync.alerts"):
        assert alerter.notify(Alert(RUN_FAILED, "harbor", "boom")) == []
    assert f"alert run_failed to webhook not delivered: ConnectionError: no answer from 127.0.0.1:{dead}" in caplog.text
    assert HOOK_TOKEN not in caplog.text
    assert HOOK_TOKEN not in redact(f"posting to http://127.0.0.1:{dead}/hook/{HOOK_TOKEN}")  # registered as a secret


def test_which_runs_call_for_an_alert():
    assert alerts_for_run({"tenant": "a", "status": "ok", "run_id": 1}) == []
    assert alerts_for_run({"tenant": "a", "status": "dry_run", "run_id": 1}) == []
    [failed] = alerts_for_run({"tenant": "a", "status": "error", "run_id": 4, "error": "hubspot refused"})
    assert (failed.kind, failed.message) == (RUN_FAILED, "run #4 failed: hubspot refused")
    [refused] = alerts_for_run(
        {"tenant": "a", "status": "refused", "run_id": 5, "refused": "the plan would change 90%"}
    )
    assert refused.kind == PLAN_REFUSED and "90%" in refused.message
    [records] = alerts_for_run(
        {"tenant": "a", "status": "failed_records", "run_id": 6, "push": {"totals": {"failed": 3}}}
    )
    assert records.kind == RECORDS_FAILED and "3 failed record(s)" in records.message


def test_outbox_backlog_by_count_or_by_age():
    c = cfg(webhook_url="https://hooks.example.com/x", outbox_backlog=10, outbox_age_minutes=30)
    assert outbox_alert(c, "a", 10, 29 * 60) is None
    assert outbox_alert(c, "a", 11, None).kind == OUTBOX_BACKLOG
    aged = outbox_alert(c, "a", 1, 31 * 60)
    assert aged is not None and "the oldest waiting 31 min" in aged.message


def minimal_config(alerts: str, store: str = "sqlite:///unused.db", schedule: str = "") -> str:
    return f"""version: 1
store: {store}
{alerts}
tenants:
  - id: harbor
    {schedule}
    crm: {{type: csv, contacts: contacts.csv}}
    {consent_yaml("harbor-webhook-secret-0001")}
"""


def test_alerts_config_is_validated_with_paths():
    with pytest.raises(ConfigError) as exc:
        load_config_text(minimal_config("alerts: {outbox_backlog: 0}"))
    problems = " | ".join(exc.value.problems)
    assert "alerts: give webhook_url, email or both" in problems or "alerts.outbox_backlog" in problems
    with pytest.raises(ConfigError) as exc:
        load_config_text(minimal_config("alerts: {email: {smtp_host: h, sender: a@b.c, to: [x], username: u}}"))
    assert "give both username and password" in " ".join(exc.value.problems)


def test_a_failed_scheduled_run_alerts_and_health_and_metrics_tell(tmp_path, receiver):
    db = f"sqlite:///{tmp_path / 'segsync.db'}"
    config = load_config_text(minimal_config(f"alerts: {{webhook_url: '{receiver.url}'}}", db, 'schedule: "0 6 * * *"'))

    def refused(_tenant):
        raise FatalApiError("hubspot refused the access token", vendor="hubspot", status=401)

    service = Service(config, tmp_path, store=open_store(db), connectors=refused)
    try:
        service.schedule()
        assert service.run_sync("harbor") is None
        [(_, body)] = receiver.posts
        assert body["text"] == "segsync [run_failed] firm harbor: the run failed: hubspot refused the access token"
        firms = service.firms()
        assert firms["harbor"]["schedule"] == "0 6 * * *" and firms["harbor"]["last_success"] is None
        next_run = datetime.fromisoformat(firms["harbor"]["next_run"])
        assert next_run > datetime.now(UTC) and (next_run.hour, next_run.minute) == (6, 0)
    finally:
        service.shutdown()
        service.store.close()


def test_healthz_and_metrics_show_last_and_next_run_per_firm(tmp_path, sqlite_url):
    from tests.test_serve import Client, make_service

    service, _world = make_service(tmp_path, sqlite_url)
    client = Client(service.app(run_scheduler=False))
    try:
        service.schedule()
        report = service.run_sync("acme")
        assert report["status"] == "ok"
        firms = client.get("/healthz").json()["firms"]
        assert set(firms) == {"acme", "beta", "gamma"}
        acme = firms["acme"]
        assert acme["last_run"]["run_id"] == report["run_id"] and acme["last_success"]["status"] == "ok"
        assert datetime.fromisoformat(acme["next_run"]) > datetime.now(UTC)
        assert acme["timezone"] == "Europe/Paris"
        assert firms["gamma"]["next_run"] is None and firms["gamma"]["last_run"] is None  # manual only, never ran
        text = client.get("/metrics").text
        started = datetime.fromisoformat(acme["last_success"]["started_at"]).timestamp()
        assert service.metrics.registry.get_sample_value(
            "segsync_last_success_timestamp_seconds", {"tenant": "acme"}) == pytest.approx(started)
        assert 'segsync_last_success_timestamp_seconds{tenant="beta"}' not in text  # never ran: no fake timestamp
        assert 'segsync_run_duration_seconds_count{tenant="acme"} 1.0' in text
        assert 'segsync_outbox_oldest_age_seconds{tenant="acme"} 0.0' in text
    finally:
        client.close()
        service.shutdown()
        service.store.close()


def test_the_example_configs_alerts_block_is_valid_once_uncommented():
    from tests.test_config import EXAMPLE_ENV, ROOT

    text = (ROOT / "config.example.yaml").read_text()
    start = text.index("# alerts:")
    block_end = text.index("\n\n", start)
    block = "\n".join(line.removeprefix("# ") for line in text[start:block_end].splitlines())
    env = {**EXAMPLE_ENV, "SLACK_WEBHOOK_URL": f"https://hooks.slack.com/services/{HOOK_TOKEN}", "SMTP_PASSWORD": "pw"}
    cfg = load_config_text(text[:start] + block + text[block_end:], env)
    assert cfg.alerts is not None and cfg.alerts.email is not None
    assert (cfg.alerts.email.smtp_port, cfg.alerts.outbox_backlog, cfg.alerts.email.to) == (
        587,
        100,
        ["ops@example.com"],
    )


def test_an_opt_out_backlog_alerts_even_when_the_drain_itself_fails(tmp_path, sqlite_url, receiver):
    from tests.test_serve import ACME_SECRET, Client, config_text, signed

    text = config_text(sqlite_url, tmp_path / "models").replace(
        "tenants:", f"alerts: {{webhook_url: '{receiver.url}', outbox_backlog: 1}}\ntenants:", 1)

    def unreachable(_tenant):
        raise ConnectionError("vendors unreachable")

    service = Service(load_config_text(text), tmp_path, store=open_store(sqlite_url), connectors=unreachable)
    client = Client(service.app(run_scheduler=False))
    try:
        body, headers = signed(ACME_SECRET, "person3@example.com", {"email_marketing": False})
        assert client.post("/hooks/acme/preferences", content=body, headers=headers).status_code == 200
        depth = service.outbox.depth("acme")
        assert depth > 1
        service.drain("acme")
        service.drain("beta")  # nothing pending there: no alert
        [(_, alert)] = receiver.posts
        assert alert["text"].startswith(f"segsync [outbox_backlog] firm acme: {depth} opt-out propagation(s) not yet")
    finally:
        client.close()
        service.shutdown()
        service.store.close()

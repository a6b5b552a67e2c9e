"""``segsync consent record|status|history|verify|erase`` over a real config and SQLite store."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from connectors.base import Contact
from consent.schema import consent_events, consent_outbox
from sync.cli import cli
from sync.store import open_store

CONFIG = """
version: 1
store: {store}
tenants:
  - id: harbor
    crm: {{type: hubspot, access_token: pat-na1-test-token}}
    esp: {{type: mailchimp, api_key: 0123456789abcdef-us6, list_id: L1}}
    consent:
      webhook_secret: harbor-secret-0123456789
      purposes: {{email_marketing: {{basis: consent}}, profiling: {{basis: legitimate_interest}}}}
  - id: crm-only
    crm: {{type: csv, contacts: contacts.csv}}
    consent:
      webhook_secret: other-secret-0123456789
      purposes: {{email_marketing: {{basis: consent}}, profiling: {{basis: consent}}}}
"""


@pytest.fixture
def setup(tmp_path, sqlite_url):
    path = tmp_path / "segsync.yaml"
    path.write_text(CONFIG.format(store=sqlite_url))
    return str(path), sqlite_url


def run(*args: str, code: int = 0) -> dict | str:
    result = CliRunner().invoke(cli, ["consent", *args])
    assert result.exit_code == code, (result.output, result.exception)
    return json.loads(result.output) if "--json" in args and code in (0, 1) else result.output


def test_record_status_history_and_verify(setup) -> None:
    config, _ = setup
    granted = run("record", config, "--tenant", "harbor", "--email", "Ann@Example.com", "--purpose",
                  "email_marketing", "--state", "granted", "--notice-version", "2026-03", "--evidence",
                  "request_id=r1", "--occurred-at", "2026-03-01T10:00:00Z", "--json")
    assert granted["recorded"][0]["state"] == "granted" and granted["enqueued"] == 0
    status = {p["purpose"]: p for p in run("status", config, "--tenant", "harbor", "--email", "ann@example.com",
                                           "--json")["purposes"]}
    assert status["email_marketing"]["allowed"] is True and status["email_marketing"]["source"] == "cli"
    assert status["profiling"] == {**status["profiling"], "state": "unknown", "allowed": True,
                                   "reason": "no_objection"}
    withdrawn = run("record", config, "--tenant", "harbor", "--email", "ann@example.com", "--purpose",
                    "email_marketing", "--state", "withdrawn", "--source", "import", "--json")
    assert withdrawn["enqueued"] == 3
    history = run("history", config, "--tenant", "harbor", "--email", "ann@example.com", "--json")
    assert [e["state"] for e in history["events"]] == ["granted", "withdrawn"]
    assert history["events"][0]["evidence"] == {"request_id": "r1", "operator": "cli"}
    assert {a["destination"]: a["status"] for a in history["actions"]} == {
        "esp.unsubscribe": "pending", "crm.optout": "pending", "esp.tags": "pending"}
    text = run("status", config, "--tenant", "harbor", "--email", "ann@example.com")
    assert "email_marketing: withdrawn" in text and "NOT allowed under consent" in text
    assert run("verify", config, "--json") == {"ok": True, "checked": 2, "first_broken": None}
    assert "every chain intact" in run("verify", config, "--tenant", "harbor")


def test_idempotency_key_records_once(setup) -> None:
    config, _ = setup
    args = ("record", config, "--tenant", "harbor", "--email", "a@x.com", "--purpose", "profiling", "--state",
            "withdrawn", "--idempotency-key", "import-7:a@x.com")
    assert "recorded profiling withdrawn" in run(*args)
    assert "already recorded" in run(*args)


def test_verify_names_the_edited_row_and_exits_1(setup) -> None:
    config, url = setup
    for email in ("a@x.com", "b@x.com", "c@x.com"):
        run("record", config, "--tenant", "harbor", "--email", email, "--purpose", "profiling", "--state", "withdrawn")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER consent_events_erasure_only"))  # a tamperer with DDL rights
        victim = conn.execute(sa.select(consent_events.c.id).where(consent_events.c.seq == 2)).scalar_one()
        conn.execute(sa.update(consent_events).where(consent_events.c.id == victim).values(source="mailchimp"))
    engine.dispose()
    result = run("verify", config, "--json", code=1)
    assert result["ok"] is False and result["first_broken"]["id"] == victim
    assert f"id {victim}" in run("verify", config, code=1)


def test_erase_removes_personal_data_keeps_proof_and_queues_suppression(setup) -> None:
    config, url = setup
    store = open_store(url)
    now = datetime(2026, 5, 1, tzinfo=UTC)
    store.store_page("harbor", [Contact("hubspot", "501", "eve@x.com", {"firstname": "Eve"}, now, now)], [], None)
    assert any(c["email"] == "eve@x.com" for c in store.contacts("harbor"))
    run("record", config, "--tenant", "harbor", "--email", "eve@x.com", "--purpose", "email_marketing", "--state",
        "granted", "--notice-version", "n1", "--evidence", "ip=10.9.8.7")
    erased = run("erase", config, "--tenant", "harbor", "--email", "EVE@x.com", "--json")
    assert erased["store_rows_removed"] >= 1 and erased["ledger_events_scrubbed"] == 1
    assert erased["withdrawals_recorded"] == 2 and erased["suppressions_queued"] == 4
    assert not any(c["email"] == "eve@x.com" for c in store.contacts("harbor"))
    with store.engine.connect() as conn:
        events = [dict(r._mapping) for r in conn.execute(sa.select(consent_events))]
        queued = conn.execute(sa.select(consent_outbox.c.email, consent_outbox.c.scrub_on_done)).all()
    assert all(e["subject"] is None and e["evidence_personal"] is None for e in events)
    assert all(email == "eve@x.com" and scrub for email, scrub in queued)  # dropped once delivered
    store.close()
    status = {p["purpose"]: p for p in run("status", config, "--tenant", "harbor", "--email", "eve@x.com",
                                           "--json")["purposes"]}
    assert status["email_marketing"]["state"] == "withdrawn" and status["profiling"]["allowed"] is False
    assert run("verify", config, "--json")["ok"] is True


def test_erase_for_a_tenant_without_esp_queues_crm_only(setup) -> None:
    config, _ = setup
    erased = run("erase", config, "--tenant", "crm-only", "--email", "x@y.z", "--yes", "--json")
    assert erased["suppressions_queued"] == 2  # crm.optout and crm.segments


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--purpose", "email_marketing", "--state", "granted"], "--notice-version"),
        (["--purpose", "sms", "--state", "withdrawn"], "no purpose 'sms'"),
        (["--purpose", "profiling", "--state", "withdrawn", "--occurred-at", "yesterday"], "not an ISO 8601"),
        (["--purpose", "profiling", "--state", "withdrawn", "--occurred-at", "2026-01-01T00:00:00"], "time zone"),
        (["--purpose", "profiling", "--state", "withdrawn", "--evidence", "novalue"], "key=value"),
    ],
    ids=["grant-without-notice", "unknown-purpose", "bad-time", "naive-time", "bad-evidence"],
)
def test_bad_input_is_a_clear_error_with_exit_2(setup, args, message) -> None:
    config, _ = setup
    result = CliRunner().invoke(cli, ["consent", "record", config, "--tenant", "harbor", "--email", "a@x.com", *args])
    assert result.exit_code == 2 and message in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_unknown_tenant_is_a_config_error(setup) -> None:
    config, _ = setup
    result = CliRunner().invoke(cli, ["consent", "status", config, "--tenant", "nobody", "--email", "a@x.com"])
    assert result.exit_code == 2 and "no tenant 'nobody'" in result.output


def test_verify_still_checks_a_tenant_that_left_the_config(setup, tmp_path) -> None:
    config, url = setup
    run("record", config, "--tenant", "harbor", "--email", "a@x.com", "--purpose", "profiling", "--state", "withdrawn")
    smaller = tmp_path / "smaller.yaml"
    text = CONFIG.format(store=url)
    smaller.write_text(text[: text.index("  - id: harbor")] + text[text.index("  - id: crm-only"):])
    assert run("verify", str(smaller), "--json") == {"ok": True, "checked": 1, "first_broken": None}

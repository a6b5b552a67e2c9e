"""Hardening found by attacking the consent side (issue 20 items 3, 9; issue 14 item 8).

- vendor-supplied times are bounded by their receipt (a subscribe dated 2099 cannot beat a later
  real unsubscribe);
- the preference-center answer counts what it enqueued, and a replay says ``duplicate``, on
  SQLite and PostgreSQL alike (psycopg's rowcount is -1 for INSERT ... ON CONFLICT DO NOTHING);
- the pseudonym key is generated in a private key file, never the webhook secret;
- erasure leaves no copy of the address in outbox errors or run reports.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from consent.erasure import scrub_json_column
from consent.keys import KeyFile
from consent.ledger import Ledger
from consent.outbox import Outbox, drain
from consent.policy import CONSENT, GRANTED, WITHDRAWN
from consent.propagate import record_and_enqueue
from consent.schema import consent_outbox
from consent.signals import ConsentSignal
from core.errors import InputError
from sandbox.webhooks import hubspot_event, preference_body
from sync.config import load_config_text
from sync.run.gate import tenant_key
from sync.store import open_store
from sync.store.schema import runs
from tests.test_consent_webhook import SECRET, Env

FUTURE = datetime(2099, 1, 1, tzinfo=UTC)


@pytest.fixture
def env(db_url):
    e = Env(db_url)
    yield e
    e.close()


# -- item 3: vendor times ---------------------------------------------------------------------


def test_a_future_dated_mailchimp_subscribe_does_not_beat_a_later_unsubscribe(env: Env) -> None:
    # With the member's opt-in record (ip_opt): a subscribe without it is not recorded as consent at all.
    assert env.mailchimp("subscribe", "ann@example.com", fired_at=FUTURE, ip_opt="198.51.100.7").status_code == 200
    assert env.mailchimp("unsubscribe", "ann@example.com").status_code == 200
    assert env.ledger.status("harbor", "ann@example.com")["email_marketing"].state == WITHDRAWN
    grant = next(e for e in env.ledger.history("harbor", "ann@example.com") if e.state == GRANTED)
    assert grant.occurred_at <= grant.recorded_at  # clamped to its receipt
    assert grant.evidence["claimed_occurred_at"].startswith("2099-01-01")  # what the vendor said, kept


def test_a_future_dated_hubspot_event_is_dated_at_its_receipt(env: Env) -> None:
    r = env.hubspot([hubspot_event("contact.deletion", 101, occurred_at=FUTURE, event_id=7)])
    assert r.status_code == 200, r.text
    (event,) = env.ledger.history("harbor", "ann@example.com")
    assert event.occurred_at <= event.recorded_at < FUTURE


def test_pull_signals_and_the_cli_are_bounded_too(sqlite_url) -> None:
    """Every way into the ledger goes through the same bound (record_many)."""
    store = open_store(sqlite_url)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    ledger = Ledger(store.engine, lambda t: b"k" * 32, clock=lambda: now)
    ledger.record_many("harbor", [
        ConsentSignal("ann@example.com", "email_marketing", GRANTED, CONSENT, "mailchimp", FUTURE, "n1"),
        ConsentSignal("ann@example.com", "email_marketing", WITHDRAWN, CONSENT, "hubspot", now - timedelta(hours=1)),
    ])
    state = ledger.status("harbor", "ann@example.com")["email_marketing"]
    assert (state.state, state.occurred_at) == (GRANTED, now)  # the grant counts from its receipt, not 2099
    ledger.record("harbor", "ann@example.com", "email_marketing", WITHDRAWN, basis=CONSENT, source="cli",
                  occurred_at=now)  # a withdrawal at the same instant wins the tie
    assert ledger.status("harbor", "ann@example.com")["email_marketing"].state == WITHDRAWN
    assert ledger.verify().ok
    store.close()


# -- issue 14 item 8: counts on both stores -----------------------------------------------------


def test_preference_center_counts_enqueued_and_replays_are_duplicates(env: Env) -> None:
    doc = preference_body("ann@example.com", {"email_marketing": False})
    first = env.preferences(doc)
    assert first.status_code == 200 and first.json() == {"status": "recorded", "recorded": 1, "enqueued": 3}
    with env.store.engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(consent_outbox)).scalar_one() == 3
    replay = env.preferences(doc)
    assert replay.json() == {"status": "duplicate", "recorded": 0, "enqueued": 0}


def test_mailchimp_replay_is_a_duplicate_on_both_stores(env: Env) -> None:
    r = env.mailchimp("unsubscribe", "bob@example.com")
    assert r.json()["enqueued"] == 3
    again = env.request("POST", "/hooks/harbor/mailchimp/" + SECRET, content=r.request.content,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert again.json()["status"] == "duplicate"


# -- item 9: the pseudonym key --------------------------------------------------------------------

CONFIG = """
version: 1
store: sqlite:///unused.db
tenants:
  - id: harbor
    crm: {{type: csv, contacts: contacts.csv}}
    consent:
      webhook_secret: harbor-webhook-secret-0123456789
      {extra}
      purposes: {{email_marketing: {{basis: consent}}, profiling: {{basis: legitimate_interest}}}}
"""


def _tenant(extra: str = ""):
    return load_config_text(CONFIG.format(extra=extra)).tenants[0]


def test_the_pseudonym_key_is_generated_in_a_private_file_not_the_webhook_secret(tmp_path, sqlite_url) -> None:
    path = tmp_path / "keys" / "keys.json"
    tenant = _tenant(f"keys_file: {path}")
    key = tenant_key(tenant)
    assert len(key) == 32 and key != b"harbor-webhook-secret-0123456789"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert tenant_key(tenant) == key  # kept, not regenerated
    assert tenant_key(_tenant(f"keys_file: {tmp_path / 'other.json'}")) != key
    guess = hmac.new(b"harbor-webhook-secret-0123456789", b"ann@example.com", hashlib.sha256).hexdigest()
    store = open_store(sqlite_url)
    ledger = Ledger(store.engine, lambda t: key)
    assert ledger.pseudonym("harbor", "ann@example.com") != guess  # the URL's secret does not test guesses
    store.close()


def test_a_configured_pseudonym_key_still_wins(tmp_path) -> None:
    tenant = _tenant("pseudonym_key: a-configured-pseudonym-key-0123")
    assert tenant_key(tenant) == b"a-configured-pseudonym-key-0123"


def test_a_key_file_readable_by_others_is_refused(tmp_path) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    keys.pseudonym_key("harbor")
    os.chmod(tmp_path / "keys.json", 0o644)
    with pytest.raises(InputError, match="chmod 600"):
        KeyFile(tmp_path / "keys.json").pseudonym_key("harbor")


def test_a_damaged_key_file_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("{not json")
    os.chmod(path, 0o600)
    with pytest.raises(InputError, match="not a segsync key file"):
        KeyFile(path).pseudonym_key("harbor")


# -- item 9: erasure scrubs every copy --------------------------------------------------------------


def test_erasure_scrubs_the_address_from_outbox_errors_and_run_reports(db_url) -> None:
    store = open_store(db_url)
    ledger = Ledger(store.engine, lambda t: b"k" * 32)
    outbox = Outbox(store.engine, mac_key=ledger.chain_key)
    record_and_enqueue(
        ledger,
        outbox,
        "harbor",
        [
            ConsentSignal(
                "ann@example.com", "email_marketing", WITHDRAWN, CONSENT, "cli", datetime(2026, 1, 1, tzinfo=UTC)
            ),
        ],
        ["esp.unsubscribe"],
    )

    def refuse(action) -> None:
        raise RuntimeError(f"400 Invalid Resource: {action.email.upper()} looks fake")

    drain(outbox, {"esp.unsubscribe": refuse})
    with store.engine.begin() as c:
        c.execute(sa.insert(runs).values(tenant_id="harbor", started_at=datetime.now(UTC), status="failed_records",
                                         dry_run=False, report={"errors": ["Ann@Example.com rejected"], "n": 1}))
    ledger.erase("harbor", "ann@example.com")
    with store.engine.begin() as c:
        assert scrub_json_column(c, runs, "report", "harbor", "ann@example.com") == 1
    drain(outbox, {"esp.unsubscribe": refuse}, now=datetime.now(UTC) + timedelta(days=1))  # fails again, erased
    with store.engine.connect() as c:
        errors = c.execute(sa.select(consent_outbox.c.last_error)).scalars().all()
        report = c.execute(sa.select(runs.c.report)).scalar_one()
    assert errors and all("ann@example.com" not in e.lower() and "[erased]" in e for e in errors)
    assert report == {"errors": ["[erased] rejected"], "n": 1}
    assert ledger.verify().ok
    store.close()


def test_a_key_other_than_the_ledgers_is_refused_not_silently_missing_everyone(sqlite_url) -> None:
    store = open_store(sqlite_url)
    Ledger(store.engine, lambda t: b"a" * 32).record(
        "harbor", "ann@example.com", "profiling", WITHDRAWN, basis="legitimate_interest", source="cli",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
    other = Ledger(store.engine, lambda t: b"b" * 32)
    with pytest.raises(InputError, match="does not match the one this ledger was written with"):
        other.decisions("harbor", ["ann@example.com"], {"profiling": "legitimate_interest"})
    with pytest.raises(InputError, match="pseudonym_key"):
        other.verify("harbor")
    store.close()

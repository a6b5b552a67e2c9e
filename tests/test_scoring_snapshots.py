"""Contact properties as of a past cutoff (sync.store property snapshots, scoring.snapshots), and an LTV
score on deposits without amounts.

- a pull that changes nothing adds no snapshot row; a changed value adds one, known from the vendor's
  last-modified time (SQLite and PostgreSQL); personal identifiers get no history; erasure removes it;
- a property that changes after the cutoff does not leak into a backtest: with the history attached the
  value moved by the outcome is read as it was before, and the leakage block no longer fires;
- `segsync sync` / `segsync score` on a CSV book whose deposits carry no amount: "insufficient data",
  nothing pushed, no crash.
"""

from __future__ import annotations

import csv
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from connectors.base import Contact
from scoring.backtest import backtest
from scoring.gate import gate
from scoring.snapshots import PropertyHistory, attach_history
from scoring.specs import FeatureSpec, ScoreSpec
from sync.config import load_config_text
from sync.run.scorer import frames
from sync.store import open_store
from tests.configs import consent_yaml
from tests.test_scoring_cli import segsync
from tests.test_scoring_models import book_frames

T0 = datetime(2025, 1, 10, tzinfo=UTC)

TENANT = f"""version: 1
store: sqlite:///unused.db
tenants:
  - id: harbor
    crm: {{type: csv, contacts: c.csv, events: e.csv, output: o.csv}}
    {consent_yaml("csv-webhook-secret-0123")}
    features: {{numeric_properties: [aum], categorical_properties: [tier]}}
"""


def _contacts(tier_of_b: str, updated_b: datetime) -> list[Contact]:
    return [Contact("hubspot", "1", "a@example.com", {"tier": "core", "aum": 100.0, "firstname": "Ann"}, updated_at=T0),
            Contact("hubspot", "2", "b@example.com", {"tier": tier_of_b, "aum": 250.0}, updated_at=updated_b)]


def test_snapshots_store_only_changes_from_when_they_were_known(db_url):
    store = open_store(db_url)
    tenant_id = f"snap{os.getpid()}"
    try:
        store.store_page(tenant_id, _contacts("core", T0), [], None)
        first = store.property_history(tenant_id)
        assert len(first) == 4 and {r["valid_from"] for r in first} == {T0}  # the vendor's last-modified time
        assert "firstname" not in {r["name"] for r in first}  # a personal identifier is never a feature: no history
        store.store_page(tenant_id, _contacts("core", T0), [], None)  # nothing changed
        assert len(store.property_history(tenant_id)) == 4
        upgraded = T0 + timedelta(days=200)
        store.store_page(tenant_id, _contacts("private", upgraded), [], None)
        rows = store.property_history(tenant_id)
        assert len(rows) == 5
        change = [r for r in rows if r["name"] == "tier" and r["value"] == "private"]
        assert len(change) == 1 and change[0]["valid_from"] == upgraded
        # The streamed read scoring uses holds the very same changes (names asked: those of the rows).
        streamed = list(store.property_history_rows(tenant_id, ["aum", "tier"]))
        assert sorted(streamed, key=repr) == sorted(((r["contact_id"], r["name"], r["valid_from"], r["value"])
                                                     for r in rows), key=repr)
        assert [r for r in store.property_history_rows(tenant_id, ["tier"]) if r[1] != "tier"] == []

        tenant = load_config_text(TENANT.replace("harbor", tenant_id)).tenants[0]
        contacts, _ = frames(store, tenant)
        by_email = contacts.set_index("email")
        assert by_email.loc["b@example.com", "tier"] == "private"  # the latest value, for live scores
        history = contacts.attrs["property_history"]
        history.watermark = pd.Timestamp(T0 + timedelta(days=400))
        past = history.as_of(contacts, T0 + timedelta(days=100)).set_index("email")
        assert past.loc["b@example.com", "tier"] == "core" and past.loc["b@example.com", "aum"] == 250.0
        later = history.as_of(contacts, upgraded + timedelta(days=1)).set_index("email")
        assert later.loc["b@example.com", "tier"] == "private"

        assert store.erase(tenant_id, "b@example.com") > 0
        assert {r["contact_id"] for r in store.property_history(tenant_id)} == {contacts.set_index("email").loc[
            "a@example.com", "contact_id"]}
    finally:
        store.erase(tenant_id, "a@example.com")
        store.close()


def _stage_book():
    """A sandbox book with ``client_stage`` = "upgraded" once a person upgrades: the property the outcome moves."""
    contacts, events, book = book_frames(3000)
    first_up = events[events["type"] == "upgrade"].groupby("contact_id")["occurred_at"].min()
    contacts["client_stage"] = ["upgraded" if c in first_up.index else "client" for c in contacts["contact_id"]]
    start = pd.Timestamp(book.as_of) - pd.Timedelta(days=800)
    known = [{"contact_id": c, "name": "client_stage", "valid_from": min(pd.Timestamp(t), start), "value": "client"}
             for c, t in zip(contacts["contact_id"], contacts["created_at"], strict=True)]
    known += [{"contact_id": c, "name": "client_stage", "valid_from": t, "value": "upgraded"}
              for c, t in first_up.items()]
    return contacts, events, book, pd.DataFrame(known)


@pytest.mark.slow
def test_a_property_changed_after_the_cutoff_does_not_leak_into_the_backtest():
    contacts, events, book, history = _stage_book()
    spec = ScoreSpec("upgrade", "propensity", outcome_event="upgrade",
                     features=FeatureSpec(categorical_properties=("client_stage",)))
    # As stored now, the stage of everyone who upgraded in the test window says so: blocked as leakage.
    now_only = backtest(spec, contacts, events)
    assert now_only.extra.get("suspected_leakage") == ["client_stage"]
    assert any(r.startswith("blocked for suspected leakage") for r in gate(now_only).reasons)
    # With the snapshots, each cutoff sees the stage known before it: nothing from the future.
    attach_history(contacts, PropertyHistory(history, pd.Timestamp(book.as_of)))
    as_of_cutoff = backtest(spec, contacts, events)
    assert "suspected_leakage" not in as_of_cutoff.extra
    assert as_of_cutoff.extra["property_snapshots"]["first_seen_after_cutoff_share"] == 0.0
    assert as_of_cutoff.model["roc_auc"] < now_only.model["roc_auc"] - 0.1
    assert not any("leakage" in r for r in gate(as_of_cutoff).reasons)


def _write_unvalued_book(folder: Path, n: int) -> None:
    from sandbox.book import generate_book

    book = generate_book(n, seed=21)
    with (folder / "contacts.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "email", "created", "aum"])
        for p in book.people:
            w.writerow([p.key, p.email, p.created_at.isoformat(), p.aum])
    with (folder / "events.csv").open("w", newline="") as fh:  # no amount column: deposits carry no value
        w = csv.writer(fh)
        w.writerow(["contact_id", "type", "occurred_at"])
        for e in book.events:
            w.writerow([e.person_key, e.type, e.occurred_at.isoformat()])
    (folder / "segsync.yaml").write_text(f"""version: 1
store: sqlite:///{folder / 's.db'}
model_dir: {folder / 'models'}
tenants:
  - id: firm
    crm:
      type: csv
      contacts: contacts.csv
      events: events.csv
      created_column: created
      event_columns: {{contact_id: contact_id, type: type, timestamp: occurred_at}}
      output: out.csv
    {consent_yaml("csv-webhook-secret-0123")}
    scores:
      - {{name: value, kind: ltv, horizon_days: 365}}
    segments:
      - {{name: top_value, score: value, top_percent: 10}}
    features: {{numeric_properties: [aum]}}
""")


@pytest.mark.slow
def test_ltv_on_deposits_without_amounts_says_insufficient_data_and_pushes_nothing(tmp_path):
    _write_unvalued_book(tmp_path, 500)
    run = segsync("sync", "segsync.yaml", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    report = json.loads(run.stdout)
    report = report[0] if isinstance(report, list) else report
    reason = report["scoring"]["insufficient"]["value"]
    assert "have a deposit with a positive value; need at least 100" in reason, reason
    assert report["segments"]["top_value"]["members"] == 0
    out = tmp_path / "out.csv"  # written only when something is pushed
    assert not out.exists() or not any(r.get("segsync_segments") for r in csv.DictReader(out.open()))

    score = segsync("score", "segsync.yaml", "--json", cwd=tmp_path)
    assert score.returncode == 0, score.stderr
    card = json.loads(score.stdout)["scores"][0]
    assert card["verdict"]["verdict"] == "insufficient_data" and not card["gate"]["passed"]
    assert "positive value" in card["gate"]["reasons"][0]

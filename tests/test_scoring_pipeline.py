"""The CSV source through the store into sync.run.scorer: scores, clusters, segments, holdout, model reuse."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

from connectors.csvfile import CsvConnector
from scoring.persist import load_model
from scoring.segments import holdout
from sync.config import load_config_text
from sync.run.scorer import score_tenant
from sync.store import open_store

CONFIG = """
version: 1
store: {store}
tenants:
  - id: harbor
    crm: {{type: csv, contacts: {contacts}, events: {events}, created_column: created,
           event_columns: {{contact_id: person, timestamp: at}}, output: {output}}}
    consent:
      webhook_secret: 0123456789abcdef0123
      purposes: {{email_marketing: {{basis: consent}}, profiling: {{basis: legitimate_interest}}}}
    scores:
      - {{name: churn_risk, kind: churn, inactive_days: 90}}
      - {{name: upgrade, kind: propensity, outcome: {{event: upgrade}}, horizon_days: 90}}
      - {{name: groups, kind: cluster, clusters: 3}}
    segments:
      - {{name: churn_watch, score: churn_risk, top_percent: 20}}
      - {{name: engaged, score: groups, cluster: "high email, high recent activity"}}
    features: {{numeric_properties: [aum], sensitive_attributes: [age]}}
    holdout_percent: 10
"""


def write_book(tmp_path: Path, n: int) -> tuple[Path, Path]:
    from sandbox.book import generate_book

    book = generate_book(n, seed=21)
    contacts, events = tmp_path / "contacts.csv", tmp_path / "events.csv"
    with contacts.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "email", "created", "aum", "age"])
        for p in book.people:
            w.writerow([p.key, p.email, p.created_at.isoformat(), p.aum, p.age])
    with events.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["person", "type", "at", "value", "url", "session_id"])
        for e in book.events:
            w.writerow([e.person_key, e.type, e.occurred_at.isoformat(), "" if e.value is None else e.value,
                        e.url or "", e.session_id or ""])
    return contacts, events


def stored_book(tmp_path: Path, sqlite_url: str, n: int):
    """A generated book written as CSV, pulled through the CSV source into a SQLite store."""
    contacts_csv, events_csv = write_book(tmp_path, n)
    cfg = load_config_text(CONFIG.format(store=sqlite_url, contacts=contacts_csv, events=events_csv,
                                         output=tmp_path / "out.csv"))
    tenant = cfg.tenants[0]
    conn = CsvConnector(contacts_csv, events_csv, created_column="created",
                        event_columns={"contact_id": "person", "timestamp": "at"}, output=tmp_path / "out.csv")
    store = open_store(sqlite_url)
    now = datetime.now(UTC)
    for stream, pull in (("contacts", conn.pull_contacts), ("events", conn.pull_engagement)):
        for page in pull(None, now):
            store.store_page(tenant.id, page.contacts, page.events, (stream, page.cursor))
    assert conn.problems == []
    return tenant, store, {c["contact_id"] for c in store.contacts(tenant.id)}


def test_csv_book_is_scored_with_holdout_and_models_are_reused(tmp_path, sqlite_url):
    tenant, store, allowed = stored_book(tmp_path, sqlite_url, 1500)
    first = score_tenant(store, tenant, tmp_path / "models", allowed)
    assert first.scored == 1500
    # 1,500 contacts give too few upgrades in 90 days: an honest verdict, not a score.
    assert first.verdicts["upgrade"].startswith("insufficient data: ")
    churn = first.scores["churn_risk"]
    assert len(churn) == 1500 and churn.between(0, 1).all()
    assert (
        first.models["churn_risk"]["metrics"]["backtest_roc_auc"]
        > first.models["churn_risk"]["metrics"]["baseline_roc_auc"]
    )
    assert first.models["churn_risk"]["reused"] is False
    names = load_model(tmp_path / "models" / "harbor" / "groups").info["names"]
    assert set(first.clusters["groups"]) <= set(names) and len(names) == 3
    a = first.assignment
    held = {c for c in allowed if holdout(tenant.id, c, 10)}
    assert held == first.holdout_ids and 100 < len(held) < 200
    assert len(a.members["churn_watch"]) + len(a.holdout["churn_watch"]) == 300
    assert not set(a.members["churn_watch"]) & held and set(a.holdout["churn_watch"]) <= held
    assert (tmp_path / "models" / "harbor" / "churn_risk" / "model.pkl").exists()

    second = score_tenant(store, tenant, tmp_path / "models", allowed)
    assert second.models["churn_risk"]["reused"] is True
    assert second.scores["churn_risk"].equals(churn), "same data, same model: same scores (so zero writes)"
    assert second.assignment.members == a.members
    store.close()


def test_a_model_no_better_than_the_naive_baseline_makes_no_segment(tmp_path, sqlite_url):
    """On this 900-contact book the churn model loses to the naive baseline out of sample: no scores, no
    segment, and a verdict that says why (confident noise is worse than nothing)."""
    tenant, store, allowed = stored_book(tmp_path, sqlite_url, 900)
    result = score_tenant(store, tenant, tmp_path / "models", allowed)
    metrics = result.models["churn_risk"]["metrics"]
    assert metrics["backtest_roc_auc"] <= metrics["baseline_roc_auc"]
    assert result.verdicts["churn_risk"].startswith("no better than the naive baseline")
    assert result.scores["churn_risk"].empty
    assert result.assignment.members["churn_watch"] == [] and result.assignment.holdout["churn_watch"] == []
    store.close()

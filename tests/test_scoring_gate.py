"""The gate every score passes before it may cut a pushed segment (scoring.gate, sync.run.scorer).

- a property updated by the outcome (leakage) blocks the model, it is not merely flagged;
- a labelled outcome is judged on a time-ordered split recovered from the source's row order, which
  differs from a shuffled split when the outcome's relation drifts;
- an LTV score whose backtest has too few buyers pushes nothing, even though a model could be fitted;
- the paired DeLong interval separates a real gain from noise.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from connectors.csvfile import CsvConnector
from scoring.backtest import backtest
from scoring.evaluation import auc_difference
from scoring.gate import gate
from scoring.specs import FeatureSpec, ScoreSpec
from sync.config import load_config_text
from sync.run.scorer import frames, score_tenant
from sync.store import open_store
from tests.test_scoring_models import UPGRADE, book_frames
from tests.test_scoring_pipeline import write_book

TENANT = """
version: 1
store: {store}
tenants:
  - id: harbor
    crm: {{type: csv, contacts: {contacts}, events: {events}, created_column: {created},
           event_columns: {{contact_id: person, timestamp: at}}, output: {output}}}
    consent:
      webhook_secret: 0123456789abcdef0123
      purposes: {{email_marketing: {{basis: consent}}, profiling: {{basis: legitimate_interest}}}}
    scores: {scores}
    segments: {segments}
    features: {features}
"""


def pulled(tmp_path: Path, contacts_csv: Path, events_csv: Path, *, created: str | None = "created",
           scores: str = "[]", segments: str = "[]", features: str = "{}"):
    """Config + SQLite store holding what the CSV source pulled (the store keeps contacts by hashed id)."""
    url = f"sqlite:///{tmp_path / 'segsync.db'}"
    text = TENANT.format(store=url, contacts=contacts_csv, events=events_csv, output=tmp_path / "o.csv",
                         created=created or "null", scores=scores, segments=segments, features=features)
    (tmp_path / "segsync.yaml").write_text(text)  # for tests that go on through the CLI
    cfg = load_config_text(text)
    tenant = cfg.tenants[0]
    conn = CsvConnector(contacts_csv, events_csv, created_column=created,
                        event_columns={"contact_id": "person", "timestamp": "at"}, output=tmp_path / "o.csv")
    store = open_store(url)
    now = datetime.now(UTC)
    for stream, pull in (("contacts", conn.pull_contacts), ("events", conn.pull_engagement)):
        for page in pull(None, now):
            store.store_page(tenant.id, page.contacts, page.events, (stream, page.cursor))
    return tenant, store


def test_a_leaky_property_blocks_the_model():
    contacts, events, _ = book_frames(3000, with_tier=True)  # the tier as stored after later upgrades
    leaky = ScoreSpec("upgrade", "propensity", outcome_event="upgrade",
                      features=FeatureSpec(numeric_properties=("aum",), categorical_properties=("account_tier",)))
    verdict = gate(backtest(leaky, contacts, events))
    assert not verdict.passed
    assert any(r.startswith("blocked for suspected leakage: the properties aum, account_tier") for r in verdict.reasons)
    clean = gate(backtest(UPGRADE, contacts.drop(columns=["account_tier"]), events))
    assert not any("leakage" in r for r in clean.reasons)


def drifting_book(path: Path, n: int = 4000, seed: int = 3) -> None:
    """Rows in date order; the effect of ``signal`` flips sign over time and the outcome rate rises."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)
    steady, signal = rng.normal(size=n), rng.normal(size=n)
    logit = -2.0 + 1.0 * t + 0.8 * steady + (2.5 - 5.0 * t) * signal
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "email", "steady", "signal", "converted"])
        for i in range(n):
            w.writerow([f"r{i:05d}", f"r{i}@example.com", round(steady[i], 4), round(signal[i], 4),
                        "yes" if y[i] else "no"])


def test_the_time_ordered_check_differs_from_a_shuffled_one_when_the_rate_drifts(tmp_path):
    contacts_csv, events_csv = tmp_path / "contacts.csv", tmp_path / "events.csv"
    drifting_book(contacts_csv)
    events_csv.write_text("person,type,at,value,url,session_id\n")
    tenant, store = pulled(tmp_path, contacts_csv, events_csv, created=None,
                           scores="[{name: convert, kind: propensity, outcome: {property: converted, equals: 'yes'}}]",
                           features="{numeric_properties: [steady, signal]}")
    contacts, _ = frames(store, tenant)
    store.close()
    assert contacts.attrs["time_order"] == "source row order"
    assert contacts["email"].tolist() == [f"r{i}@example.com" for i in range(4000)]  # file order, not hash order
    spec = ScoreSpec("convert", "propensity", outcome_property="converted", outcome_equals="yes",
                     features=FeatureSpec(numeric_properties=("steady", "signal")))
    ordered = backtest(spec, contacts, None)
    shuffled_contacts = contacts.sample(frac=1.0, random_state=0).reset_index(drop=True)
    shuffled = backtest(spec, shuffled_contacts, None)
    time_auc = ordered.extra["later_rows_check"]["roc_auc"]
    shuffled_auc = shuffled.extra["later_rows_check"]["roc_auc"]
    assert ordered.extra["later_rows_check"]["ordered_by"] == "source row order"
    assert shuffled_auc - time_auc >= 0.1, (time_auc, shuffled_auc)
    assert abs(shuffled_auc - ordered.model["roc_auc"]) < 0.05  # a shuffled "later rows" split is just another CV fold
    # The gate reads the time-ordered figure: on drifting data it refuses what shuffled CV would accept.
    assert "last 20% of rows by source row order" in ordered.extra["gain_over_baseline"]["evaluated_on"]
    assert not gate(ordered).passed and gate(shuffled).passed


def test_an_ltv_score_on_too_few_buyers_pushes_nothing(tmp_path):
    contacts_csv, events_csv = write_book(tmp_path, 200)
    tenant, store = pulled(tmp_path, contacts_csv, events_csv,
                           scores="[{name: value, kind: ltv, horizon_days: 365}]",
                           segments="[{name: top_value, score: value, top_percent: 20}]",
                           features="{numeric_properties: [aum]}")
    allowed = {c["contact_id"] for c in store.contacts(tenant.id)}
    result = score_tenant(store, tenant, tmp_path / "models", allowed)
    store.close()
    # A model can be fitted on all history, but its backtest has fewer than 100 buyers: not used.
    gate_verdict = result.models["value"]["metrics"]["gate"]
    assert not gate_verdict["passed"] and "need at least 100" in gate_verdict["reasons"][0]
    assert result.verdicts["value"].startswith("not used: insufficient data")
    assert result.scores["value"].empty
    assert result.assignment.members["top_value"] == [] and result.assignment.holdout["top_value"] == []
    assert any(w.startswith("segment top_value is empty: its score value is not used") for w in result.warnings)


def test_the_delong_interval_separates_a_real_gain_from_noise():
    rng = np.random.default_rng(5)
    y = (rng.random(3000) < 0.2).astype(int)
    weak = y * 0.3 + rng.normal(size=3000)
    strong = y * 1.2 + rng.normal(size=3000)
    gain = auc_difference(y, strong, weak)
    assert gain is not None and gain["ci_low"] > 0.1
    noise = auc_difference(y, weak + rng.normal(scale=0.01, size=3000), weak)
    assert noise is not None and noise["ci_low"] < 0 < noise["ci_high"]
    assert auc_difference(np.zeros(10, dtype=int), np.arange(10.0), np.arange(10.0)) is None
    series = pd.Series(y)
    assert auc_difference(series.to_numpy(), strong, strong)["difference"] == 0.0  # type: ignore[index]

"""The issue's quality bars on public data sets (../shared/datasets), with stratified cross-validation.

- UCI bank marketing, outcome property ``y`` = ``yes``, without ``duration`` (known only after the
  call, so it leaks the outcome): ROC AUC >= 0.79 and top-decile lift >= 4.
- IBM telco churn, outcome property ``Churn`` = ``Yes``, read through the CSV source: ROC AUC >= 0.84.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from connectors.csvfile import CsvConnector
from scoring.backtest import backtest
from scoring.card import model_card, render_model_card
from scoring.specs import FeatureSpec, ScoreSpec
from tests.conftest import require_file

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
if not DATASETS.exists():  # a checkout elsewhere: the shared folder sits next to it under /work
    DATASETS = Path("/work/shared/datasets")
BANK = DATASETS / "bank-marketing" / "bank-full.csv"
TELCO = DATASETS / "telco-churn" / "Telco-Customer-Churn.csv"


def test_bank_marketing_propensity_without_duration():
    require_file(BANK, "the UCI bank marketing data set")
    frame = pd.read_csv(BANK, sep=";").drop(columns=["duration"])
    frame.insert(0, "contact_id", [f"b{i}" for i in range(len(frame))])
    spec = ScoreSpec("term_deposit", "propensity", outcome_property="y", outcome_equals="yes",
                     features=FeatureSpec(sensitive_attributes=("age",)))
    card = model_card(backtest(spec, frame, None))
    m = card["model"]
    print(f"bank marketing: ROC AUC {m['roc_auc']}, lift {m['lift_top_decile']}, later-rows check "
          f"{card['extra'].get('later_rows_check')}")
    assert card["method"] == "stratified_cv"
    assert m["roc_auc"] >= 0.79 and m["lift_top_decile"] >= 4.0
    assert (m["positives"], m["negatives"]) == (5289, 39922)
    assert card["baseline"]["roc_auc"] == 0.5 and card["baseline"]["lift_top_decile"] == 1.0
    assert "duration" not in [f["feature"] for f in card["top_features"]]
    assert card["fairness"]["age"]["disparate_impact"] is not None
    assert "Later-rows check" in render_model_card(card)


def test_telco_churn_from_the_csv_source():
    require_file(TELCO, "the IBM telco churn data set")
    conn = CsvConnector(TELCO, id_column="customerID", email_column=None)
    contacts = [c for page in conn.pull_contacts(None, datetime.now(UTC)) for c in page.contacts]
    assert len(contacts) == 7043 and conn.problems == []
    frame = pd.DataFrame([{"contact_id": c.vendor_id, **c.properties} for c in contacts])
    spec = ScoreSpec("churn_risk", "churn", outcome_property="Churn", outcome_equals="Yes",
                     features=FeatureSpec(sensitive_attributes=("gender", "SeniorCitizen")))
    card = model_card(backtest(spec, frame, None))
    m = card["model"]
    print(f"telco churn: ROC AUC {m['roc_auc']}, lift {m['lift_top_decile']}")
    assert m["roc_auc"] >= 0.84
    assert (m["positives"], m["negatives"]) == (1869, 5174)
    assert set(card["fairness"]) == {"gender", "SeniorCitizen"}
    assert card["extra"]["sensitive_attributes_excluded"] == ["gender", "SeniorCitizen"]

"""Training, scoring, persistence, verdicts, model cards and fairness, on sandbox-generated books.

The sandbox book knows each person's hidden upgrade propensity and what happened after ``as_of``
(``book.truth``), so the scores are graded against the truth, not against themselves.
"""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.metrics import roc_auc_score

from core.errors import InputError
from scoring.backtest import backtest
from scoring.bgnbd import BgNbd
from scoring.card import model_card, render_model_card
from scoring.evaluation import fairness, lift_at
from scoring.kinds.classifier import event_labels
from scoring.kinds.cluster import GROUPS
from scoring.models import InsufficientData, TrainedModel, predict, train
from scoring.persist import META_FILE, load_model, save_model
from scoring.specs import FeatureSpec, ScoreSpec

FEATURES = FeatureSpec(sensitive_attributes=("age",))
UPGRADE = ScoreSpec("upgrade", "propensity", outcome_event="upgrade", horizon_days=90, features=FEATURES)
CHURN = ScoreSpec("churn", "churn", inactive_days=90, features=FEATURES)


@cache
def book_frames(contacts: int, seed: int = 11, with_tier: bool = False):
    """Contacts and events frames of a sandbox book, plus the book (for ``as_of`` and ``truth``).

    ``account_tier`` is left out on purpose: the book stores the tier *after* later upgrades, so
    as a feature it would leak the outcome (see the caveat in the backtest report).
    """
    from sandbox.book import generate_book

    book = generate_book(contacts, seed=seed)
    people = pd.DataFrame({"contact_id": [p.key for p in book.people], "email": [p.email for p in book.people],
                           "created_at": [p.created_at for p in book.people], "age": [p.age for p in book.people],
                           "aum": [p.aum for p in book.people]})
    if with_tier:
        people["account_tier"] = [p.account_tier for p in book.people]
    ev = book.events
    events = pd.DataFrame({"contact_id": [e.person_key for e in ev], "type": [e.type for e in ev],
                           "occurred_at": pd.to_datetime([e.occurred_at for e in ev], utc=True),
                           "value": [e.value for e in ev], "url": [e.url for e in ev],
                           "session_id": [e.session_id for e in ev]})
    return people, events, book


def test_sandbox_book_scores_are_graded_against_the_hidden_truth(record_property):
    contacts, events, book = book_frames(3000)
    as_of = pd.Timestamp(book.as_of)
    up = train(UPGRADE, contacts, events, as_of=as_of)
    churn = train(CHURN, contacts, events, as_of=as_of)
    assert isinstance(up, TrainedModel) and isinstance(churn, TrainedModel)
    p_up = predict(up, contacts, events, as_of=as_of)
    p_churn = predict(churn, contacts, events, as_of=as_of)
    truth = pd.DataFrame({k: {"up": t.upgraded_90d, "churn": t.churned_90d, "p": t.propensity}
                          for k, t in book.truth.items()}).T
    auc_up = roc_auc_score(truth.loc[p_up.index, "up"].astype(int), p_up)
    auc_churn = roc_auc_score(truth.loc[p_churn.index, "churn"].astype(int), p_churn)
    oracle = roc_auc_score(truth["up"].astype(int), truth["p"].astype(float))
    print(f"sandbox book 3000: upgrade AUC vs truth {auc_up:.3f} (oracle {oracle:.3f}), churn AUC {auc_churn:.3f}")
    record_property("upgrade_auc_vs_truth", round(auc_up, 4))
    record_property("churn_auc_vs_truth", round(auc_churn, 4))
    # Measured 0.70 and 0.74 (the generator's own propensity reaches 0.81 on the same draws).
    assert auc_up > 0.62, f"upgrade propensity AUC vs truth {auc_up:.3f}"
    assert auc_churn > 0.65, f"churn AUC vs truth {auc_churn:.3f}"
    assert p_up.min() >= 0.0 and p_up.max() <= 1.0
    # Calibrated: the mean score is near the realised rate, not a ranking on an arbitrary scale.
    assert abs(p_up.mean() - truth["up"].mean()) < 0.04


def test_few_positives_is_an_insufficient_data_verdict_not_a_score():
    contacts, events, book = book_frames(300)
    verdict = train(UPGRADE, contacts, events, as_of=pd.Timestamp(book.as_of))
    assert isinstance(verdict, InsufficientData)
    assert verdict.positives < 100 and "need at least 100" in verdict.reason
    card = model_card(backtest(UPGRADE, contacts, events))
    assert card["verdict"]["verdict"] == "insufficient_data"
    assert "insufficient data" in render_model_card(card).lower()


def test_too_short_a_history_is_an_insufficient_data_verdict():
    contacts, events, book = book_frames(300)
    as_of = pd.Timestamp(book.as_of)
    recent = events[events["occurred_at"] > as_of - pd.Timedelta(days=60)]
    verdict = train(CHURN, contacts, recent, as_of=as_of)
    assert isinstance(verdict, InsufficientData) and "history too short" in verdict.reason
    with pytest.raises(InputError, match="outcomes after it are not observed yet"):
        backtest(UPGRADE, contacts, events, cutoff=as_of - pd.Timedelta(days=30))


def test_a_saved_model_is_reused_with_identical_scores(tmp_path):
    contacts, events, book = book_frames(3000)
    as_of = pd.Timestamp(book.as_of)
    model = train(CHURN, contacts, events, as_of=as_of)
    assert isinstance(model, TrainedModel)
    save_model(model, tmp_path / "churn")
    assert (tmp_path / "churn" / "model.pkl").exists()  # the file sync.scorer looks for
    meta = json.loads((tmp_path / "churn" / META_FILE).read_text())
    assert meta["spec"]["name"] == "churn" and meta["metrics"]["positives"] >= 100
    loaded = load_model(tmp_path / "churn")
    assert loaded.spec == model.spec
    pd.testing.assert_series_equal(predict(loaded, contacts, events, as_of=as_of),
                                   predict(model, contacts, events, as_of=as_of))
    meta["sklearn_version"] = "0.0.1"
    (tmp_path / "churn" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(InputError, match="retrain it"):
        load_model(tmp_path / "churn")



@pytest.mark.parametrize(("pickled", "message"), [
    (b"cscoring.ltv_learn\ntrain_ltv\n.", "saved by another version of segsync"),  # a module that moved away
    (b"cscoring.base\nNoSuchModel\n.", "saved by another version of segsync"),
    (b"\x80\x04\x95", "not a readable model file"),  # truncated
    (b"", "not a readable model file"),
])
def test_a_model_file_from_an_older_layout_or_damaged_is_an_input_error(tmp_path, pickled, message):
    (tmp_path / "model.pkl").write_bytes(pickled)
    (tmp_path / META_FILE).write_text(json.dumps({"sklearn_version": sklearn.__version__}))
    with pytest.raises(InputError, match=f"{message}.*retrain it"):
        load_model(tmp_path)

def test_backtest_model_card_has_metrics_baseline_importance_and_fairness():
    contacts, events, _ = book_frames(3000)
    card = model_card(backtest(UPGRADE, contacts, events))
    assert card["method"] == "time_split" and card["verdict"] == {"verdict": "ok"}
    m, base = card["model"], card["baseline"]
    for key in ("roc_auc", "pr_auc", "lift_top_decile", "brier", "positives", "negatives"):
        assert m[key] is not None and key in base
    assert len(m["calibration"]) == 10 and m["positives"] >= 100
    assert m["roc_auc"] > base["roc_auc"] - 0.05, "the model is compared with, and not far below, the naive rule"
    assert card["top_features"] and {"feature", "importance", "std"} <= set(card["top_features"][0])
    assert "age" not in [f["feature"] for f in card["top_features"]], "a sensitive attribute is not an input"
    age = card["fairness"]["age"]
    assert age["disparate_impact"] is not None and 0 <= age["disparate_impact"] <= 1
    assert {g["group"] for g in age["groups"]} <= {"<30", "30-44", "45-59", "60+", "unknown"}
    assert card["extra"]["caveats"], "property snapshots are flagged for time-split backtests"
    assert "suspected_leakage" not in card["extra"] and card["extra"]["without_properties"]["roc_auc"] > 0.5
    assert json.loads(json.dumps(card, default=str))["score"] == "upgrade"
    text = render_model_card(card)
    for heading in ("## Metrics", "## Calibration by decile", "## Top features (permutation importance)",
                    "## Fairness check", "### age: disparate impact"):
        assert heading in text


def test_ltv_compares_bgnbd_with_the_learned_model_and_the_naive_baseline():
    contacts, events, _ = book_frames(3000)
    spec = ScoreSpec("ltv", "ltv", horizon_days=180, features=FEATURES)
    card = model_card(backtest(spec, contacts, events))
    methods = card["model"]["methods"]
    assert set(methods) == {"bgnbd", "regressor"} and card["model"]["winner"] in methods
    keys = {"total_predicted_transactions", "total_actual_transactions", "rmse_transactions", "mae_transactions",
            "total_predicted_value", "total_actual_value", "rmse_value", "mae_value"}
    assert keys <= set(methods["bgnbd"]) and keys <= set(card["baseline"])
    bg = methods["bgnbd"]
    assert bg["rmse_transactions"] < card["baseline"]["rmse_transactions"]
    assert abs(bg["total_predicted_transactions"] / bg["total_actual_transactions"] - 1) < 0.25
    assert "Winner by value RMSE" in render_model_card(card)


def test_bgnbd_recovers_the_parameters_it_was_simulated_with():
    rng = np.random.default_rng(3)
    n, r, alpha, a, b = 6000, 0.8, 4.0, 0.8, 2.5  # alpha in weeks
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    T = rng.uniform(30, 78, n)
    x, tx = np.zeros(n), np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > T[i]:
                break
            x[i] += 1
            tx[i] = t
            if rng.random() < p[i]:
                break
    fit = BgNbd().fit(x, tx * 7, T * 7)
    assert fit.converged
    assert fit.r == pytest.approx(r, rel=0.3) and fit.alpha == pytest.approx(alpha, rel=0.3)
    assert fit.a / (fit.a + fit.b) == pytest.approx(a / (a + b), abs=0.05)


def test_clusters_get_readable_names():
    contacts, events, _book = book_frames(3000)
    spec = ScoreSpec("groups", "cluster", n_clusters=4, features=FEATURES)
    model = train(spec, contacts, events)
    assert isinstance(model, TrainedModel)
    names = model.info["names"]
    assert len(set(names)) == 4
    words = {f"{level} {group}" for group in GROUPS for level in ("high", "low")} | {"average"}
    for name in names:
        assert all(part.split(" (")[0] in words for part in name.split(", ")), name
    labels = predict(model, contacts, events)
    assert set(labels) <= set(names) and len(labels) == len(contacts)


def test_fairness_reports_selection_rates_and_the_disparate_impact_ratio():
    ids = [f"c{i}" for i in range(200)]
    group = ["A"] * 100 + ["B"] * 100
    # 15 of A and 5 of B are in the top 10% (20 people).
    score = np.zeros(200)
    score[:15] = 1.0
    score[100:105] = 1.0
    contacts = pd.DataFrame({"contact_id": ids, "band": group})
    res = fairness(pd.Series(score, index=ids), contacts, ["band", "missing"], top_percent=10)
    rates = {g["group"]: g["selection_rate"] for g in res["band"]["groups"]}
    assert rates == {"A": 0.15, "B": 0.05}
    assert res["band"]["disparate_impact"] == pytest.approx(0.333, abs=1e-3)
    assert res["band"]["passes_four_fifths"] is False
    assert res["missing"] == {"error": "attribute not in contacts"}


def test_lift_at_top_decile():
    y = np.array([1] * 10 + [0] * 90)
    assert lift_at(y, np.linspace(1, 0, 100)) == pytest.approx(10.0)
    assert lift_at(y, np.ones(100)) == pytest.approx(1.0), "a constant score has no lift whatever the order"


def test_unknown_outcome_property_is_an_input_error():
    contacts, events, _ = book_frames(300)
    spec = ScoreSpec("x", "propensity", outcome_property="nope", outcome_equals="yes")
    with pytest.raises(InputError, match="outcome property 'nope'"):
        backtest(spec, contacts, events)


def test_churn_labels_are_inactivity_or_an_explicit_churn_event():
    start = pd.Timestamp("2025-01-01", tz="UTC")
    ids = pd.Index(["quiet", "active", "closed"])
    events = pd.DataFrame({"contact_id": ["active", "closed", "closed"],
                           "type": ["email_open", "email_open", "account_closed"],
                           "occurred_at": [start + pd.Timedelta(days=d) for d in (10, 5, 20)]})
    inactive = event_labels(ScoreSpec("c", "churn", inactive_days=30), ids, events, start, churn=True)
    assert inactive.to_dict() == {"quiet": 1, "active": 0, "closed": 0}
    explicit = event_labels(ScoreSpec("c", "churn", inactive_days=30, outcome_event="account_closed"), ids, events,
                            start, churn=True)
    assert explicit.to_dict() == {"quiet": 0, "active": 0, "closed": 1}


def test_a_property_updated_by_the_outcome_is_flagged_as_suspected_leakage():
    contacts, events, _ = book_frames(3000, with_tier=True)  # the tier as it is after later upgrades
    card = model_card(backtest(UPGRADE, contacts, events))
    assert "account_tier" in card["extra"]["suspected_leakage"]
    assert card["model"]["roc_auc"] - card["extra"]["without_properties"]["roc_auc"] >= 0.1
    assert "suspected leakage" in render_model_card(card)

"""A big book's fit and time-split backtest read a seeded sample of people drawn before their features
(``scoring.sample``): exactly the cap's rows, the rows the whole book's frame would have been cut to, deterministic
with the seed; at or below the cap nothing is drawn."""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pytest

from scoring.base import Options, features_for
from scoring.features import eligible_contacts, outcome_labels
from scoring.kinds.classifier import Classifier, at_most, fit_classifier, labelled_set, train_classifier
from scoring.specs import FeatureSpec, ScoreSpec

UPGRADE = ScoreSpec("upgrade", "propensity", outcome_event="upgrade", horizon_days=90,
                    features=FeatureSpec(sensitive_attributes=("age",)))
CAP = 1000


@cache
def book(contacts: int = 3000) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sandbox.book import generate_book

    b = generate_book(contacts, seed=11)
    people = pd.DataFrame({"contact_id": [p.key for p in b.people], "created_at": [p.created_at for p in b.people],
                           "age": [p.age for p in b.people], "aum": [p.aum for p in b.people],
                           "segment": [["a", "b", "c", None][i % 4] for i in range(len(b.people))]})
    ev = b.events
    events = pd.DataFrame({"contact_id": [e.person_key for e in ev], "type": [e.type for e in ev],
                           "occurred_at": pd.to_datetime([e.occurred_at for e in ev], utc=True),
                           "value": [e.value for e in ev], "url": [e.url for e in ev],
                           "session_id": [e.session_id for e in ev]})
    return people, events


def backtest(seed: int, cap: int = CAP) -> dict:
    contacts, events = book()
    options = Options(min_positives=20, min_negatives=20, seed=seed, sample_rows=cap)
    return Classifier().backtest(UPGRADE, contacts, events, None, options).to_dict()


def test_a_book_over_the_cap_is_evaluated_on_exactly_the_seeded_sample_of_the_cap() -> None:
    contacts, events = book()
    report = backtest(seed=5)
    cut = pd.Timestamp(report["window"]["eval_features_as_of"])
    eligible = eligible_contacts(contacts, cut)
    assert len(eligible) > CAP  # the book is over the cap, so a sample was drawn
    assert report["window"]["evaluation"] == {
        "sample": "a seeded random sample of the people existing at the cutoff", "seed": 5,
        "people": CAP, "of": len(eligible), "rows": CAP}
    # The very people: the seeded draw of the eligible ones, whose outcomes are the ones counted.
    drawn = eligible.iloc[np.sort(np.random.default_rng(5).choice(len(eligible), CAP, replace=False))]
    y = outcome_labels(pd.Index(drawn["contact_id"].astype(str)), events, ["upgrade"], cut,
                       cut + pd.Timedelta(days=90))
    assert (report["model"]["positives"], report["model"]["negatives"]) == (int(y.sum()), CAP - int(y.sum()))
    assert report["model"]["train_positives"] + report["model"]["train_negatives"] == CAP
    gain = report["extra"]["gain_over_baseline"]
    assert gain["evaluated_on"].endswith(f"a seeded sample of {CAP:,} of {len(eligible):,} people")
    assert sum(g["n"] for g in report["fairness"]["age"]["groups"]) == CAP
    # Deterministic with the seed; another seed draws other people.
    assert backtest(seed=5) == report
    other = backtest(seed=6)
    assert other["window"]["evaluation"]["rows"] == CAP and other["model"] != report["model"]


def test_at_or_below_the_cap_everyone_is_evaluated_and_nothing_is_said_about_a_sample() -> None:
    contacts, _ = book()
    whole = backtest(seed=5, cap=len(contacts))
    assert "evaluation" not in whole["window"]
    assert whole["model"]["positives"] + whole["model"]["negatives"] > CAP
    assert "sample" not in whole["extra"]["gain_over_baseline"]["evaluated_on"]
    assert backtest(seed=5, cap=10 * len(contacts)) == whole


@pytest.mark.parametrize("seed", [3])
def test_training_on_the_people_drawn_first_fits_the_model_the_whole_frame_sampled_after_gives(seed: int) -> None:
    """Discovered properties (``aum``, the categorical ``segment``) are chosen on the whole book; the rows are the
    ones sampling the whole book's feature frame keeps; so the fitted model predicts exactly the same."""
    contacts, events = book()
    options = Options(min_positives=20, min_negatives=20, seed=seed, sample_rows=CAP)
    cut = pd.Timestamp(events["occurred_at"].max()) + pd.Timedelta(microseconds=1)
    model = train_classifier(UPGRADE, contacts, events, cut, options, churn=False)
    assert not isinstance(model, dict) and hasattr(model, "estimator")
    assert model.metrics["rows"] == CAP and model.metrics["rows_available"] > CAP  # type: ignore[union-attr]
    assert {"aum", "segment"} <= set(model.feature_names)  # type: ignore[union-attr]
    feature_cut = cut - pd.Timedelta(days=90)
    whole = labelled_set(UPGRADE, contacts, events, feature_cut, model.extra_types, churn=False)  # type: ignore
    assert not isinstance(whole, dict)
    X, y = at_most(*whole, CAP, seed)  # type: ignore[misc]
    encoder, clf = fit_classifier(UPGRADE, X, y, seed)
    assert encoder == model.encoder  # type: ignore[union-attr]
    everyone = features_for(UPGRADE, contacts, events, cut, model.extra_types)  # type: ignore[union-attr]
    expected = clf.predict_proba(encoder.transform(everyone))[:, 1]
    got = model.estimator.predict_proba(model.encoder.transform(everyone))[:, 1]  # type: ignore[union-attr]
    np.testing.assert_array_equal(got, expected)

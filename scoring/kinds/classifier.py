"""Propensity and churn: a calibrated gradient-boosting classifier of one yes/no outcome.

Training: HistGradientBoostingClassifier with isotonic (or, with few positives, sigmoid)
calibration by ``CalibratedClassifierCV``; categorical properties are encoded with the levels
seen in training so prediction frames line up. Event outcomes are learned from the window just
before ``as_of``: features as of ``as_of - window`` and labels in ``[as_of - window, as_of)``;
the model then predicts as of ``as_of``.

Backtest, always next to a naive rule: event outcomes use a time split (fit on features as of
``cutoff - window`` with outcomes in ``[cutoff - window, cutoff)``, predict as of ``cutoff`` and
compare with ``[cutoff, cutoff + window)``, so the cutoff must be at least one window before the
last event). Labelled-property outcomes use stratified k-fold cross-validation (pooled
out-of-fold predictions) plus a train-on-earlier-rows / test-on-later-rows check, because exports
are often in date order and shuffling hides drift.

Churn differs from propensity in one respect, fixed per instance (``Classifier(churn=True)``):
without an explicit churn event its outcome is *no activity* in the window, so only contacts
active before the cutoff are labelled, and its naive rule is "longest since last activity".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold

from core.errors import InputError
from scoring.base import (
    BacktestReport,
    Encoder,
    InsufficientData,
    Options,
    TrainedModel,
    default_as_of,
    features_for,
    importance,
    importance_rows,
    resolve_cutoff,
)
from scoring.chunks import apply_in_slices
from scoring.evaluation import auc_difference, classification_metrics, fairness
from scoring.features import behaviour_columns, extra_event_types, outcome_labels, to_utc
from scoring.sample import Sample, draw, sampled_rows
from scoring.specs import ScoreSpec

LEAK_GAP = 0.1  # ROC AUC that property inputs may add in a time split before it looks like leakage


def property_labels(spec: ScoreSpec, contacts: pd.DataFrame) -> pd.Series:
    """1/0 from ``outcome_property == outcome_equals`` (trimmed, case-insensitive); missing rows dropped."""
    if spec.outcome_property not in contacts.columns:
        raise InputError(f"score {spec.name}: outcome property {spec.outcome_property!r} is not a contact column")
    raw = contacts[spec.outcome_property].astype("string").str.strip()
    want = str(spec.outcome_equals if spec.outcome_equals is not None else "yes").strip().lower()
    y = (raw.str.lower() == want).astype("Int8")
    y.index = pd.Index(contacts["contact_id"].astype(str).to_numpy(), name="contact_id")
    return y[raw.notna().to_numpy() & (raw != "").fillna(False).to_numpy()].astype(np.int8)


def event_labels(spec: ScoreSpec, ids: pd.Index, events: pd.DataFrame | None, start: pd.Timestamp, *,
                 churn: bool) -> pd.Series:
    """Outcome in ``[start, start + window)``: the event happened (propensity, or churn with an
    explicit churn event such as ``account_closed``) or no activity at all (churn)."""
    end = start + pd.Timedelta(days=spec.window_days)
    if churn and not spec.outcome_event:
        return (1 - outcome_labels(ids, events, spec.activity_types, start, end)).astype(np.int8)
    if not spec.outcome_event:
        raise InputError(f"score {spec.name}: a propensity score needs outcome.event or outcome.property")
    return outcome_labels(ids, events, [spec.outcome_event], start, end)


def labelled_set(spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, feature_cutoff: pd.Timestamp,
                 extra_types: list[str] | None = None, *, churn: bool,
                 properties: tuple[list[str], list[str]] | None = None,
                 ) -> tuple[pd.DataFrame, pd.Series] | InsufficientData:
    """Features as of ``feature_cutoff`` and their labels, or why there is not enough history.

    Event labels cover ``[feature_cutoff, feature_cutoff + window)``; the caller makes sure that
    window has been observed. Churn is only defined for contacts active before the cutoff.
    ``properties``: the property inputs, when ``contacts`` is a sample of the book (:mod:`scoring.sample`).
    """
    if spec.labelled:
        X = features_for(spec, contacts, events, feature_cutoff, extra_types, properties)
        y = property_labels(spec, contacts)
        X = X.loc[X.index.intersection(y.index)]
        return X, y.loc[X.index]
    if events is None or events.empty:
        return InsufficientData(spec.name, "no events at all: an event outcome cannot be learned")
    first = pd.to_datetime(events["occurred_at"], utc=True).min()
    if first >= feature_cutoff:
        return InsufficientData(spec.name, f"history too short: first event {first.date()} is not before the "
                                           f"feature cutoff {feature_cutoff.date()}")
    X = features_for(spec, contacts, events, feature_cutoff, extra_types, properties)
    if churn:
        X = X[X["days_since_activity"].notna()]
    y = event_labels(spec, pd.Index(X.index), events, feature_cutoff, churn=churn)
    return X, y


def sufficiency(spec: ScoreSpec, y: pd.Series, min_positives: int, min_negatives: int) -> InsufficientData | None:
    """A verdict when there are too few positives or negatives to learn from, else None."""
    pos = int(y.sum())
    neg = int(len(y) - pos)
    if pos < min_positives or neg < min_negatives:
        return InsufficientData(spec.name, f"{pos} positives and {neg} negatives; need at least {min_positives} "
                                           f"and {min_negatives}", pos, neg, min_positives, min_negatives)
    return None


def make_classifier(encoder: Encoder, positives: int, seed: int = 0) -> CalibratedClassifierCV:
    """Calibrated gradient boosting; isotonic needs plenty of positives per fold, else Platt scaling."""
    # Small trees, brisk learning rate: on CRM-sized tabular data (bank marketing, telco churn) 8
    # leaves at 0.1 rank as well as 31 leaves at 0.06 (ROC AUC 0.799 / 0.847 in the tests) and fit
    # several times faster; early stopping picks the number of trees.
    base = HistGradientBoostingClassifier(
        learning_rate=0.1, max_iter=500, max_leaf_nodes=8, min_samples_leaf=40, l2_regularization=1.0,
        categorical_features=encoder.categorical_mask if encoder.categorical_mask.any() else None,
        early_stopping=True, validation_fraction=0.15, n_iter_no_change=20, random_state=seed)
    method = "isotonic" if positives >= 1500 else "sigmoid"
    # Shuffled folds: exports are often in date order, and contiguous calibration folds would
    # calibrate each model on a different period than it was fitted on.
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)
    return CalibratedClassifierCV(base, method=method, cv=folds, ensemble=True)


def fit_classifier(spec: ScoreSpec, X: pd.DataFrame, y: pd.Series, seed: int = 0) -> tuple[Encoder, Any]:
    """Fit encoder and calibrated classifier on one labelled set."""
    encoder = Encoder.fit(X, spec.features.max_categories)
    clf = make_classifier(encoder, int(y.sum()), seed)
    clf.fit(encoder.transform(X), y.to_numpy())
    return encoder, clf


def training_people(spec: ScoreSpec, contacts: pd.DataFrame, feature_cutoff: pd.Timestamp, options: Options, *,
                    churn: bool) -> Sample:
    """The people to compute training features for: on a book above ``options.sample_rows`` people, the seeded
    sample drawn *before* features are computed (:func:`scoring.sample.draw`) - the very rows :func:`at_most`
    would keep of the whole book's frame (features are per contact, rows in eligible order), with the property
    inputs chosen on the whole book - without building features for the others.

    Churn keeps the active contacts first, so it is sampled after its features, as are books with households
    and labelled outcomes (``draw`` returns the whole frame for those).
    """
    if churn:
        return Sample(contacts, 0)
    return draw(spec, contacts, feature_cutoff, options.sample_rows, options.seed)


def at_most(X: pd.DataFrame, y: pd.Series, rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """A seeded sample of ``rows`` labelled rows (in their order) when there are more, else all of them: the
    rule a big book's training rows (and a time split's evaluation rows) are sampled by."""
    keep = sampled_rows(len(y), rows, seed)
    if keep is None:
        return X, y
    return X.iloc[keep], y.iloc[keep]


def train_classifier(spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, cut: pd.Timestamp,
                     options: Options, *, churn: bool) -> TrainedModel | InsufficientData:
    """Fit on labels observed before ``cut`` (see the module docstring for the windows)."""
    now = datetime.now(UTC)
    feature_cutoff = cut if spec.labelled else cut - pd.Timedelta(days=spec.window_days)
    extra = extra_event_types(events, feature_cutoff)
    people = training_people(spec, contacts, feature_cutoff, options, churn=churn)
    labelled = labelled_set(spec, people.contacts, events, feature_cutoff, extra, churn=churn,
                            properties=people.properties)
    if isinstance(labelled, InsufficientData):
        return labelled
    X, y = labelled
    del labelled
    verdict = sufficiency(spec, y, options.min_positives, options.min_negatives)
    if verdict:
        return verdict
    available = people.available or len(y)
    del people
    # Beyond a few hundred thousand rows the ranking barely improves while fit time keeps growing; a seeded sample
    # keeps retraining a million-contact book to a minute or two (drawn before the features where it can be).
    X, y = at_most(X, y, options.sample_rows, options.seed)
    encoder, clf = fit_classifier(spec, X, y, options.seed)
    metrics = {"positives": int(y.sum()), "negatives": int(len(y) - y.sum()), "rows": len(y),
               "rows_available": available}
    return TrainedModel(spec, cut, now, encoder, clf, extra, metrics=metrics,
                        info={"feature_cutoff": feature_cutoff.isoformat()})


def rule_score(spec: ScoreSpec, X: pd.DataFrame, *, churn: bool) -> tuple[str, np.ndarray]:
    """The naive baseline: a recency/frequency rule anyone could write without a model."""
    since = X["days_since_activity"].fillna(1e4).to_numpy(float)
    if churn:
        return "longest since last activity", since
    col = f"n_{spec.outcome_event}_90d"
    freq = X[col].to_numpy(float) if col in X.columns else X["txn_count_90d"].to_numpy(float)
    return f"most {spec.outcome_event} events in the last 90 days, then most recent activity", freq * 1e5 - since


def time_split(spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, cutoff: object,
               options: Options, *, churn: bool) -> BacktestReport:
    """Fit one window before ``cutoff``, evaluate on the window after it, next to the naive rule."""
    window = pd.Timedelta(days=spec.window_days)
    report = BacktestReport(spec.name, spec.kind, "time_split")
    if events is None or events.empty:
        report.verdict = InsufficientData(spec.name, "no events: an event outcome cannot be evaluated").to_dict()
        return report
    cut = resolve_cutoff(spec, events, cutoff)
    train_cut = cut - window
    report.window = {"train_features_as_of": train_cut.isoformat(), "train_outcomes": [train_cut.isoformat(),
                     cut.isoformat()], "eval_features_as_of": cut.isoformat(),
                     "eval_outcomes": [cut.isoformat(), (cut + window).isoformat()]}
    extra = extra_event_types(events, train_cut)
    cap, seed = options.sample_rows, options.seed
    # Fitted as the live model is: on a sample of a big book, drawn before the features where it can be.
    people = training_people(spec, contacts, train_cut, options, churn=churn)
    train = labelled_set(spec, people.contacts, events, train_cut, extra, churn=churn, properties=people.properties)
    del people
    if isinstance(train, InsufficientData):
        report.verdict = train.to_dict()
        return report
    X_tr, y_tr = train
    del train  # the unpacked names are the frames' only holders: each can go when its last user is done
    verdict = sufficiency(spec, y_tr, options.min_positives, options.min_negatives)
    if verdict:
        report.verdict = verdict.to_dict()
        return report
    X_tr, y_tr = at_most(X_tr, y_tr, cap, seed)
    # Evaluated on at most ``cap`` people (seeded): the figures' precision is set by the sample, which at 300,000
    # people is already fine (scoring.sample explains why); every frame and the DeLong comparison stay bounded.
    evaluated = draw(spec, contacts, cut, cap, seed)
    test = labelled_set(spec, evaluated.contacts, events, cut, extra, churn=churn, properties=evaluated.properties)
    assert not isinstance(test, InsufficientData)  # history before train_cut implies history before cut
    X_te, y_te = test
    del test
    labelled_rows = len(y_te)
    X_te, y_te = at_most(X_te, y_te, cap, seed)  # a book that could not be drawn from first (households)
    if evaluated.drawn or len(y_te) < labelled_rows:
        report.window["evaluation"] = {
            "sample": "a seeded random sample of the people existing at the cutoff", "seed": seed,
            "people": len(evaluated.contacts) if evaluated.drawn else len(y_te),
            "of": evaluated.available if evaluated.drawn else labelled_rows, "rows": len(y_te)}
    del evaluated
    encoder, clf = fit_classifier(spec, X_tr, y_tr, seed)
    # Scored in slices (every row): the float64 matrix of a whole book and the ensemble's intermediates never exist.
    p = apply_in_slices(X_te, encoder.transform, lambda M: clf.predict_proba(M)[:, 1])
    report.model = classification_metrics(y_te.to_numpy(), p)
    report.model["train_positives"], report.model["train_negatives"] = int(y_tr.sum()), int(len(y_tr) - y_tr.sum())
    rule, score = rule_score(spec, X_te, churn=churn)
    base = classification_metrics(y_te.to_numpy(), score, with_calibration=False)
    base["brier"] = round(float(np.mean((y_te.to_numpy() - y_tr.mean()) ** 2)), 4)  # rule has no probabilities
    report.baseline = {"rule": rule, **base}
    gain = auc_difference(y_te.to_numpy(), p, score)
    if gain is not None:
        sample = report.window.get("evaluation")
        among = f", a seeded sample of {sample['rows']:,} of {sample['of']:,} people" if sample else ""
        on = f"the window after the cutoff (time split){among}"
        report.extra["gain_over_baseline"] = {**gain, "evaluated_on": on}
    rows = importance_rows(len(X_te), seed)  # the rows importance() would draw from the whole matrix
    report.top_features = importance(clf, encoder.transform(X_te.iloc[rows]), y_te.to_numpy()[rows], encoder.columns,
                                     "roc_auc", seed)
    report.fairness = fairness(pd.Series(p, index=X_te.index), contacts, spec.features.sensitive_attributes,
                               options.fairness_top_percent, outcomes=y_te)
    props = [c for c in X_tr.columns if c not in set(behaviour_columns(extra))]
    del p, score
    if props:
        # The frames with properties are done with: only the behaviour columns are kept for the refit.
        X_tr, X_te = X_tr.drop(columns=props), X_te.drop(columns=props)
        property_check(report, spec, X_tr, y_tr, X_te, y_te, props, seed)
    return report


def property_check(report: BacktestReport, spec: ScoreSpec, X_tr: pd.DataFrame, y_tr: pd.Series,
                   X_te: pd.DataFrame, y_te: pd.Series, props: list[str], seed: int) -> None:
    """Refit without contact properties; a big drop in ROC AUC points at a property that leaks.

    Properties are stored as they are now, not as of the cutoff. One that changes because of the
    outcome (a tier raised by the upgrade being predicted) makes a time-split backtest look far
    better than the model will ever do: with behaviour alone it falls back to earth.
    """
    encoder, clf = fit_classifier(spec, X_tr, y_tr, seed)
    p = apply_in_slices(X_te, encoder.transform, lambda M: clf.predict_proba(M)[:, 1])
    metrics = classification_metrics(y_te.to_numpy(), p, with_calibration=False)
    report.extra["without_properties"] = {"roc_auc": metrics["roc_auc"], "lift_top_decile": metrics["lift_top_decile"]}
    with_props, without = report.model.get("roc_auc"), metrics["roc_auc"]
    if with_props is not None and without is not None and with_props - without >= LEAK_GAP:
        report.extra["suspected_leakage"] = props
        report.extra.setdefault("caveats", []).append(
            f"suspected leakage: the properties {', '.join(props)} raise ROC AUC from {without} to {with_props}. "
            "If any of them is updated when the outcome happens, remove it from features and retrain")


def cross_validate(spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, cutoff: object,
                   options: Options, *, churn: bool) -> BacktestReport:
    """Stratified k-fold on a labelled property, plus a later-rows check for drift."""
    report = BacktestReport(spec.name, spec.kind, "stratified_cv")
    cut = to_utc(cutoff) if cutoff is not None else default_as_of(events)
    labelled = labelled_set(spec, contacts, events, cut, churn=churn)
    assert not isinstance(labelled, InsufficientData)  # a labelled property needs no history
    X, y = labelled
    report.window = {"features_as_of": cut.isoformat(), "folds": options.n_folds, "rows": len(y)}
    verdict = sufficiency(spec, y, options.min_positives, options.min_negatives)
    if verdict:
        report.verdict = verdict.to_dict()
        return report
    seed = options.seed
    yv = y.to_numpy()
    oof = np.zeros(len(y))
    fold_auc = []
    folds = StratifiedKFold(n_splits=options.n_folds, shuffle=True, random_state=seed)
    last: tuple[Any, Any, np.ndarray] | None = None
    for tr, te in folds.split(np.zeros(len(y)), yv):
        encoder, clf = fit_classifier(spec, X.iloc[tr], y.iloc[tr], seed)
        oof[te] = clf.predict_proba(encoder.transform(X.iloc[te]))[:, 1]
        fold_auc.append(classification_metrics(yv[te], oof[te], with_calibration=False)["roc_auc"])
        last = (encoder, clf, te)
    report.model = classification_metrics(yv, oof)
    report.model["fold_roc_auc"] = fold_auc
    rate = float(yv.mean())
    report.baseline = {"rule": "base rate for everyone",
                       **classification_metrics(yv, np.full(len(yv), rate), with_calibration=False)}
    assert last is not None
    encoder, clf, te = last
    report.top_features = importance(clf, encoder.transform(X.iloc[te]), yv[te], encoder.columns, "roc_auc", seed)
    report.fairness = fairness(pd.Series(oof, index=X.index), contacts, spec.features.sensitive_attributes,
                               options.fairness_top_percent, outcomes=y)
    later_rows_check(report, spec, X, y, seed, contacts.attrs.get("time_order", "row order as given"))
    if "gain_over_baseline" not in report.extra:
        # No usable time order: the pooled out-of-fold scores are the out-of-sample evidence.
        gain = auc_difference(yv, oof, np.full(len(yv), rate))
        if gain is not None:
            report.extra["gain_over_baseline"] = {**gain, "evaluated_on": "pooled out-of-fold predictions (shuffled)"}
    return report


def later_rows_check(report: BacktestReport, spec: ScoreSpec, X: pd.DataFrame, y: pd.Series, seed: int,
                     ordered_by: str) -> None:
    """Train on the first 80% of rows in time order, test on the rest; this is the figure the gate uses.

    ``X`` arrives in the source's time order (``ordered_by``: a declared date column, creation
    dates or the export's row order): shuffled folds would let the model learn from the future and
    hide drift, which is why the gate's gain over the baseline is measured here.
    """
    split = int(len(y) * 0.8)
    if not (0 < y.iloc[:split].sum() < split and 0 < y.iloc[split:].sum() < len(y) - split):
        return
    encoder, clf = fit_classifier(spec, X.iloc[:split], y.iloc[:split], seed)
    p_late = clf.predict_proba(encoder.transform(X.iloc[split:]))[:, 1]
    y_late = y.to_numpy()[split:]
    later = classification_metrics(y_late, p_late, with_calibration=False)
    report.extra["later_rows_check"] = {"train_rows": split, "test_rows": len(y) - split, "ordered_by": ordered_by,
                                        "roc_auc": later["roc_auc"], "lift_top_decile": later["lift_top_decile"]}
    # The naive rule for a labelled outcome is the training base rate for everyone.
    gain = auc_difference(y_late, p_late, np.full(len(y_late), float(y.iloc[:split].mean())))
    if gain is not None:
        report.extra["gain_over_baseline"] = {**gain, "evaluated_on": f"the last 20% of rows by {ordered_by}"}


@dataclass(frozen=True)
class Classifier:
    """The propensity (``churn=False``) or churn (``churn=True``) kind."""

    churn: bool = False
    uses_properties: bool = True

    def train(self, spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, cut: pd.Timestamp,
              options: Options) -> TrainedModel | InsufficientData:
        """See :func:`train_classifier`."""
        return train_classifier(spec, contacts, events, cut, options, churn=self.churn)

    def predict(self, model: TrainedModel, contacts: pd.DataFrame, events: pd.DataFrame | None,
                cut: pd.Timestamp) -> pd.Series:
        """Calibrated probability of the outcome within the window after ``cut``."""
        assert model.encoder is not None  # a classifier is always fitted with its encoder
        features = features_for(model.spec, contacts, events, cut, model.extra_types)
        # In slices: the encoded matrix and the ensemble's intermediates stay bounded on a big book.
        proba = apply_in_slices(features, model.encoder.transform, lambda M: model.estimator.predict_proba(M)[:, 1])
        return pd.Series(proba, index=features.index, name=model.spec.name)

    def backtest(self, spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, cutoff: object,
                 options: Options) -> BacktestReport:
        """Cross-validation for a labelled property, a time split for an event outcome."""
        if spec.labelled:
            return cross_validate(spec, contacts, events, cutoff, options, churn=self.churn)
        return time_split(spec, contacts, events, cutoff, options, churn=self.churn)

"""Honest evaluation of a score on data it has not seen, always next to a naive baseline.

Event outcomes use a time split: fit on features as of ``cutoff - window`` with outcomes in
``[cutoff - window, cutoff)``, then predict as of ``cutoff`` and compare with what happened in
``[cutoff, cutoff + window)``. The evaluation cutoff must therefore be at least one window before
the last event. Labelled-property outcomes use stratified 5-fold cross-validation (pooled
out-of-fold predictions), plus a train-on-earlier-rows / test-on-later-rows check because exports
are often in date order and shuffling hides drift.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance
from sklearn.model_selection import StratifiedKFold

from connectors.errors import InputError
from scoring.evaluation import classification_metrics, fairness
from scoring.features import behaviour_columns, extra_event_types, select_properties, to_utc
from scoring.models import (MIN_NEGATIVES, MIN_POSITIVES, InsufficientData, default_as_of, fit_classifier,
                            labelled_set, sufficiency)
from scoring.specs import ScoreSpec
from scoring.threads import threads_for

IMPORTANCE_ROWS = 3000
LEAK_GAP = 0.1  # ROC AUC that property inputs may add in a time split before it looks like leakage
TOP_FEATURES = 10


@dataclass
class BacktestReport:
    """What a backtest found; ``to_dict`` is the JSON model card body."""

    score: str
    kind: str
    method: str  # "time_split" | "stratified_cv" | "none"
    window: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] | None = None  # InsufficientData.to_dict() when no model could be fitted
    model: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    top_features: list[dict[str, Any]] = field(default_factory=list)
    fairness: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sufficient(self) -> bool:
        """False when the verdict is "insufficient data"."""
        return self.verdict is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _importance(estimator: Any, M: np.ndarray, y: np.ndarray, names: list[str], scoring: str,
                seed: int) -> list[dict[str, Any]]:
    """Permutation importance on at most 3,000 evaluation rows (enough to rank, cheap to run)."""
    rng = np.random.default_rng(seed)
    if len(M) > IMPORTANCE_ROWS:
        idx = rng.choice(len(M), IMPORTANCE_ROWS, replace=False)
        M, y = M[idx], y[idx]
    if scoring == "roc_auc" and not 0 < y.sum() < len(y):
        return []
    # A calibrated ensemble predicts through every member; ranking features needs one of them.
    members = getattr(estimator, "calibrated_classifiers_", None)
    if members:
        estimator = members[0].estimator
    res = permutation_importance(estimator, M, y, scoring=scoring, n_repeats=3, random_state=seed, n_jobs=1)
    order = np.argsort(-res.importances_mean)[:TOP_FEATURES]
    return [{"feature": names[i], "importance": round(float(res.importances_mean[i]), 4),
             "std": round(float(res.importances_std[i]), 4)} for i in order]


def _rule_score(spec: ScoreSpec, X: pd.DataFrame) -> tuple[str, np.ndarray]:
    """The naive baseline: a recency/frequency rule anyone could write without a model."""
    since = X["days_since_activity"].fillna(1e4).to_numpy(float)
    if spec.kind == "churn":
        return "longest since last activity", since
    col = f"n_{spec.outcome_event}_90d"
    freq = X[col].to_numpy(float) if col in X.columns else X["txn_count_90d"].to_numpy(float)
    return f"most {spec.outcome_event} events in the last 90 days, then most recent activity", freq * 1e5 - since


def backtest(spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, *, cutoff: object = None,
             min_positives: int = MIN_POSITIVES, min_negatives: int = MIN_NEGATIVES, n_folds: int = 5,
             fairness_top_percent: float = 10.0, seed: int = 0) -> BacktestReport:
    """Evaluate ``spec`` out of sample. See the module docstring for the design per outcome kind."""
    with threads_for(len(contacts)):
        report = _backtest(spec, contacts, events, cutoff, min_positives, min_negatives, n_folds,
                           fairness_top_percent, seed)
    if spec.kind in ("propensity", "churn", "ltv"):
        numeric, categorical = select_properties(contacts, spec.features,
                                                 [spec.outcome_property] if spec.outcome_property else [])
        report.extra["property_inputs"] = [*numeric, *categorical]
        report.extra["sensitive_attributes_excluded"] = [a for a in spec.features.sensitive_attributes
                                                         if a not in numeric and a not in categorical]
        if report.method == "time_split" and (numeric or categorical):
            report.extra.setdefault("caveats", []).append(
                "contact properties are the values stored now, not as of the cutoff: a property that changes "
                "because of the outcome (a tier after an upgrade) leaks it and inflates this backtest; configure "
                "only properties that do not move with the outcome")
    return report


def _backtest(spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, cutoff: object,
              min_positives: int, min_negatives: int, n_folds: int, fairness_top_percent: float,
              seed: int) -> BacktestReport:
    if spec.kind == "ltv":
        from scoring.backtest_ltv import backtest_ltv

        return backtest_ltv(spec, contacts, events, cutoff=cutoff, seed=seed)
    if spec.kind == "cluster":
        from scoring.backtest_ltv import describe_clusters

        return describe_clusters(spec, contacts, events, cutoff=cutoff, seed=seed)
    if spec.labelled:
        return _cross_validate(spec, contacts, events, cutoff, min_positives, min_negatives, n_folds,
                               fairness_top_percent, seed)
    return _time_split(spec, contacts, events, cutoff, min_positives, min_negatives, fairness_top_percent, seed)


def resolve_cutoff(spec: ScoreSpec, events: pd.DataFrame | None, cutoff: object) -> pd.Timestamp:
    """The evaluation cutoff: given, or one window before the end of the data; checked against the data."""
    last = default_as_of(events)
    window = pd.Timedelta(days=spec.window_days)
    cut = to_utc(cutoff) if cutoff is not None else (last - window).floor("D")
    if cut + window > last:
        raise InputError(f"score {spec.name}: backtest cutoff {cut.date()} is less than {spec.window_days} days "
                         f"before the last event ({last.date()}); outcomes after it are not observed yet")
    return cut


def _time_split(spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, cutoff: object,
                min_pos: int, min_neg: int, top_percent: float, seed: int) -> BacktestReport:
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
    train = labelled_set(spec, contacts, events, train_cut, extra)
    if isinstance(train, InsufficientData):
        report.verdict = train.to_dict()
        return report
    X_tr, y_tr = train
    verdict = sufficiency(spec, y_tr, min_pos, min_neg)
    if verdict:
        report.verdict = verdict.to_dict()
        return report
    test = labelled_set(spec, contacts, events, cut, extra)
    assert not isinstance(test, InsufficientData)  # history before train_cut implies history before cut
    X_te, y_te = test
    encoder, clf = fit_classifier(spec, X_tr, y_tr, seed)
    M = encoder.transform(X_te)
    p = clf.predict_proba(M)[:, 1]
    report.model = classification_metrics(y_te.to_numpy(), p)
    report.model["train_positives"], report.model["train_negatives"] = int(y_tr.sum()), int(len(y_tr) - y_tr.sum())
    rule, score = _rule_score(spec, X_te)
    base = classification_metrics(y_te.to_numpy(), score, with_calibration=False)
    base["brier"] = round(float(np.mean((y_te.to_numpy() - y_tr.mean()) ** 2)), 4)  # rule has no probabilities
    report.baseline = {"rule": rule, **base}
    report.top_features = _importance(clf, M, y_te.to_numpy(), encoder.columns, "roc_auc", seed)
    report.fairness = fairness(pd.Series(p, index=X_te.index), contacts, spec.features.sensitive_attributes,
                               top_percent, outcomes=y_te)
    props = [c for c in X_tr.columns if c not in set(behaviour_columns(extra))]
    if props:
        _property_check(report, spec, X_tr.drop(columns=props), y_tr, X_te.drop(columns=props), y_te, props, seed)
    return report


def _property_check(report: BacktestReport, spec: ScoreSpec, X_tr: pd.DataFrame, y_tr: pd.Series,
                    X_te: pd.DataFrame, y_te: pd.Series, props: list[str], seed: int) -> None:
    """Refit without contact properties; a big drop in ROC AUC points at a property that leaks.

    Properties are stored as they are now, not as of the cutoff. One that changes because of the
    outcome (a tier raised by the upgrade being predicted) makes a time-split backtest look far
    better than the model will ever do: with behaviour alone it falls back to earth.
    """
    encoder, clf = fit_classifier(spec, X_tr, y_tr, seed)
    metrics = classification_metrics(y_te.to_numpy(), clf.predict_proba(encoder.transform(X_te))[:, 1],
                                     with_calibration=False)
    report.extra["without_properties"] = {"roc_auc": metrics["roc_auc"], "lift_top_decile": metrics["lift_top_decile"]}
    with_props, without = report.model.get("roc_auc"), metrics["roc_auc"]
    if with_props is not None and without is not None and with_props - without >= LEAK_GAP:
        report.extra["suspected_leakage"] = props
        report.extra.setdefault("caveats", []).append(
            f"suspected leakage: the properties {', '.join(props)} raise ROC AUC from {without} to {with_props}. "
            "If any of them is updated when the outcome happens, remove it from features and retrain")


def _cross_validate(spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, cutoff: object,
                    min_pos: int, min_neg: int, n_folds: int, top_percent: float, seed: int) -> BacktestReport:
    report = BacktestReport(spec.name, spec.kind, "stratified_cv")
    cut = to_utc(cutoff) if cutoff is not None else default_as_of(events)
    labelled = labelled_set(spec, contacts, events, cut)
    assert not isinstance(labelled, InsufficientData)
    X, y = labelled
    report.window = {"features_as_of": cut.isoformat(), "folds": n_folds, "rows": len(y)}
    verdict = sufficiency(spec, y, min_pos, min_neg)
    if verdict:
        report.verdict = verdict.to_dict()
        return report
    yv = y.to_numpy()
    oof = np.zeros(len(y))
    fold_auc = []
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
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
    report.top_features = _importance(clf, encoder.transform(X.iloc[te]), yv[te], encoder.columns, "roc_auc", seed)
    report.fairness = fairness(pd.Series(oof, index=X.index), contacts, spec.features.sensitive_attributes,
                               top_percent, outcomes=y)
    # Drift check in row order: rows are often exported oldest first.
    split = int(len(y) * 0.8)
    if 0 < y.iloc[:split].sum() < split and 0 < y.iloc[split:].sum() < len(y) - split:
        encoder, clf = fit_classifier(spec, X.iloc[:split], y.iloc[:split], seed)
        p_late = clf.predict_proba(encoder.transform(X.iloc[split:]))[:, 1]
        later = classification_metrics(yv[split:], p_late, with_calibration=False)
        report.extra["later_rows_check"] = {"train_rows": split, "test_rows": len(y) - split,
                                            "roc_auc": later["roc_auc"], "lift_top_decile": later["lift_top_decile"]}
    return report

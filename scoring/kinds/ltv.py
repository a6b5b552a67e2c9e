"""Lifetime value: two approaches behind one :class:`~scoring.base.TrainedModel`, the better one used.

The probabilistic model (BG/NBD + Gamma-Gamma, :mod:`scoring.bgnbd`) needs no labels; the
learned one (Poisson gradient boosting on point-in-time features) needs a past window with
outcomes. At train time the two are compared on contacts held out of the regressor's training:
whichever predicts horizon value with the lower RMSE is used for scores. The backtest repeats the
comparison on a later, unseen period, next to the naive "same as the previous horizon" rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor

from scoring.base import (
    BacktestReport,
    Encoder,
    InsufficientData,
    Options,
    TrainedModel,
    features_for,
    importance,
    resolve_cutoff,
)
from scoring.bgnbd import ProbabilisticLtv, rfm_summary
from scoring.evaluation import auc_difference, lift_at, regression_metrics
from scoring.features import eligible_contacts, event_counts, extra_event_types
from scoring.specs import ScoreSpec

MIN_BUYERS = 100


def ltv_targets(spec: ScoreSpec, ids: pd.Index, events: pd.DataFrame | None, start: pd.Timestamp) -> pd.DataFrame:
    """Actual transactions and value per contact in ``[start, start + horizon)``."""
    end = start + pd.Timedelta(days=spec.horizon_days)
    return pd.DataFrame({"transactions": event_counts(ids, events, spec.transaction_types, start, end),
                         "value": event_counts(ids, events, spec.transaction_types, start, end, value=True)})


def newcomer_rate(spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, cut: pd.Timestamp) -> float:
    """Mean transactions in the horizon before ``cut`` by contacts with none before that horizon."""
    start = cut - pd.Timedelta(days=spec.horizon_days)
    ids = pd.Index(contacts["contact_id"].astype(str).to_numpy())
    before = rfm_summary(ids, events, start, spec.transaction_types)
    fresh = before.index[before["n"] == 0]
    if len(fresh) == 0:
        return 0.0
    return float(event_counts(fresh, events, spec.transaction_types, start, cut).mean())


def fit_probabilistic(spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None,
                      cut: pd.Timestamp) -> ProbabilisticLtv | InsufficientData:
    """BG/NBD + Gamma-Gamma on transactions before ``cut``."""
    ids = pd.Index(contacts["contact_id"].astype(str).to_numpy())
    summary = rfm_summary(ids, events, cut, spec.transaction_types)
    buyers = int((summary["n"] > 0).sum())
    if buyers < MIN_BUYERS:
        return InsufficientData(spec.name, f"{buyers} contacts with a transaction before {cut.date()}; "
                                           f"need at least {MIN_BUYERS}", buyers, 0, MIN_BUYERS, 0)
    valued = int(((summary["n"] > 0) & (summary["m"] > 0)).sum())
    if valued < MIN_BUYERS:
        # Spend per transaction cannot be learned without amounts: say so rather than price them at zero.
        types = ", ".join(spec.transaction_types)
        return InsufficientData(spec.name, f"{valued} of {buyers} buyers before {cut.date()} have a {types} with a "
                                           f"positive value; need at least {MIN_BUYERS} (map the source's amount "
                                           "to the event value)", valued, 0, MIN_BUYERS, 0)
    return ProbabilisticLtv.fit(summary, spec.horizon_days, newcomer_rate(spec, contacts, events, cut))


def fit_regressors(X: pd.DataFrame, y: pd.DataFrame, spec: ScoreSpec, seed: int = 0) -> tuple[Encoder, dict[str, Any]]:
    """Poisson boosting for horizon transactions and for horizon value (both non-negative targets)."""
    encoder = Encoder.fit(X, spec.features.max_categories)
    M = encoder.transform(X)
    mask = encoder.categorical_mask
    regs = {}
    for target in ("transactions", "value"):
        reg = HistGradientBoostingRegressor(loss="poisson", learning_rate=0.06, max_iter=250, min_samples_leaf=40,
                                            categorical_features=mask if mask.any() else None,
                                            early_stopping=True, random_state=seed)
        regs[target] = reg.fit(M, y[target].to_numpy())
    return encoder, regs


def regressable(y: pd.DataFrame) -> bool:
    """Poisson boosting needs a positive total for both targets (no value at all cannot be learned)."""
    return bool(y["transactions"].sum() > 0 and y["value"].sum() > 0)


def rmse(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def train_ltv(spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, cut: pd.Timestamp, *,
              seed: int = 0) -> TrainedModel | InsufficientData:
    """Fit both LTV models as of ``cut`` and keep the one with the lower held-out value RMSE."""
    prob = fit_probabilistic(spec, contacts, events, cut)
    if isinstance(prob, InsufficientData):
        return prob
    now = datetime.now(UTC)
    past = cut - pd.Timedelta(days=spec.horizon_days)
    extra = extra_event_types(events, past)
    info: dict[str, Any] = {"bgnbd": prob.bgnbd.params(), "gamma_gamma": prob.gg.params(), "winner": "bgnbd"}
    estimator: dict[str, Any] = {"probabilistic": prob}
    encoder = None
    first = pd.to_datetime(events["occurred_at"], utc=True).min() if events is not None and len(events) else cut
    X = features_for(spec, contacts, events, past, extra) if first < past else None
    y = ltv_targets(spec, pd.Index(X.index), events, past) if X is not None else None
    if X is not None and y is not None and regressable(y):
        rng = np.random.default_rng(seed)
        held = rng.random(len(X)) < 0.2
        enc_cmp, regs_cmp = fit_regressors(X[~held], y[~held], spec, seed)
        learned = regs_cmp["value"].predict(enc_cmp.transform(X[held]))
        prob_past = fit_probabilistic(spec, contacts, events, past)
        if not isinstance(prob_past, InsufficientData):
            ids = pd.Index(X.index[held])
            p = prob_past.predict(rfm_summary(ids, events, past, spec.transaction_types))
            info["holdout_rmse_value"] = {"bgnbd": rmse(p["expected_value"], y["value"][held]),
                                          "regressor": rmse(learned, y["value"][held])}
            info["winner"] = min(info["holdout_rmse_value"], key=info["holdout_rmse_value"].get)
        else:
            info["winner"] = "regressor"
        encoder, regs = fit_regressors(X, y, spec, seed)
        estimator["regressors"] = regs
    return TrainedModel(spec, cut, now, encoder, estimator, extra, info=info)


def predict_ltv(model: TrainedModel, contacts: pd.DataFrame, events: pd.DataFrame | None, cut: pd.Timestamp,
                method: str | None = None) -> pd.DataFrame:
    """expected_transactions and expected_value over the horizon as of ``cut``, by ``method``
    ("bgnbd" or "regressor"; default: the model's winner)."""
    method = method or model.info.get("winner", "bgnbd")
    spec = model.spec
    if method == "regressor":
        assert model.encoder is not None  # the regressor is only ever the winner when it was fitted
        X = features_for(spec, contacts, events, cut, model.extra_types)
        M = model.encoder.transform(X)
        regs = model.estimator["regressors"]
        return pd.DataFrame({"expected_transactions": regs["transactions"].predict(M),
                             "expected_value": regs["value"].predict(M)}, index=X.index)
    ids = pd.Index(eligible_contacts(contacts, cut)["contact_id"].astype(str).to_numpy(), name="contact_id")
    predicted: pd.DataFrame = model.estimator["probabilistic"].predict(
        rfm_summary(ids, events, cut, spec.transaction_types))
    return predicted


def regression_metrics_of(pred_tx: object, pred_v: object, act_tx: np.ndarray, act_v: np.ndarray) -> dict[str, float]:
    """:func:`scoring.evaluation.regression_metrics` on array-likes."""
    return regression_metrics(np.asarray(pred_tx, float), act_tx, np.asarray(pred_v, float), act_v)


def backtest_ltv(spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, *, cutoff: object = None,
                 seed: int = 0) -> BacktestReport:
    """Predict horizon transactions/value as of ``cutoff`` with each method and compare with what happened."""
    report = BacktestReport(spec.name, spec.kind, "time_split")
    if events is None or events.empty:
        report.verdict = InsufficientData(spec.name, "no transactions: lifetime value cannot be evaluated").to_dict()
        return report
    cut = resolve_cutoff(spec, events, cutoff)
    horizon = pd.Timedelta(days=spec.horizon_days)
    train_cut = cut - horizon
    report.window = {"history_before": cut.isoformat(), "regressor_train_features_as_of": train_cut.isoformat(),
                     "eval_outcomes": [cut.isoformat(), (cut + horizon).isoformat()]}
    prob = fit_probabilistic(spec, contacts, events, cut)
    if isinstance(prob, InsufficientData):
        report.verdict = prob.to_dict()
        return report
    ids = pd.Index(eligible_contacts(contacts, cut)["contact_id"].astype(str).to_numpy(), name="contact_id")
    actual = ltv_targets(spec, ids, events, cut)
    act_tx, act_v = actual["transactions"].to_numpy(), actual["value"].to_numpy()
    p = prob.predict(rfm_summary(ids, events, cut, spec.transaction_types))
    results = {"bgnbd": regression_metrics_of(p["expected_transactions"], p["expected_value"], act_tx, act_v)}
    predicted = {"bgnbd": np.asarray(p["expected_value"], float)}
    report.extra["bgnbd_params"] = prob.bgnbd.params()
    report.extra["gamma_gamma_params"] = prob.gg.params()
    first = pd.to_datetime(events["occurred_at"], utc=True).min()
    extra = extra_event_types(events, train_cut)
    X_tr = features_for(spec, contacts, events, train_cut, extra) if first < train_cut else None
    y_tr = ltv_targets(spec, pd.Index(X_tr.index), events, train_cut) if X_tr is not None else None
    if X_tr is not None and y_tr is not None and regressable(y_tr):
        encoder, regs = fit_regressors(X_tr, y_tr, spec, seed)
        X_te = features_for(spec, contacts, events, cut, extra).reindex(ids)
        M = encoder.transform(X_te)
        predicted["regressor"] = regs["value"].predict(M)
        results["regressor"] = regression_metrics_of(regs["transactions"].predict(M), predicted["regressor"],
                                                     act_tx, act_v)
        report.top_features = importance(regs["value"], M, act_v, encoder.columns, "neg_root_mean_squared_error", seed)
    last_tx = event_counts(ids, events, spec.transaction_types, train_cut, cut).to_numpy()
    last_v = event_counts(ids, events, spec.transaction_types, train_cut, cut, value=True).to_numpy()
    report.baseline = {"rule": f"same as the previous {spec.horizon_days} days",
                       **regression_metrics_of(last_tx, last_v, act_tx, act_v)}
    winner = min(results, key=lambda k: results[k]["rmse_value"])
    report.model = {"winner": winner, **results[winner], "methods": results}
    report.extra["buyers_before_cutoff"] = int((rfm_summary(ids, events, cut, spec.transaction_types)["n"] > 0).sum())
    report.extra["contacts"] = len(ids)
    rank_checks(report, act_tx > 0, act_v, predicted[winner], last_v)
    return report


def rank_checks(report: BacktestReport, bought: np.ndarray, act_v: np.ndarray, pred_v: np.ndarray,
                last_v: np.ndarray) -> None:
    """Rank and decile metrics: segments take the top of the ranking, so ranking is what the gate tests.

    ROC AUC of "bought in the horizon" by predicted value (model) and by last horizon's value
    (baseline), their paired difference with a DeLong interval, and the share of actual value the
    top decile captured.
    """
    def top_share(score: np.ndarray) -> float | None:
        total = float(act_v.sum())
        if total <= 0:
            return None
        k = max(round(len(score) * 0.1), 1)
        return round(float(act_v[np.argsort(-score, kind="stable")[:k]].sum()) / total, 4)

    y = bought.astype(int)
    report.model["buyers_in_horizon"] = int(y.sum())
    report.model["top_decile_value_share"] = top_share(pred_v)
    report.baseline["top_decile_value_share"] = top_share(last_v)
    if 0 < y.sum() < len(y):
        report.model["lift_top_decile"] = round(lift_at(y, pred_v), 3)
        report.baseline["lift_top_decile"] = round(lift_at(y, last_v), 3)
    gain = auc_difference(y, pred_v, last_v)
    if gain is not None:
        report.model["roc_auc"], report.baseline["roc_auc"] = gain["model_roc_auc"], gain["baseline_roc_auc"]
        report.extra["gain_over_baseline"] = {**gain, "evaluated_on": "buyers in the window after the cutoff "
                                                                      "(time split), ranked by predicted value"}


@dataclass(frozen=True)
class Ltv:
    """The ltv kind: expected value over the horizon, by whichever approach won at train time."""

    uses_properties: bool = True

    def train(self, spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, cut: pd.Timestamp,
              options: Options) -> TrainedModel | InsufficientData:
        """See :func:`train_ltv`."""
        return train_ltv(spec, contacts, events, cut, seed=options.seed)

    def predict(self, model: TrainedModel, contacts: pd.DataFrame, events: pd.DataFrame | None,
                cut: pd.Timestamp) -> pd.Series:
        """Expected value over the horizon after ``cut``."""
        return predict_ltv(model, contacts, events, cut)["expected_value"].rename(model.spec.name)

    def backtest(self, spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, cutoff: object,
                 options: Options) -> BacktestReport:
        """See :func:`backtest_ltv`."""
        return backtest_ltv(spec, contacts, events, cutoff=cutoff, seed=options.seed)

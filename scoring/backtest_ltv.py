"""Backtests for LTV (BG/NBD vs learned regressor vs last-period baseline) and cluster summaries."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scoring.backtest import BacktestReport, _importance, resolve_cutoff
from scoring.clusters import fit_clusters
from scoring.features import eligible_contacts, event_counts, extra_event_types, to_utc
from scoring.ltv import rfm_summary
from scoring.ltv_learn import fit_probabilistic, fit_regressors, ltv_targets
from scoring.models import InsufficientData, default_as_of, features_for
from scoring.specs import ScoreSpec


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
    report.extra["bgnbd_params"] = prob.bgnbd.params()
    report.extra["gamma_gamma_params"] = prob.gg.params()
    first = pd.to_datetime(events["occurred_at"], utc=True).min()
    if first < train_cut:
        extra = extra_event_types(events, train_cut)
        X_tr = features_for(spec, contacts, events, train_cut, extra)
        encoder, regs = fit_regressors(X_tr, ltv_targets(spec, pd.Index(X_tr.index), events, train_cut), spec, seed)
        X_te = features_for(spec, contacts, events, cut, extra).reindex(ids)
        M = encoder.transform(X_te)
        results["regressor"] = regression_metrics_of(regs["transactions"].predict(M), regs["value"].predict(M),
                                                     act_tx, act_v)
        report.top_features = _importance(regs["value"], M, act_v, encoder.columns,
                                          "neg_root_mean_squared_error", seed)
    last_tx = event_counts(ids, events, spec.transaction_types, train_cut, cut).to_numpy()
    last_v = event_counts(ids, events, spec.transaction_types, train_cut, cut, value=True).to_numpy()
    report.baseline = {"rule": f"same as the previous {spec.horizon_days} days",
                       **regression_metrics_of(last_tx, last_v, act_tx, act_v)}
    winner = min(results, key=lambda k: results[k]["rmse_value"])
    report.model = {"winner": winner, **results[winner], "methods": results}
    report.extra["buyers_before_cutoff"] = int((rfm_summary(ids, events, cut, spec.transaction_types)["n"] > 0).sum())
    report.extra["contacts"] = len(ids)
    return report


def regression_metrics_of(pred_tx: object, pred_v: object, act_tx: np.ndarray, act_v: np.ndarray) -> dict:
    """:func:`scoring.evaluation.regression_metrics` on array-likes."""
    from scoring.evaluation import regression_metrics

    return regression_metrics(np.asarray(pred_tx, float), act_tx, np.asarray(pred_v, float), act_v)


def describe_clusters(spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, *,
                      cutoff: object = None, seed: int = 0) -> BacktestReport:
    """Clusters have no outcome to backtest: report names, sizes and standardised centroids."""
    cut = to_utc(cutoff) if cutoff is not None else default_as_of(events)
    report = BacktestReport(spec.name, spec.kind, "none", window={"features_as_of": cut.isoformat()})
    X = features_for(spec, contacts, events, cut)
    if len(X) < spec.n_clusters * 20:
        report.verdict = InsufficientData(spec.name, f"{len(X)} contacts; too few for {spec.n_clusters} "
                                                     "clusters").to_dict()
        return report
    _, info = fit_clusters(X, spec.n_clusters, seed)
    report.model = {"clusters": [{"name": n, "size": s} for n, s in zip(info["names"], info["sizes"])],
                    "centroids_z": info["centroids_z"]}
    return report

"""Metrics shared by the backtest and the model card: ranking, calibration, regression, fairness."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

FOUR_FIFTHS = 0.8
MIN_GROUP = 30  # groups smaller than this are listed but not used for the ratio
Z95 = float(norm.ppf(0.975))


def lift_at(y: np.ndarray, p: np.ndarray, fraction: float = 0.1) -> float:
    """Outcome rate among the top ``fraction`` by score over the overall rate."""
    y = np.asarray(y, dtype=float)
    k = max(round(len(y) * fraction), 1)
    p = np.asarray(p, dtype=float)
    base = y.mean()
    if base == 0:
        return float("nan")
    # Ties at the boundary share the remaining places pro rata, so a constant score has lift 1
    # whatever the row order.
    threshold = np.sort(p)[::-1][k - 1]
    above = p > threshold
    tied = p == threshold
    hits = y[above].sum() + (k - above.sum()) * y[tied].mean()
    return float(hits / k / base)


def calibration_by_decile(y: np.ndarray, p: np.ndarray) -> list[dict[str, float]]:
    """Mean predicted vs observed rate in each score decile (decile 10 = highest scores)."""
    order = np.argsort(p, kind="stable")
    out = []
    for i, chunk in enumerate(np.array_split(order, 10), start=1):
        if len(chunk):
            out.append({"decile": i, "n": len(chunk), "mean_predicted": round(float(np.mean(p[chunk])), 4),
                        "observed_rate": round(float(np.mean(y[chunk])), 4)})
    return out


def classification_metrics(y: Sequence[int] | np.ndarray, p: Sequence[float] | np.ndarray,
                           with_calibration: bool = True) -> dict[str, Any]:
    """roc_auc, pr_auc, lift_top_decile, brier, calibration by decile, positives, negatives."""
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    both = 0 < y.sum() < len(y)
    out: dict[str, Any] = {
        "roc_auc": round(float(roc_auc_score(y, p)), 4) if both else None,
        "pr_auc": round(float(average_precision_score(y, p)), 4) if both else None,
        "lift_top_decile": round(lift_at(y, p), 3) if both else None,
        "brier": round(float(brier_score_loss(y, np.clip(p, 0, 1))), 4),
        "positives": int(y.sum()), "negatives": int(len(y) - y.sum()),
    }
    if with_calibration:
        out["calibration"] = calibration_by_decile(y, p)
    return out


def regression_metrics(pred_tx: np.ndarray, act_tx: np.ndarray, pred_v: np.ndarray,
                       act_v: np.ndarray) -> dict[str, float]:
    """Totals, RMSE and MAE of predicted vs actual transactions and value."""
    def r(x: float) -> float:
        return round(float(x), 4)

    return {
        "total_predicted_transactions": r(np.sum(pred_tx)), "total_actual_transactions": r(np.sum(act_tx)),
        "rmse_transactions": r(np.sqrt(np.mean((pred_tx - act_tx) ** 2))),
        "mae_transactions": r(np.mean(np.abs(pred_tx - act_tx))),
        "total_predicted_value": r(np.sum(pred_v)), "total_actual_value": r(np.sum(act_v)),
        "rmse_value": r(np.sqrt(np.mean((pred_v - act_v) ** 2))), "mae_value": r(np.mean(np.abs(pred_v - act_v))),
    }


def sensitive_groups(values: pd.Series) -> pd.Series:
    """Group labels for a sensitive attribute: age-like numbers in bands, other numbers in quartiles.

    Used only to measure outcomes per group; never a model input, never inferred.
    """
    name = str(values.name or "").lower()
    num = pd.to_numeric(values, errors="coerce") if not isinstance(values.dtype, pd.CategoricalDtype) else None
    if num is not None and num.notna().mean() > 0.95 and num.nunique() > 8:
        if "age" in name:
            bands = pd.cut(num, [-np.inf, 30, 45, 60, np.inf], right=False, labels=["<30", "30-44", "45-59", "60+"])
        else:
            bands = pd.qcut(num, 4, duplicates="drop")
        return bands.astype("string").fillna("unknown")
    return values.astype("string").str.strip().fillna("unknown")


def fairness(scores: pd.Series, contacts: pd.DataFrame, attributes: Sequence[str], top_percent: float = 10.0,
             outcomes: pd.Series | None = None) -> dict[str, Any]:
    """Per attribute: the share of each group selected into the top ``top_percent`` and the
    disparate-impact ratio (lowest / highest selection rate among groups of >= 30 people)."""
    out: dict[str, Any] = {}
    if not attributes:
        return out
    frame = contacts.set_index(contacts["contact_id"].astype(str))
    k = max(round(len(scores) * top_percent / 100), 1)
    selected = pd.Series(False, index=scores.index)
    selected.iloc[np.argsort(-scores.to_numpy(float), kind="stable")[:k]] = True
    for attr in attributes:
        if attr not in frame.columns:
            out[attr] = {"error": "attribute not in contacts"}
            continue
        groups = sensitive_groups(frame[attr].reindex(scores.index))
        rows: list[dict[str, Any]] = []
        for g, idx in groups.groupby(groups).groups.items():
            row: dict[str, Any] = {"group": str(g), "n": len(idx),
                                   "selection_rate": round(float(selected.loc[idx].mean()), 4)}
            if outcomes is not None:
                # Calibration by group: mean predicted next to the observed rate, per group.
                row["mean_predicted"] = round(float(scores.loc[idx].mean()), 4)
                row["outcome_rate"] = round(float(outcomes.reindex(idx).mean()), 4)
            rows.append(row)
        rates = [r["selection_rate"] for r in rows if r["n"] >= MIN_GROUP]
        ratio = round(min(rates) / max(rates), 3) if rates and max(rates) > 0 else None
        out[attr] = {"groups": rows, "disparate_impact": ratio, "top_percent": top_percent,
                     "passes_four_fifths": None if ratio is None else bool(ratio >= FOUR_FIFTHS)}
    return out


def _placements(pos: np.ndarray, neg: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong's structural components (per positive, per negative) for one score."""
    m, n = len(pos), len(neg)
    both = np.concatenate([pos, neg])
    r_all = rankdata(both)
    r_pos, r_neg = rankdata(pos), rankdata(neg)
    v10 = (r_all[:m] - r_pos) / n  # share of negatives each positive beats (ties count half)
    v01 = 1.0 - (r_all[m:] - r_neg) / m  # share of positives that beat each negative
    auc = float(v10.mean())
    return auc, v10, v01


def auc_difference(y: np.ndarray, model: np.ndarray, baseline: np.ndarray) -> dict[str, Any] | None:
    """Paired ROC AUC difference (model - baseline) with a 95% DeLong interval, or None without both classes.

    DeLong, DeLong & Clarke-Pearson (1988): the AUCs of two scores on the same people are
    correlated, so the variance of their difference comes from the shared placement values.
    """
    y = np.asarray(y, dtype=int)
    pos, neg = y == 1, y == 0
    if pos.sum() < 2 or neg.sum() < 2:
        return None
    a1, v10a, v01a = _placements(np.asarray(model, float)[pos], np.asarray(model, float)[neg])
    a2, v10b, v01b = _placements(np.asarray(baseline, float)[pos], np.asarray(baseline, float)[neg])
    s10 = np.cov(np.vstack([v10a, v10b]))
    s01 = np.cov(np.vstack([v01a, v01b]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / pos.sum() + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / neg.sum()
    se = float(np.sqrt(max(var, 0.0)))
    diff = a1 - a2
    return {"model_roc_auc": round(a1, 4), "baseline_roc_auc": round(a2, 4), "difference": round(diff, 4),
            "ci_low": round(diff - Z95 * se, 4), "ci_high": round(diff + Z95 * se, 4), "method": "DeLong, paired"}

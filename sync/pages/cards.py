"""Model cards as HTML: the same JSON card ``segsync score --report`` writes, drawn as charts.

Charts: calibration (mean predicted vs observed rate per decile), cumulative gains (from the same
deciles, ranked by predicted score), the distribution of the stored scores, and feature
importance. The backtest table puts the model next to the naive baseline; ROC AUC gets a 95%
interval from the Hanley-McNeil standard error when the card has the class counts. Anything the
card lacks is said, not faked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from markupsafe import Markup

from sync.pages import svg
from sync.pages.render import render

METRIC_ROWS = (("roc_auc", "ROC AUC (higher is better)"), ("pr_auc", "PR AUC (higher is better)"),
               ("lift_top_decile", "lift in the top 10%"), ("brier", "Brier score (lower is better)"),
               ("positives", "positives in the test set"), ("negatives", "negatives in the test set"),
               ("rmse_transactions", "RMSE of transactions"), ("rmse_value", "RMSE of value"),
               ("mae_value", "MAE of value"))


def auc_interval(auc: Any, positives: Any, negatives: Any) -> tuple[float, float] | None:
    """95% interval of a ROC AUC (Hanley and McNeil, 1982); None without the class counts."""
    if not isinstance(auc, (int, float)) or not isinstance(positives, int) or not isinstance(negatives, int):
        return None
    if positives < 1 or negatives < 1:
        return None
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / (
        positives * negatives
    )
    se = math.sqrt(max(var, 0.0))
    return max(0.0, auc - 1.96 * se), min(1.0, auc + 1.96 * se)


def calibration_chart(calibration: Sequence[dict[str, Any]]) -> Markup:
    """Observed outcome rate against mean predicted probability, per decile."""
    if not calibration:
        return svg.empty("Calibration", "the card has no calibration table (not a classifier, or too little data)")
    pts = [(float(c["mean_predicted"]), float(c["observed_rate"])) for c in calibration]
    top = max(max(x for x, _ in pts), max(y for _, y in pts), 0.05)
    return svg.line_chart("Calibration: predicted vs observed by decile", [svg.Series("observed rate", pts)],
                          x_label="mean predicted probability", y_label="observed rate", diagonal=True,
                          y_range=(0.0, top * 1.05))


def gains_points(calibration: Sequence[dict[str, Any]]) -> list[tuple[float, float]]:
    """Cumulative share of outcomes captured vs share of contacts, best-scored deciles first."""
    deciles = sorted(calibration, key=lambda c: -float(c["mean_predicted"]))
    total_n = sum(int(c["n"]) for c in deciles)
    total_hits = sum(int(c["n"]) * float(c["observed_rate"]) for c in deciles)
    if not total_n or total_hits <= 0:
        return []
    pts, n, hits = [(0.0, 0.0)], 0, 0.0
    for c in deciles:
        n += int(c["n"])
        hits += int(c["n"]) * float(c["observed_rate"])
        pts.append((n / total_n, hits / total_hits))
    return pts


def gains_chart(calibration: Sequence[dict[str, Any]]) -> Markup:
    """The cumulative gains curve against random targeting."""
    pts = gains_points(calibration)
    if not pts:
        return svg.empty("Cumulative gains", "no outcomes in the test set, so gains cannot be drawn")
    return svg.line_chart("Cumulative gains (the diagonal is random targeting)", [svg.Series("model", pts)],
                          x_label="share of contacts, best scores first", y_label="share of outcomes captured",
                          diagonal=True, y_range=(0.0, 1.0))


def distribution_chart(values: Sequence[float] | None, bins: int = 20) -> Markup:
    """A histogram of the stored scores."""
    if not values:
        return svg.empty("Score distribution", "no stored scores for this model (run `segsync sync` to score contacts)")
    lo, hi = min(values), max(values)
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    bars = [(f"{lo + i * width:.2g}", float(n)) for i, n in enumerate(counts)]
    return svg.bar_chart(f"Distribution of {len(values):,} stored scores", bars, x_label="score", y_label="contacts")


def features_chart(features: Sequence[dict[str, Any]]) -> Markup:
    """The top features by permutation importance."""
    if not features:
        return svg.empty("Top features", "no feature importance in the card")
    return svg.hbar_chart(
        "Top features (permutation importance)",
        [(f["feature"], float(f["importance"])) for f in features],
        x_label="drop in score when the feature is shuffled",
    )


def backtest_rows(card: dict[str, Any]) -> list[dict[str, Any]]:
    """Model vs baseline per metric, with an interval where one can be computed."""
    model, base = card.get("model") or {}, card.get("baseline") or {}
    rows = []
    for key, label in METRIC_ROWS:
        if key not in model and key not in base:
            continue
        row = {
            "metric": label,
            "model": model.get(key),
            "baseline": base.get(key),
            "model_ci": None,
            "baseline_ci": None,
        }
        if key == "roc_auc":
            row["model_ci"] = auc_interval(model.get(key), model.get("positives"), model.get("negatives"))
            row["baseline_ci"] = auc_interval(base.get(key), base.get("positives", model.get("positives")),
                                              base.get("negatives", model.get("negatives")))
        rows.append(row)
    return rows


def verdict_text(card: dict[str, Any]) -> tuple[str, str]:
    """(short verdict, explanation) in plain words."""
    verdict = card.get("verdict") or {}
    if verdict.get("verdict") == "insufficient_data":
        return "Insufficient data: no scores produced", str(verdict.get("reason") or "")
    model, base = card.get("model") or {}, card.get("baseline") or {}
    auc, bauc = model.get("roc_auc"), base.get("roc_auc")
    if isinstance(auc, float) and isinstance(bauc, float):
        if auc <= bauc:
            return "No better than the naive baseline: do not act on it", f"ROC AUC {auc:.3f} vs baseline {bauc:.3f}"
        return "Better than the naive baseline", f"ROC AUC {auc:.3f} vs baseline {bauc:.3f} (out of sample)"
    return "Evaluated", str(verdict.get("reason") or "see the metrics below")


def card_context(card: dict[str, Any], scores: Sequence[float] | None) -> dict[str, Any]:
    """Template context of a model card."""
    calibration = (card.get("model") or {}).get("calibration") or []
    short, why = verdict_text(card)
    return {
        "card": card,
        "verdict_short": short,
        "verdict_why": why,
        "rows": backtest_rows(card),
        "charts": {
            "calibration": calibration_chart(calibration),
            "gains": gains_chart(calibration),
            "distribution": distribution_chart(scores),
            "features": features_chart(card.get("top_features") or []),
        },
        "fairness": card.get("fairness") or {},
        "caveats": (card.get("extra") or {}).get("caveats") or [],
        "window": card.get("window") or {},
    }


def render_card_html(card: dict[str, Any], *, firm: str, colour: str = "#1f4e79", scores: Sequence[float] | None = None,
                     nonce: str = "", back: str | None = None) -> str:
    """One model card as a complete HTML page (served, or written next to card.md)."""
    return render("card.html", nonce=nonce, colour=colour, firm=firm, back=back, **card_context(card, scores))


def write_card_html(
    folder: Path, card: dict[str, Any], *, firm: str, colour: str, scores: Sequence[float] | None
) -> Path:
    """``card.html`` in ``folder`` (for ``segsync score --report``)."""
    path = folder / "card.html"
    path.write_text(render_card_html(card, firm=firm, colour=colour, scores=scores), encoding="utf-8")
    return path

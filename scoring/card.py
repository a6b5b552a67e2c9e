"""Model cards: the backtest report plus model metadata, as JSON and as markdown for people."""

from __future__ import annotations

from typing import Any

import sklearn

from scoring.base import BacktestReport, TrainedModel
from scoring.gate import GateVerdict

_METRIC_KEYS = ("roc_auc", "pr_auc", "lift_top_decile", "brier", "positives", "negatives",
                "total_predicted_transactions", "total_actual_transactions", "rmse_transactions", "mae_transactions",
                "total_predicted_value", "total_actual_value", "rmse_value", "mae_value")


INTENDED_USE = {
    "propensity": "rank contacts by how likely the configured outcome is within the horizon, to choose whom an "
                  "advisor contacts first; not for decisions about credit, eligibility or pricing",
    "churn": "rank active contacts by risk of going quiet (or of the configured churn event), to choose whom to "
             "check in with; not for decisions about service levels or eligibility",
    "ltv": "rank contacts by expected transaction value over the horizon, to prioritise outreach; not a forecast "
           "of any one person's money",
    "cluster": "group contacts by engagement behaviour for messaging; groups carry no judgement about people",
}
LIMITS = ("trained on this firm's own book only; contact properties are the values stored now, not as of the "
          "cutoff; scores say nothing about people with little or no recorded activity; the sensitive attributes "
          "listed are measured for fairness, never used as inputs or inferred")


def fairness_verdict(fairness: dict[str, Any]) -> str:
    """One line: which sensitive attributes fail the four-fifths rule in the backtest's top scores."""
    failing = [a for a, r in fairness.items() if isinstance(r, dict) and r.get("passes_four_fifths") is False]
    if not fairness:
        return "not measured: no sensitive attributes configured"
    if failing:
        return f"fails the four-fifths rule by {', '.join(failing)} (a warning; see the fairness section)"
    return "passes the four-fifths rule for every measured attribute"


def model_card(report: BacktestReport, model: TrainedModel | None = None,
               gate: GateVerdict | None = None) -> dict[str, Any]:
    """A JSON-ready model card: what was evaluated, how, how well, against what, for whom, and whether it is used."""
    card: dict[str, Any] = {"score": report.score, "kind": report.kind, "sklearn_version": sklearn.__version__,
                            **report.to_dict()}
    card["verdict"] = report.verdict or {"verdict": "ok"}
    card["intended_use"] = INTENDED_USE.get(report.kind, "")
    card["limits"] = LIMITS
    card["fairness_verdict"] = fairness_verdict(report.fairness)
    if gate is not None:
        card["gate"] = gate.to_dict()
    if model is not None:
        card["trained"] = {"trained_at": model.trained_at.isoformat(), "cutoff": model.cutoff.isoformat(),
                           "features": model.feature_names, "info": model.info, "metrics": model.metrics}
    return card


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _metric_table(model: dict[str, Any], baseline: dict[str, Any], extra_cols: dict[str, dict[str, Any]]) -> list[str]:
    # With several methods (ltv), each method is a column and the winner is marked; no "model" column.
    first = extra_cols if extra_cols else {"model": model}
    cols = {**first, f"baseline ({baseline.get('rule', 'naive')})": baseline}
    keys = [k for k in _METRIC_KEYS if any(k in c for c in cols.values())]
    lines = ["| metric | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {k} | " + " | ".join(_fmt(c.get(k)) for c in cols.values()) + " |" for k in keys]
    return lines


def _use_lines(card: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    gate = card.get("gate")
    if gate:
        lines += [f"**Used for segments: {'yes' if gate.get('passed') else 'no'}**"
                  + ("" if gate.get("passed") else " - " + "; ".join(gate.get("reasons") or [])), ""]
    gain = (card.get("extra") or {}).get("gain_over_baseline")
    if gain:
        lines += [f"Gain over the naive baseline: ROC AUC {gain['model_roc_auc']:.3f} vs "
                  f"{gain['baseline_roc_auc']:.3f}, "
                  f"difference {gain['difference']:+.3f} (95% CI {gain['ci_low']:+.3f} to {gain['ci_high']:+.3f}; "
                  f"{gain['method']}; on {gain.get('evaluated_on', 'held-out data')})", ""]
    if card.get("intended_use"):
        lines += [f"Intended use: {card['intended_use']}.", "", f"Limits: {card.get('limits', '')}.", ""]
    if card.get("fairness_verdict"):
        lines += [f"Fairness: {card['fairness_verdict']}.", ""]
    return lines


def render_model_card(card: dict[str, Any]) -> str:
    """Markdown for one model card."""
    lines = [f"# Model card: {card['score']} ({card['kind']})", ""]
    verdict = card.get("verdict") or {}
    if verdict.get("verdict") == "insufficient_data":
        lines += ["**Verdict: insufficient data, no scores produced.**", "", f"Reason: {verdict.get('reason')}", ""]
        return "\n".join(lines)
    lines += [f"Evaluation: `{card.get('method')}`", ""]
    lines += _use_lines(card)
    extra = card.get("extra") or {}
    for caveat in extra.get("caveats", []):
        lines += [f"> **Caveat:** {caveat}", ""]
    if extra.get("property_inputs") is not None:
        lines += [f"Property inputs: {', '.join(extra['property_inputs']) or 'none'}; sensitive attributes kept "
                  f"out of the model: {', '.join(extra.get('sensitive_attributes_excluded', [])) or 'none'}", ""]
    households = extra.get("households")
    if households:
        value = f" (value: sum of members' {households['value_property']})" if households.get("value_property") else ""
        lines += [f"Household features from `{households['column']}`: {', '.join(households['features'])}{value}; "
                  f"{households['contacts_with_household']} of {households['contacts']} contacts in "
                  f"{households['households']} households", ""]
    if card.get("window"):
        lines += ["## Data window", ""] + [f"- {k}: {v}" for k, v in card["window"].items()] + [""]
    model, baseline = card.get("model") or {}, card.get("baseline") or {}
    if card["kind"] == "cluster":
        lines += ["## Clusters", "", "| cluster | size |", "|---|---|"]
        lines += [f"| {c['name']} | {c['size']} |" for c in model.get("clusters", [])]
        lines += ["", f"Stability across refits (adjusted Rand index): {_fmt(model.get('stability'))}; "
                      f"silhouette: {_fmt(model.get('silhouette'))}"]
        return "\n".join(lines) + "\n"
    methods = model.get("methods", {})
    extra = {f"{name}" + (" (winner)" if name == model.get("winner") else ""): m for name, m in methods.items()}
    lines += ["## Metrics", ""]
    lines += _metric_table(model, baseline, extra)
    if "winner" in model:
        lines += ["", f"Winner by value RMSE: **{model['winner']}**"]
    if card.get("extra", {}).get("later_rows_check"):
        chk = card["extra"]["later_rows_check"]
        lines += ["", f"Later-rows check (train on first {chk['train_rows']} rows, test on last {chk['test_rows']}): "
                      f"ROC AUC {_fmt(chk['roc_auc'])}, top-decile lift {_fmt(chk['lift_top_decile'])}"]
    if model.get("calibration"):
        lines += ["", "## Calibration by decile", "", "| decile | n | mean predicted | observed |", "|---|---|---|---|"]
        lines += [f"| {c['decile']} | {c['n']} | {c['mean_predicted']:.3f} | {c['observed_rate']:.3f} |"
                  for c in model["calibration"]]
    if card.get("top_features"):
        lines += ["", "## Top features (permutation importance)", "", "| feature | importance | std |", "|---|---|---|"]
        lines += [f"| {f['feature']} | {f['importance']:.4f} | {f['std']:.4f} |" for f in card["top_features"]]
    if card.get("fairness"):
        lines += ["", "## Fairness check", "",
                  "Selection rate = share of each group in the top scores; disparate impact = lowest / highest "
                  "rate (four-fifths rule: >= 0.8). Sensitive attributes are measured, never used as inputs "
                  "unless configured, never inferred.", ""]
        for attr, res in card["fairness"].items():
            if "error" in res:
                lines += [f"- {attr}: {res['error']}"]
                continue
            lines += [f"### {attr}: disparate impact {_fmt(res['disparate_impact'])}", "",
                      "| group | n | selection rate | mean predicted | outcome rate |", "|---|---|---|---|---|"]
            lines += [f"| {g['group']} | {g['n']} | {g['selection_rate']:.3f} | {_fmt(g.get('mean_predicted'))} | "
                      f"{_fmt(g.get('outcome_rate'))} |" for g in res["groups"]]
            lines.append("")
    return "\n".join(lines) + "\n"

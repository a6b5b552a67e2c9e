"""The one gate every score passes before its values may cut a pushed segment.

A score is *used* only when its out-of-sample evaluation (a time-ordered split wherever the data has
time) shows all of:

- the minimum data (the kind's own verdict: positives and negatives, buyers, contacts per cluster);
- no leakage suspicion - suspected leakage is blocked, not merely flagged, because a leaky backtest
  looks best exactly when the model will do worst;
- for outcome scores (propensity, churn, ltv): a gain over the naive baseline whose 95% confidence
  interval excludes zero. The gain is measured in ROC AUC on the same people (paired DeLong test);
  for ltv the ranked outcome is "bought in the horizon", so the rank metric is what is tested;
- for clusters: behaviour to cluster on, assignments that are stable across refits on resamples,
  and a silhouette above a floor (the card shows both).

The verdict is plain data (:class:`GateVerdict`), stored in the model's metrics and in the card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from scoring.base import BacktestReport

MIN_STABILITY = 0.6  # adjusted Rand index between refits; below it a cluster id means little
MIN_SILHOUETTE = 0.1  # below it the groups overlap almost entirely


@dataclass
class GateVerdict:
    """Whether a score may be used for segments, why not, and the figures the decision rests on."""

    score: str
    passed: bool
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @property
    def summary(self) -> str:
        """One line for reports: "passed" or the reasons joined."""
        return "passed" if self.passed else "; ".join(self.reasons)


def _outcome_checks(report: BacktestReport, verdict: GateVerdict) -> None:
    gain = report.extra.get("gain_over_baseline")
    verdict.checks["gain_over_baseline"] = gain
    if not isinstance(gain, dict):
        verdict.reasons.append("no out-of-sample comparison with the naive baseline could be made")
        return
    if gain["ci_low"] <= 0:
        verdict.reasons.append(
            f"not shown better than the naive baseline out of sample: ROC AUC {gain['model_roc_auc']:.3f} vs "
            f"{gain['baseline_roc_auc']:.3f}, difference {gain['difference']:+.3f} "
            f"(95% CI {gain['ci_low']:+.3f} to {gain['ci_high']:+.3f}, {gain.get('evaluated_on', 'held-out data')})")
    leak = report.extra.get("suspected_leakage")
    if leak:
        without = (report.extra.get("without_properties") or {}).get("roc_auc")
        verdict.reasons.append(
            f"blocked for suspected leakage: the properties {', '.join(leak)} lift ROC AUC from {without} to "
            f"{report.model.get('roc_auc')} in a time split; remove any property updated when the outcome happens "
            "from features")


def _cluster_checks(report: BacktestReport, verdict: GateVerdict) -> None:
    stability, silhouette = report.model.get("stability"), report.model.get("silhouette")
    verdict.checks.update({"stability": stability, "silhouette": silhouette,
                           "min_stability": MIN_STABILITY, "min_silhouette": MIN_SILHOUETTE})
    if not isinstance(stability, float) or stability < MIN_STABILITY:
        verdict.reasons.append(f"clusters are not stable across refits (adjusted Rand index {stability}, "
                               f"need {MIN_STABILITY})")
    if not isinstance(silhouette, float) or silhouette < MIN_SILHOUETTE:
        verdict.reasons.append(f"clusters overlap (silhouette {silhouette}, need {MIN_SILHOUETTE})")


def gate(report: BacktestReport) -> GateVerdict:
    """Decide from a backtest whether its score may be used for segments (see the module docstring)."""
    verdict = GateVerdict(report.score, passed=False)
    if not report.sufficient:
        reason = (report.verdict or {}).get("reason", "insufficient data")
        verdict.reasons.append(f"insufficient data: {reason}")
        return verdict
    if report.kind == "cluster":
        _cluster_checks(report, verdict)
    else:
        _outcome_checks(report, verdict)
    verdict.passed = not verdict.reasons
    return verdict

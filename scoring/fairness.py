"""Fairness of what is actually pushed, and a screen for inputs that stand in for a sensitive attribute.

- :func:`segment_fairness` - per pushed segment and configured sensitive attribute (numbers in
  bands): membership rate and score distribution by group, and the disparate-impact ratio (lowest /
  highest membership rate among groups of at least 30 people), judged by the four-fifths rule.
  Rates by group come from fairlearn's ``MetricFrame``.
- :func:`proxy_screen` - how well each model input alone tells a group of a sensitive attribute from
  the rest (ROC AUC); an input above :data:`PROXY_AUC` brings the attribute in through the back door.
- :func:`breaches` - the warning lines a run report and ``/metrics`` show.

Sensitive attributes are measured, never model inputs (``segsync validate`` refuses that), never inferred.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from sklearn.metrics import roc_auc_score

from scoring.evaluation import FOUR_FIFTHS, MIN_GROUP, sensitive_groups

PROXY_AUC = 0.7  # one input telling a group apart this well is a proxy for it
PROXY_MIN_GROUP = 30


def _rate(y_true: pd.Series, y_pred: pd.Series) -> float:
    return float(np.mean(y_pred)) if len(y_pred) else float("nan")


def _attribute_rates(member: pd.Series, score: pd.Series | None, groups: pd.Series) -> dict[str, Any]:
    metrics: dict[str, Any] = {"membership_rate": _rate}
    frame = MetricFrame(metrics=metrics, y_true=member.to_numpy(), y_pred=member.to_numpy(),
                        sensitive_features=groups.to_numpy())
    counts = groups.value_counts()
    rows: list[dict[str, Any]] = []
    for group, row in frame.by_group.iterrows():
        n = int(counts.get(group, 0))
        entry: dict[str, Any] = {"group": str(group), "n": n,
                                 "membership_rate": round(float(row["membership_rate"]), 4)}
        if score is not None:
            vals = pd.to_numeric(score[groups.to_numpy() == group], errors="coerce").dropna()
            if len(vals):
                entry["score_mean"] = round(float(vals.mean()), 4)
                entry["score_quartiles"] = [round(float(q), 4) for q in vals.quantile([0.25, 0.5, 0.75])]
        rows.append(entry)
    # "unknown" (attribute not recorded) is shown but is no group to compare with.
    rates = [r["membership_rate"] for r in rows if r["n"] >= MIN_GROUP and r["group"] != "unknown"]
    ratio = round(min(rates) / max(rates), 3) if len(rates) > 1 and max(rates) > 0 else None
    return {"groups": rows, "disparate_impact": ratio,
            "passes_four_fifths": None if ratio is None else bool(ratio >= FOUR_FIFTHS)}


def segment_fairness(members: Mapping[str, Sequence[str]], population: pd.Index, contacts: pd.DataFrame,
                     attributes: Sequence[str], scores: Mapping[str, pd.Series] | None = None,
                     segment_scores: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Segment -> attribute -> membership rate and score distribution by group, disparate impact.

    ``population`` is everyone who could have been pushed (scored, not held out); ``segment_scores``
    maps a segment to the score it was cut from, whose distribution is shown per group.
    """
    out: dict[str, Any] = {}
    if not attributes or population.empty:
        return out
    frame = contacts.set_index(contacts["contact_id"].astype(str))
    for segment, ids in members.items():
        member = pd.Series(population.isin(list(ids)), index=population, dtype=float)
        score_name = (segment_scores or {}).get(segment)
        score = (scores or {}).get(score_name) if score_name else None
        score = score.reindex(population) if score is not None else None
        per_attr: dict[str, Any] = {}
        for attr in attributes:
            if attr not in frame.columns:
                per_attr[attr] = {"error": "attribute not in contacts"}
                continue
            groups = sensitive_groups(frame[attr].reindex(population).rename(attr))
            per_attr[attr] = _attribute_rates(member, score, groups)
        out[segment] = per_attr
    return out


def breaches(fairness: Mapping[str, Any]) -> list[str]:
    """Human-readable four-fifths breaches of :func:`segment_fairness` output."""
    lines = []
    for segment, per_attr in fairness.items():
        for attr, res in per_attr.items():
            if res.get("passes_four_fifths") is False:
                rates = {g["group"]: g["membership_rate"] for g in res["groups"]
                         if g["n"] >= MIN_GROUP and g["group"] != "unknown"}
                low, high = min(rates, key=rates.__getitem__), max(rates, key=rates.__getitem__)
                lines.append(f"fairness: segment {segment} fails the four-fifths rule by {attr} (disparate impact "
                             f"{res['disparate_impact']}: {low} {rates[low]:.1%} vs {high} {rates[high]:.1%})")
    return lines


def _readable(col: pd.Series) -> tuple[pd.Series, bool]:
    """An input as the screen reads it, and whether that is as numbers: numbers (missing ones as the median) when
    nearly every value parses, else text. It does not depend on the group, so it is worked out once per input."""
    num = pd.to_numeric(col, errors="coerce")
    if num.notna().mean() > 0.95:
        return num.fillna(num.median()), True
    return col.astype("string").fillna("missing"), False


def _encode(col: pd.Series, numeric: bool, target: pd.Series) -> pd.Series:
    """``col`` (from :func:`_readable`) as a score for ``target``; a category is as telling as the group's share
    among its members."""
    if numeric:
        return col
    return col.map(target.groupby(col).mean()).astype(float)


def proxy_screen(inputs: pd.DataFrame, contacts: pd.DataFrame, attributes: Sequence[str]) -> list[dict[str, Any]]:
    """Inputs that, alone, tell a sensitive group from the rest with ROC AUC >= :data:`PROXY_AUC`.

    ``inputs`` are the model's property inputs indexed by contact id; each row found names the
    input, the attribute, the group and the AUC (0.5 = no information, 1 = a perfect proxy).
    """
    found: list[dict[str, Any]] = []
    frame = contacts.set_index(contacts["contact_id"].astype(str))
    readable: dict[Any, tuple[pd.Series, bool]] = {}  # parsed once per input, not once per group
    for attr in attributes:
        if attr not in frame.columns:
            continue
        groups = sensitive_groups(frame[attr].reindex(inputs.index).rename(attr))
        for group in groups.unique():
            target = (groups == group).astype(int)
            if str(group) == "unknown" or not PROXY_MIN_GROUP <= target.sum() <= len(target) - PROXY_MIN_GROUP:
                continue
            for col in inputs.columns:
                if col not in readable:
                    readable[col] = _readable(inputs[col])
                x = _encode(*readable[col], target)
                if x.nunique() < 2:
                    continue
                auc = float(roc_auc_score(target, x.to_numpy()))
                auc = max(auc, 1 - auc)  # a strong negative association is as telling
                if auc >= PROXY_AUC:
                    found.append({"input": str(col), "attribute": attr, "group": str(group), "roc_auc": round(auc, 3)})
    return sorted(found, key=lambda r: -r["roc_auc"])

"""Honest evaluation of a score on data it has not seen, always next to a naive baseline.

How each kind is evaluated lives with the kind (:mod:`scoring.kinds`): classifiers use a time split
for event outcomes and stratified cross-validation for labelled properties, ltv compares its two
approaches with last period's values, clusters are described (they have no outcome). This module
picks the kind through :mod:`scoring.registry` and adds what every kind with property inputs shares:
which properties went in, which sensitive attributes were kept out, and the snapshot caveat.
"""

from __future__ import annotations

import pandas as pd

from scoring.base import MIN_NEGATIVES, MIN_POSITIVES, BacktestReport, Options, not_inputs
from scoring.discovery import select_properties
from scoring.fairness import proxy_screen
from scoring.households import household_summary
from scoring.registry import kind_for
from scoring.snapshots import history_of
from scoring.specs import ScoreSpec
from scoring.threads import threads_for

__all__ = ["BacktestReport", "backtest"]


def backtest(spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, *, cutoff: object = None,
             min_positives: int = MIN_POSITIVES, min_negatives: int = MIN_NEGATIVES, n_folds: int = 5,
             fairness_top_percent: float = 10.0, seed: int = 0) -> BacktestReport:
    """Evaluate ``spec`` out of sample. See the module docstring for the design per outcome kind."""
    kind = kind_for(spec.kind, score=spec.name)
    options = Options(min_positives=min_positives, min_negatives=min_negatives, n_folds=n_folds,
                      fairness_top_percent=fairness_top_percent, seed=seed)
    with threads_for(len(contacts)):
        report = kind.backtest(spec, contacts, events, cutoff, options)
    if kind.uses_properties:
        describe_property_inputs(report, spec, contacts)
    return report


def describe_property_inputs(report: BacktestReport, spec: ScoreSpec, contacts: pd.DataFrame) -> None:
    """List the property inputs and the excluded sensitive attributes; flag snapshot properties in a time split."""
    numeric, categorical = select_properties(contacts, spec.features, not_inputs(spec))
    report.extra["property_inputs"] = [*numeric, *categorical]
    households = household_summary(contacts, spec.features)
    if households is not None:
        report.extra["households"] = households
    report.extra["sensitive_attributes_excluded"] = [a for a in spec.features.sensitive_attributes
                                                     if a not in numeric and a not in categorical]
    proxies = proxy_screen(contacts.set_index(contacts["contact_id"].astype(str))[[*numeric, *categorical]],
                           contacts, spec.features.sensitive_attributes) if (numeric or categorical) else []
    if proxies:
        report.extra["proxies"] = proxies
        top = proxies[0]
        report.extra.setdefault("caveats", []).append(
            f"proxy screen: {len(proxies)} input/group pair(s) tell a sensitive group apart on their own, e.g. "
            f"{top['input']} for {top['attribute']} = {top['group']} (ROC AUC {top['roc_auc']}); the model can "
            "reproduce the attribute it does not see - check the fairness section, or exclude the input")
    if report.method == "time_split" and (numeric or categorical):
        snapshot_caveat(report, contacts, [*numeric, *categorical])


def snapshot_caveat(report: BacktestReport, contacts: pd.DataFrame, inputs: list[str]) -> None:
    """Say whether property inputs were read as of each cutoff, and how many only from after it."""
    history = history_of(contacts)
    window = report.window
    earliest = window.get("train_features_as_of") or window.get("regressor_train_features_as_of")
    share = history.unobserved_share(contacts, earliest, inputs) if history is not None and earliest else None
    if share is None:
        report.extra.setdefault("caveats", []).append(
            "contact properties are the values stored now, not as of the cutoff: a property that changes "
            "because of the outcome (a tier after an upgrade) leaks it and inflates this backtest; configure "
            "only properties that do not move with the outcome")
        return
    report.extra["property_snapshots"] = {"as_of": earliest, "first_seen_after_cutoff_share": round(share, 4)}
    if share > 0:
        report.extra.setdefault("caveats", []).append(
            f"{share:.0%} of property values at the training cutoff ({str(earliest)[:10]}) were first seen after "
            "it (snapshots start at segsync's first pull of each contact): those use the first value seen, which "
            "leaks a property that moved with the outcome; the leakage check refits without properties to catch it")

"""Train and apply a score, whatever its kind; "insufficient data" is a result, not an exception.

The kind (propensity, churn, ltv, cluster) is looked up in :mod:`scoring.registry`; what each
kind does lives in :mod:`scoring.kinds`. This module only fixes the time the data is read as of
and the native thread budget, so every kind is trained and applied the same way.
"""

from __future__ import annotations

import pandas as pd

from scoring.base import MIN_NEGATIVES, MIN_POSITIVES, InsufficientData, Options, TrainedModel, default_as_of
from scoring.features import to_utc
from scoring.registry import kind_for
from scoring.specs import ScoreSpec
from scoring.threads import threads_for

__all__ = ["MIN_NEGATIVES", "MIN_POSITIVES", "InsufficientData", "TrainedModel", "default_as_of", "predict", "train"]


def train(spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, *, as_of: object = None,
          min_positives: int = MIN_POSITIVES, min_negatives: int = MIN_NEGATIVES,
          seed: int = 0) -> TrainedModel | InsufficientData:
    """Fit ``spec`` on data before ``as_of`` (default: just after the last event).

    Returns an :class:`InsufficientData` verdict instead of a model when the data cannot support one.
    """
    kind = kind_for(spec.kind, score=spec.name)
    cut = to_utc(as_of) if as_of is not None else default_as_of(events)
    options = Options(min_positives=min_positives, min_negatives=min_negatives, seed=seed)
    with threads_for(len(contacts)):
        return kind.train(spec, contacts, events, cut, options)


def predict(model: TrainedModel, contacts: pd.DataFrame, events: pd.DataFrame | None, *,
            as_of: object = None) -> pd.Series:
    """Score every contact existing at ``as_of`` (default: just after the last event).

    propensity/churn: calibrated probability; ltv: expected value over the horizon; cluster: the
    cluster's readable name.
    """
    kind = kind_for(model.spec.kind, score=model.spec.name)
    cut = to_utc(as_of) if as_of is not None else default_as_of(events)
    with threads_for(len(contacts)):
        return kind.predict(model, contacts, events, cut)

"""The types every score kind shares, and the one interface a kind implements.

This module sits at the bottom of :mod:`scoring`: it imports no kind, so every kind (and the
registry that chooses between them) can import it without a circle::

    specs, features, evaluation  <-  base  <-  kinds/{classifier, ltv, cluster}  <-  registry
                                                                                   <-  models, backtest (entry points)

- :class:`InsufficientData` - an honest "cannot score" verdict, returned rather than raised;
- :class:`Encoder` - feature frame -> the numeric matrix a model was fitted on;
- :class:`TrainedModel` - a fitted score with what is needed to apply, explain and persist it;
- :class:`BacktestReport` - what an out-of-sample evaluation found (the model card body);
- :func:`importance` - permutation importance on a bounded sample;
- :class:`Kind` - train / predict / backtest, implemented once per kind in :mod:`scoring.kinds`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import pandas as pd
import sklearn
from sklearn.inspection import permutation_importance
from sklearn.metrics import roc_auc_score

from core.errors import InputError
from scoring.features import build_features, to_utc
from scoring.households import household_features
from scoring.snapshots import properties_as_of
from scoring.specs import ScoreSpec

MIN_POSITIVES = 100
MIN_NEGATIVES = 100
IMPORTANCE_ROWS = 3000
MIN_PRESENT_ROWS = 50  # rows with a value before a column is a model input
TOP_FEATURES = 10
SAMPLE_ROWS = 300_000  # people a fit or a backtest's evaluation reads at most: a seeded sample above (scoring.sample)


@dataclass
class InsufficientData:
    """An honest "cannot score": why, with the counts that were found."""

    score: str
    reason: str
    positives: int = 0
    negatives: int = 0
    min_positives: int = MIN_POSITIVES
    min_negatives: int = MIN_NEGATIVES

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with ``verdict: insufficient_data``."""
        return {"verdict": "insufficient_data", **asdict(self)}


@dataclass
class Encoder:
    """Turns a feature frame into the numeric matrix a model was trained on."""

    columns: list[str]
    levels: dict[str, list[str]] = field(default_factory=dict)  # categorical column -> kept levels

    @classmethod
    def fit(cls, frame: pd.DataFrame, max_categories: int = 50) -> Encoder:
        """Remember informative columns and the most frequent levels of each categorical column.

        Columns with fewer than two distinct values (e.g. web features for a CRM with no web
        events) carry nothing to learn and break histogram binning, so they are dropped here.
        """
        levels = {}
        columns = []
        # A column seen on only a handful of rows (a property few contacts have) can be entirely
        # missing inside a calibration fold, which histogram binning cannot take: it carries
        # too little to learn from anyway.
        min_present = min(MIN_PRESENT_ROWS, max(len(frame) // 2, 1))
        for col in frame.columns:
            if frame[col].nunique(dropna=True) < 2 or int(frame[col].notna().sum()) < min_present:
                continue
            columns.append(col)
            if isinstance(frame[col].dtype, pd.CategoricalDtype):
                counts = frame[col].value_counts()
                levels[col] = [str(v) for v in counts.index[:max_categories] if counts[v] > 0]
        return cls(columns, levels)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """float64 matrix; missing columns are NaN and unseen levels are missing, never an error."""
        out = np.full((len(frame), len(self.columns)), np.nan)
        for j, col in enumerate(self.columns):
            if col not in frame.columns:
                continue
            if col in self.levels:
                values = pd.Index(frame[col].astype("string").fillna("\0").to_numpy())
                codes = pd.Index(self.levels[col]).get_indexer(values)
                out[:, j] = np.where(codes >= 0, codes, np.nan)
            else:
                out[:, j] = pd.to_numeric(frame[col], errors="coerce").to_numpy(np.float64)
        return out

    @property
    def categorical_mask(self) -> np.ndarray:
        """Boolean mask of categorical columns, for HistGradientBoosting."""
        return np.array([c in self.levels for c in self.columns], dtype=bool)


@dataclass
class TrainedModel:
    """A fitted score with what is needed to apply, explain and persist it."""

    spec: ScoreSpec
    cutoff: pd.Timestamp  # as_of of the data the model was fitted on
    trained_at: datetime
    encoder: Encoder | None
    estimator: Any
    extra_types: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # cluster names, ltv parameters, winner, ...
    sklearn_version: str = sklearn.__version__

    @property
    def feature_names(self) -> list[str]:
        """Input columns, in order."""
        return list(self.encoder.columns) if self.encoder else []

    def metadata(self) -> dict[str, Any]:
        """The JSON half of a persisted model."""
        return {"spec": self.spec.to_dict(), "trained_at": self.trained_at.isoformat(),
                "cutoff": self.cutoff.isoformat(), "feature_names": self.feature_names,
                "extra_types": self.extra_types, "metrics": self.metrics, "info": self.info,
                "sklearn_version": self.sklearn_version}


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


@dataclass(frozen=True)
class Options:
    """Knobs of training and backtesting that are not part of a score's configuration."""

    min_positives: int = MIN_POSITIVES
    min_negatives: int = MIN_NEGATIVES
    n_folds: int = 5  # cross-validation folds for labelled-property outcomes
    fairness_top_percent: float = 10.0  # the "selected" share in the fairness check
    seed: int = 0
    sample_rows: int = SAMPLE_ROWS  # a fit, and a time split's evaluation, read at most this many people


class Kind(Protocol):
    """What one score kind implements; :mod:`scoring.registry` maps kind names to one of these."""

    @property
    def uses_properties(self) -> bool:
        """True when contact properties are model inputs (the backtest then lists them and their caveats)."""
        ...

    def train(self, spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, cut: pd.Timestamp,
              options: Options) -> TrainedModel | InsufficientData:
        """Fit ``spec`` on data before ``cut``, or say why the data cannot support a model."""
        ...

    def predict(self, model: TrainedModel, contacts: pd.DataFrame, events: pd.DataFrame | None,
                cut: pd.Timestamp) -> pd.Series:
        """One value per contact existing at ``cut``, indexed by contact id and named after the score."""
        ...

    def backtest(self, spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, cutoff: object,
                 options: Options) -> BacktestReport:
        """Evaluate ``spec`` on data it was not fitted on, next to a naive baseline."""
        ...


def default_as_of(events: pd.DataFrame | None) -> pd.Timestamp:
    """Just after the latest event (so it is included), or now when there are none."""
    if events is None or events.empty:
        return pd.Timestamp.now(tz="UTC")
    return to_utc(pd.to_datetime(events["occurred_at"], utc=True).max()) + pd.Timedelta(microseconds=1)


def features_for(spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, cutoff: object,
                 extra_types: list[str] | None = None,
                 properties: tuple[list[str], list[str]] | None = None) -> pd.DataFrame:
    """Features for ``spec`` as of ``cutoff`` (the label property, if any, excluded).

    ``properties`` fixes the (numeric, categorical) property inputs; a sample of a book passes the ones chosen on
    the whole book (:mod:`scoring.sample`), so its columns are those the whole book's frame would have.
    """
    contacts = properties_as_of(contacts, cutoff)  # a past cutoff sees the property values known then
    frame = build_features(contacts, events, cutoff, spec.features, transaction_types=spec.transaction_types,
                           activity_types=spec.activity_types, exclude=not_inputs(spec), extra_types=extra_types,
                           properties=properties)
    households = household_features(contacts, events, cutoff, spec.features, spec.activity_types)
    return frame if households is None else frame.join(households)


def not_inputs(spec: ScoreSpec) -> list[str]:
    """Properties that are never model inputs as such: the label of a labelled outcome, the household id."""
    return [*([spec.outcome_property] if spec.outcome_property else []), spec.features.household_column]


def resolve_cutoff(spec: ScoreSpec, events: pd.DataFrame | None, cutoff: object) -> pd.Timestamp:
    """The evaluation cutoff: given, or one window before the end of the data; checked against the data."""
    last = default_as_of(events)
    window = pd.Timedelta(days=spec.window_days)
    cut = to_utc(cutoff) if cutoff is not None else (last - window).floor("D")
    if cut + window > last:
        raise InputError(f"score {spec.name}: backtest cutoff {cut.date()} is less than {spec.window_days} days "
                         f"before the last event ({last.date()}); outcomes after it are not observed yet")
    return cut


def importance_rows(n: int, seed: int) -> np.ndarray:
    """The rows (of ``n``) :func:`importance` ranks features on: at most :data:`IMPORTANCE_ROWS`, seeded. A caller
    that scores a big book in slices encodes only these rows and passes them in."""
    if n <= IMPORTANCE_ROWS:
        return np.arange(n)
    return np.random.default_rng(seed).choice(n, IMPORTANCE_ROWS, replace=False)


def importance(estimator: Any, M: np.ndarray, y: np.ndarray, names: list[str], scoring: str,
               seed: int) -> list[dict[str, Any]]:
    """Permutation importance on at most 3,000 evaluation rows (enough to rank, cheap to run)."""
    if len(M) > IMPORTANCE_ROWS:
        idx = importance_rows(len(M), seed)
        M, y = M[idx], y[idx]
    if scoring == "roc_auc" and not 0 < y.sum() < len(y):
        return []
    # A calibrated ensemble predicts through every member; ranking features needs one of them.
    members = getattr(estimator, "calibrated_classifiers_", None)
    if members:
        estimator = members[0].estimator
    scorer: Any = _roc_auc if scoring == "roc_auc" else scoring
    res = permutation_importance(estimator, M, y, scoring=scorer, n_repeats=3, random_state=seed, n_jobs=1)
    order = np.argsort(-res.importances_mean)[:TOP_FEATURES]
    return [{"feature": names[i], "importance": round(float(res.importances_mean[i]), 4),
             "std": round(float(res.importances_std[i]), 4)} for i in order]


def _roc_auc(estimator: Any, X: np.ndarray, y: np.ndarray) -> float:
    """What scikit-learn's "roc_auc" scorer computes (the decision function where there is one, else the positive
    class's probability), without its per-call checks: permutation importance calls it once per input and repeat,
    and on a small book those checks cost about as much as the predictions."""
    if hasattr(estimator, "decision_function"):
        return float(roc_auc_score(y, estimator.decision_function(X)))
    return float(roc_auc_score(y, estimator.predict_proba(X)[:, 1]))

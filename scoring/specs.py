"""Plain configuration records for scores, their features and the segments cut from them.

These are what ``sync.config`` builds from YAML and hands to :mod:`scoring`; they carry no
behaviour, so the pipeline and the CLI can construct, compare and serialise them freely.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

ScoreKind = Literal["propensity", "churn", "ltv", "cluster"]

DEFAULT_ACTIVITY_TYPES: tuple[str, ...] = ("email_open", "email_click", "page_view", "deposit", "upgrade")


@dataclass(frozen=True)
class FeatureSpec:
    """Which contact properties feed a model, and what counts as high-intent web behaviour.

    With both ``numeric_properties`` and ``categorical_properties`` empty, property columns are
    picked automatically (numeric-looking columns as numbers, the rest as categories), minus
    ``exclude_properties`` and minus ``sensitive_attributes``. A sensitive attribute becomes a
    model input only when it is listed explicitly in one of the property tuples; otherwise it is
    used for the fairness check alone.
    """

    numeric_properties: tuple[str, ...] = ()
    categorical_properties: tuple[str, ...] = ()
    exclude_properties: tuple[str, ...] = ()
    sensitive_attributes: tuple[str, ...] = ()
    high_intent_urls: tuple[str, ...] = ("calculator", "pricing")
    max_categories: int = 50  # levels kept per categorical property; the rest share "other"
    # The property holding a person's household id (connectors.base.HOUSEHOLD_PROPERTY; scoring may not
    # import connectors, so the pipeline passes it) and the property whose members' sum is household value.
    household_column: str = "household_id"
    household_value_property: str | None = None


@dataclass(frozen=True)
class ScoreSpec:
    """One configured score.

    - ``propensity``: did ``outcome_event`` happen within ``horizon_days`` after the cutoff, or
      does the labelled ``outcome_property`` equal ``outcome_equals``.
    - ``churn``: no event of ``activity_types`` for ``inactive_days`` after the cutoff, or an
      explicit churn event (``outcome_event`` within ``inactive_days``), or a labelled property
      (``outcome_property`` == ``outcome_equals``).
    - ``ltv``: expected number and value of ``transaction_types`` events over ``horizon_days``.
    - ``cluster``: ``n_clusters`` behavioural groups with readable names.
    """

    name: str
    kind: ScoreKind
    horizon_days: int = 90
    outcome_event: str | None = None
    outcome_property: str | None = None
    outcome_equals: str | None = None
    inactive_days: int = 90
    activity_types: tuple[str, ...] = DEFAULT_ACTIVITY_TYPES
    transaction_types: tuple[str, ...] = ("deposit",)
    n_clusters: int = 4
    features: FeatureSpec = field(default_factory=FeatureSpec)

    @property
    def window_days(self) -> int:
        """The outcome window: ``inactive_days`` for churn, ``horizon_days`` otherwise."""
        return self.inactive_days if self.kind == "churn" else self.horizon_days

    @property
    def labelled(self) -> bool:
        """True when the outcome is a contact property rather than future events."""
        return self.outcome_property is not None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreSpec:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        feats = data.pop("features", None) or {}
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in feats.items()}
        feature_spec = FeatureSpec(**values)
        for key in ("activity_types", "transaction_types"):
            if key in data and isinstance(data[key], list):
                data[key] = tuple(data[key])
        return cls(features=feature_spec, **data)


@dataclass(frozen=True)
class SegmentSpec:
    """A segment cut from one score: the top ``top_percent``, a ``min``/``max`` band, or a cluster."""

    name: str
    score: str
    top_percent: float | None = None
    min: float | None = None
    max: float | None = None
    cluster: str | int | None = None  # cluster name or id, for cluster scores

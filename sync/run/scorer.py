"""Score one tenant: store -> frames -> persisted (or newly trained) models -> scores and segments.

Only contacts the consent gate allows for ``profiling`` are scored. Models are reused between
runs and retrained only when asked, when missing, or when their spec changed. Features are
computed as of the data's own watermark (just after the newest stored event), so a re-run with
no new data yields the very same scores - and so zero writes.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from scoring.models import InsufficientData, TrainedModel, default_as_of, predict, train
from scoring.persist import load_model, save_model
from scoring.segments import SegmentAssignment, assign_segments, holdout
from scoring.specs import FeatureSpec, ScoreSpec, SegmentSpec
from sync.config.models import ScoreCfg, TenantCfg
from sync.store.interface import Store

log = logging.getLogger("segsync.score")


@dataclass
class ScoreResult:
    scores: dict[str, pd.Series] = field(default_factory=dict)  # numeric scores by name
    clusters: dict[str, pd.Series] = field(default_factory=dict)  # cluster labels by name
    verdicts: dict[str, str] = field(default_factory=dict)  # score -> "insufficient data: ..."
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # score -> trained_at, reused, metrics
    assignment: SegmentAssignment | None = None
    holdout_ids: set[str] = field(default_factory=set)
    as_of: str = ""
    scored: int = 0


def score_spec(cfg: ScoreCfg, tenant: TenantCfg) -> ScoreSpec:
    """Translate a config score into the scoring package's plain spec."""
    outcome = cfg.outcome
    return ScoreSpec(
        name=cfg.name,
        kind=cfg.kind,
        horizon_days=cfg.horizon_days,
        outcome_event=outcome.event if outcome else None,
        outcome_property=outcome.property if outcome else None,
        outcome_equals=outcome.equals if outcome else None,
        inactive_days=cfg.inactive_days,
        n_clusters=cfg.clusters,
        features=FeatureSpec(
            numeric_properties=tuple(tenant.features.numeric_properties),
            categorical_properties=tuple(tenant.features.categorical_properties),
            sensitive_attributes=tuple(tenant.features.sensitive_attributes),
        ),
    )


def segment_specs(tenant: TenantCfg) -> list[SegmentSpec]:
    return [SegmentSpec(s.name, s.score, s.top_percent, s.min, s.max, s.cluster) for s in tenant.segments]


def frames(store: Store, tenant: TenantCfg, allowed: set[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Contacts and events as the scoring package expects them (see scoring.features)."""
    wanted = (
        set(tenant.features.numeric_properties)
        | set(tenant.features.categorical_properties)
        | set(tenant.features.sensitive_attributes)
    )
    wanted |= {s.outcome.property for s in tenant.scores if s.outcome and s.outcome.property}
    rows = []
    for c in store.contacts(tenant.id):
        if allowed is not None and c["contact_id"] not in allowed:
            continue
        props = c["properties"] or {}
        rows.append(
            {
                "contact_id": c["contact_id"],
                "email": c["email"],
                "created_at": c["created_at"],
                **{k: props.get(k) for k in wanted},
            }
        )
    contacts = pd.DataFrame(rows, columns=["contact_id", "email", "created_at", *sorted(wanted)])
    contacts["created_at"] = pd.to_datetime(contacts["created_at"], utc=True, errors="coerce")
    for name in tenant.features.numeric_properties:
        contacts[name] = pd.to_numeric(contacts[name], errors="coerce")
    ev = pd.DataFrame(
        list(store.events(tenant.id)), columns=["contact_id", "type", "occurred_at", "value", "url", "session_id"]
    )
    if allowed is not None:
        ev = ev[ev["contact_id"].isin(allowed)]
    ev["occurred_at"] = pd.to_datetime(ev["occurred_at"], utc=True)
    ev["value"] = pd.to_numeric(ev["value"], errors="coerce")
    return contacts.reset_index(drop=True), ev.reset_index(drop=True)


def _spec_fingerprint(spec: ScoreSpec) -> dict[str, Any]:
    return dataclasses.asdict(spec)


def model_for(
    spec: ScoreSpec, directory: Path, contacts: pd.DataFrame, events: pd.DataFrame, as_of: pd.Timestamp, retrain: bool
) -> tuple[TrainedModel | InsufficientData, bool]:
    """Reuse the persisted model unless asked to retrain, it is missing, or its spec changed."""
    if not retrain and (directory / "model.pkl").exists():
        try:
            saved = load_model(directory)
            if _spec_fingerprint(saved.spec) == _spec_fingerprint(spec):
                return saved, True
            log.info("score %s: the spec changed since the model was trained; retraining", spec.name)
        except Exception as exc:
            log.warning("score %s: cannot reuse the saved model (%s); retraining", spec.name, exc)
    model = train(spec, contacts, events, as_of=as_of)
    if isinstance(model, TrainedModel):
        if spec.kind in ("propensity", "churn"):
            model.metrics.update(backtest_summary(spec, contacts, events))
        save_model(model, directory)
    return model, False


def backtest_summary(spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame) -> dict[str, Any]:
    """Out-of-sample AUC of the model and of the naive baseline, measured once when a model is trained."""
    from core.errors import InputError
    from scoring.backtest import backtest

    try:
        report = backtest(spec, contacts, events if not events.empty else None)
    except InputError as exc:
        return {"backtest": f"not possible: {exc}"}
    if not report.sufficient:
        return {"backtest": "insufficient data for an out-of-sample test"}
    return {"backtest_roc_auc": report.model.get("roc_auc"), "baseline_roc_auc": report.baseline.get("roc_auc"),
            "backtest_lift_top_decile": report.model.get("lift_top_decile")}


def no_better_than_baseline(metrics: dict[str, Any]) -> str | None:
    """The reason not to act on a classifier, or None. Confident noise is worse than no segment."""
    auc, base = metrics.get("backtest_roc_auc"), metrics.get("baseline_roc_auc")
    if isinstance(auc, float) and isinstance(base, float) and auc <= base:
        return f"no better than the naive baseline out of sample (ROC AUC {auc:.3f} vs {base:.3f})"
    return None


def score_tenant(
    store: Store, tenant: TenantCfg, model_dir: Path, allowed: set[str], *, retrain: bool = False
) -> ScoreResult:
    """Score every profiling-allowed contact of a tenant and cut the segments (holdout excluded)."""
    result = ScoreResult()
    contacts, events = frames(store, tenant, allowed)
    result.scored = len(contacts)
    if contacts.empty or not tenant.scores:
        result.assignment = SegmentAssignment(holdout_percent=tenant.holdout_percent)
        return result
    as_of = default_as_of(events if not events.empty else None)
    result.as_of = as_of.isoformat()
    for cfg in tenant.scores:
        spec = score_spec(cfg, tenant)
        model, reused = model_for(spec, model_dir / tenant.id / cfg.name, contacts, events, as_of, retrain)
        if isinstance(model, InsufficientData):
            result.verdicts[cfg.name] = f"insufficient data: {model.reason}"
            result.scores[cfg.name] = pd.Series(dtype=float)
            continue
        weak = no_better_than_baseline(model.metrics)
        if weak:
            result.verdicts[cfg.name] = weak
            result.scores[cfg.name] = pd.Series(dtype=float)
            result.models[cfg.name] = {
                "reused": reused,
                "trained_at": model.trained_at.isoformat(),
                "metrics": model.metrics,
            }
            continue
        values = predict(model, contacts, events, as_of=as_of)
        values.index = values.index.astype(str)
        if cfg.kind == "cluster":
            result.clusters[cfg.name] = values
        else:
            result.scores[cfg.name] = values.astype(float)
        result.models[cfg.name] = {
            "reused": reused,
            "trained_at": model.trained_at.isoformat(),
            "metrics": model.metrics,
        }
    result.assignment = assign_segments(
        result.scores, segment_specs(tenant), tenant.id, tenant.holdout_percent, result.clusters
    )
    result.holdout_ids = {c for c in contacts["contact_id"] if holdout(tenant.id, c, tenant.holdout_percent)}
    return result

"""Score one tenant: store -> frames -> persisted (or newly trained) models -> scores and segments.

Only contacts the consent gate allows for ``profiling`` are scored. Models are reused between
runs and retrained only when asked, when missing, or when their spec changed. Features are
computed as of the data's own watermark (just after the newest stored event), so a re-run with
no new data yields the very same scores - and so zero writes. What segsync itself wrote comes back on
the next pull (its segment property and tags, and the CRM's new modification time on every contact it
wrote); none of it is a model input (:func:`wanted_properties`, :func:`without_own_tags`,
:data:`scoring.discovery.DATE_TEXT`), so segsync's own writes do not move its scores.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from connectors.base import HOUSEHOLD_PROPERTY
from core.heap import fixed_mmap_threshold
from core.times import now as utcnow
from scoring.discovery import select_properties
from scoring.fairness import breaches, segment_fairness
from scoring.features import eligible_contacts
from scoring.gate import GateVerdict, gate
from scoring.kinds.cluster import align_names
from scoring.models import InsufficientData, TrainedModel, default_as_of, predict, train
from scoring.persist import load_model, save_model
from scoring.segments import SegmentAssignment, assign_segments
from scoring.specs import FeatureSpec, ScoreSpec, SegmentSpec
from sync.config.models import ScoreCfg, TenantCfg
from sync.run import reuse as R
from sync.run.scoring_frames import (  # re-exported: callers read the frames through the scorer
    EVENT_COLUMNS as EVENT_COLUMNS,
)
from sync.run.scoring_frames import ORDER_COLUMN as ORDER_COLUMN
from sync.run.scoring_frames import event_frame as event_frame
from sync.run.scoring_frames import frames as frames
from sync.run.scoring_frames import time_order as time_order
from sync.run.scoring_frames import wanted_properties as wanted_properties
from sync.run.scoring_frames import without_own_tags as without_own_tags
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
    warnings: list[str] = field(default_factory=list)  # empty segments and why, contacts that cannot be scored
    fairness: dict[str, Any] = field(default_factory=dict)  # pushed segment -> attribute -> rates by group
    reused: str = ""  # why the stored scores and segments were reused instead of computed (empty: computed)
    mark: str | None = None  # what to store with these scores and segments once saved (sync.run.reuse)
    changed: list[str] = field(default_factory=list)  # the inputs that changed since the last scoring (computed)


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
        activity_types=tuple(cfg.activity_types),
        transaction_types=tuple(cfg.transaction_types),
        features=FeatureSpec(
            numeric_properties=tuple(tenant.features.numeric_properties),
            categorical_properties=tuple(tenant.features.categorical_properties),
            exclude_properties=tuple(tenant.features.exclude_properties),
            sensitive_attributes=tuple(tenant.features.sensitive_attributes),
            household_column=HOUSEHOLD_PROPERTY,
            household_value_property=tenant.features.household_value_property,
        ),
    )


def segment_specs(tenant: TenantCfg) -> list[SegmentSpec]:
    return [SegmentSpec(s.name, s.score, s.top_percent, s.min, s.max, s.cluster) for s in tenant.segments]


def _spec_fingerprint(spec: ScoreSpec) -> dict[str, Any]:
    return dataclasses.asdict(spec)


def model_for(spec: ScoreSpec, directory: Path, contacts: pd.DataFrame, events: pd.DataFrame, as_of: pd.Timestamp,
              retrain: bool) -> tuple[TrainedModel | InsufficientData, bool]:
    """Reuse the persisted model unless asked to retrain, it is missing, its spec changed, it predates the gate,
    or it reads a property that is no longer a model input (:func:`inputs_gone`).

    A newly trained model is backtested and gated once (:mod:`scoring.gate`); the verdict is kept
    in its metrics so a reused model carries it too.
    """
    previous: TrainedModel | None = None
    if (directory / "model.pkl").exists():
        try:
            previous = load_model(directory)
        except Exception as exc:
            log.warning("score %s: cannot reuse the saved model (%s); retraining", spec.name, exc)
    if previous is not None and not retrain:
        gone = inputs_gone(previous, contacts, as_of)
        if _spec_fingerprint(previous.spec) == _spec_fingerprint(spec) and "gate" in previous.metrics and not gone:
            return previous, True
        if gone:
            log.info("score %s: the saved model reads %s, which are no longer model inputs; retraining",
                     spec.name, ", ".join(gone))
        else:
            log.info("score %s: the spec changed since the model was trained (or it was never gated); retraining",
                     spec.name)
    model = train(spec, contacts, events, as_of=as_of)
    if isinstance(model, TrainedModel):
        if spec.kind == "cluster" and previous is not None and previous.spec.kind == "cluster":
            align_names(model.info, previous.info)  # a cluster keeps its name across refits
        model.metrics.update(backtest_summary(spec, contacts, events))
        save_model(model, directory)
    return model, False


def inputs_gone(model: TrainedModel, contacts: pd.DataFrame, as_of: pd.Timestamp) -> list[str]:
    """Contact properties a saved model reads that the input rules no longer select, e.g. a date kept as text
    (:data:`scoring.discovery.DATE_TEXT`) in a model trained before that rule. Predicting would leave them
    blank for everyone, so such a model is retrained once rather than reused."""
    feats = model.spec.features
    read = [c for c in model.feature_names if c in contacts.columns]
    if not read or feats.numeric_properties or feats.categorical_properties:
        return []  # declared inputs are used as given
    exclude = [model.spec.outcome_property] if model.spec.outcome_property else []
    frame = eligible_contacts(contacts[list(dict.fromkeys(["contact_id", "created_at", *read]))], as_of)
    numeric, categorical = select_properties(frame, feats, exclude)
    kept = {*numeric, *categorical}
    return [c for c in read if c not in kept]


def backtest_summary(spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame) -> dict[str, Any]:
    """Out-of-sample figures of the model and of the naive baseline, and the gate's verdict on them."""
    from core.errors import InputError
    from scoring.backtest import backtest

    try:
        report = backtest(spec, contacts, events if not events.empty else None)
    except InputError as exc:
        verdict = GateVerdict(spec.name, False, [f"no out-of-sample test possible: {exc}"])
        return {"backtest": f"not possible: {exc}", "gate": verdict.to_dict()}
    except Exception as exc:  # fail closed: a score whose test broke is not used, and the run goes on
        log.warning("score %s: the backtest failed (%s: %s); the score is not used", spec.name,
                    type(exc).__name__, exc)
        verdict = GateVerdict(spec.name, False, [f"the out-of-sample test failed: {type(exc).__name__}: {exc}"])
        return {"backtest": "failed", "gate": verdict.to_dict()}
    verdict = gate(report)
    out: dict[str, Any] = {"gate": verdict.to_dict()}
    if not report.sufficient:
        out["backtest"] = "insufficient data for an out-of-sample test"
        return out
    out.update({"backtest_roc_auc": report.model.get("roc_auc"), "baseline_roc_auc": report.baseline.get("roc_auc"),
                "backtest_lift_top_decile": report.model.get("lift_top_decile"),
                "gain_over_baseline": report.extra.get("gain_over_baseline")})
    for key in ("silhouette", "stability"):
        if key in report.model:
            out[key] = report.model[key]
    if report.extra.get("proxies"):
        out["proxies"] = report.extra["proxies"][:5]
    return out


def not_used(metrics: dict[str, Any]) -> str | None:
    """Why a trained model must not cut segments (the gate's reasons), or None. Confident noise is worse than none."""
    verdict = metrics.get("gate")
    if not isinstance(verdict, dict):
        return "not gated: retrain the model"
    if verdict.get("passed"):
        return None
    return "not used: " + "; ".join(verdict.get("reasons") or ["failed the gate"])


def model_info(model: TrainedModel, reused: bool) -> dict[str, Any]:
    """What a run report says about a model: reused or trained, when, and its metrics (with the gate)."""
    return {"reused": reused, "trained_at": model.trained_at.isoformat(), "metrics": model.metrics}


def score_tenant(store: Store, tenant: TenantCfg, model_dir: Path, allowed: set[str], *,
                 retrain: bool = False, reuse: bool = False) -> ScoreResult:
    """Score every profiling-allowed contact of a tenant and cut the segments (holdout excluded).

    With ``reuse`` (and not ``retrain``) the stored scores and segments are returned instead when nothing
    scoring reads changed since they were computed (:mod:`sync.run.reuse`); ``result.mark`` is what to store
    with newly computed ones.
    """
    fixed_mmap_threshold()  # scoring's big arrays go back to the system when freed (core.heap)
    changed: list[str] = []
    if reuse and not retrain and tenant.scores:
        mark = R.read_mark(store.scoring_mark(tenant.id))
        if mark is not None:
            parts, no_email = R.fingerprint(store, tenant, model_dir, allowed, mark["columns"], without_own_tags)
            changed = R.changed_inputs(mark, parts)
            if not changed:
                try:
                    return reused_result(store, tenant, allowed, mark["summary"], no_email)
                except (KeyError, TypeError, ValueError) as exc:  # a mark this code cannot read: score in full
                    changed = [f"unreadable mark ({exc})"]
            log.info("tenant %s: scoring in full: changed since the last scoring: %s", tenant.id, ", ".join(changed))
    result = ScoreResult(changed=changed)
    contacts, events = frames(store, tenant, allowed)
    result.scored = len(contacts)
    missing = no_email_warning(store, tenant)
    if missing:
        result.warnings.append(missing)
    if contacts.empty or not tenant.scores:
        result.assignment = SegmentAssignment(holdout_percent=tenant.holdout_percent)
        return result
    as_of = default_as_of(events if not events.empty else None)
    result.as_of = as_of.isoformat()
    inputs: list[str] = []  # the models' input columns (what the next run's fingerprint covers)
    for cfg in tenant.scores:
        spec = score_spec(cfg, tenant)
        model, reused = model_for(spec, model_dir / tenant.id / cfg.name, contacts, events, as_of, retrain)
        if isinstance(model, InsufficientData):
            result.verdicts[cfg.name] = f"insufficient data: {model.reason}"
            result.scores[cfg.name] = pd.Series(dtype=float)
            continue
        inputs += model.feature_names
        for proxy in model.metrics.get("proxies", [])[:3]:
            result.warnings.append(f"proxy screen: score {cfg.name} uses {proxy['input']}, which alone tells "
                                   f"{proxy['attribute']} = {proxy['group']} apart (ROC AUC {proxy['roc_auc']})")
        weak = not_used(model.metrics)
        if weak:
            result.verdicts[cfg.name] = weak
            result.scores[cfg.name] = pd.Series(dtype=float)
            result.models[cfg.name] = model_info(model, reused)
            continue
        values = predict(model, contacts, events, as_of=as_of)
        values.index = values.index.astype(str)
        if cfg.kind == "cluster":
            result.clusters[cfg.name] = values
        else:
            result.scores[cfg.name] = values.astype(float)
        result.models[cfg.name] = model_info(model, reused)
    result.assignment = assign_segments(result.scores, segment_specs(tenant), tenant.id, tenant.holdout_percent,
                                        result.clusters)
    result.holdout_ids = R.holdout_ids(tenant, contacts["contact_id"])  # the same rule a reused scoring applies
    check_fairness(tenant, contacts, result)
    result.warnings += empty_segment_warnings(tenant, result)
    for warning in result.warnings:
        log.warning("tenant %s: %s", tenant.id, warning)
    del contacts, events
    columns = R.read_columns(tenant, inputs)
    parts, _ = R.fingerprint(store, tenant, model_dir, allowed, columns, without_own_tags)
    result.mark = R.make_mark(parts, columns, summary_of(result, bool(missing)))
    return result


def summary_of(result: ScoreResult, no_email_first: bool) -> dict[str, Any]:
    """What a reused scoring shows again: everything of ``result`` but the per-contact scores and members, which
    the store keeps (the contacts-without-email warning is counted again each run)."""
    assignment = result.assignment or SegmentAssignment()
    return {"scored_at": utcnow().isoformat(), "as_of": result.as_of, "scored": result.scored,
            "numeric": list(result.scores), "clusters": list(result.clusters), "verdicts": result.verdicts,
            "models": result.models, "warnings": result.warnings[1:] if no_email_first else result.warnings,
            "fairness": result.fairness, "segments": list(assignment.members), "thresholds": assignment.thresholds}


def reused_result(store: Store, tenant: TenantCfg, allowed: set[str], summary: dict[str, Any],
                  no_email: int) -> ScoreResult:
    """The stored scores and segments as a :class:`ScoreResult`, with what the mark kept for the report."""
    result = ScoreResult(verdicts=dict(summary["verdicts"]), as_of=str(summary["as_of"]),
                         scored=int(summary["scored"]), fairness=dict(summary["fairness"]))
    result.models = {name: {**info, "reused": True} for name, info in dict(summary["models"]).items()}
    result.scores, result.clusters = R.stored_scores(store, tenant.id, list(summary["numeric"]),
                                                     list(summary["clusters"]))
    result.assignment = R.stored_assignment(store, tenant, summary)
    result.holdout_ids = R.holdout_ids(tenant, allowed)
    missing = no_email_text(no_email)
    result.warnings = [*([missing] if missing else []), *summary["warnings"]]
    result.reused = (f"the scores and segments computed at {summary['scored_at']} were reused: nothing scoring "
                     "reads changed since (config, models, consent to profiling, events, contacts' inputs)")
    log.info("tenant %s: %s", tenant.id, result.reused)
    for warning in result.warnings:
        log.warning("tenant %s: %s", tenant.id, warning)
    return result


def check_fairness(tenant: TenantCfg, contacts: pd.DataFrame, result: ScoreResult) -> None:
    """Fairness of the segments about to be pushed; with ``fairness: block`` a breaching segment is emptied."""
    attrs = tenant.features.sensitive_attributes
    if not attrs or result.assignment is None:
        return
    ids = contacts["contact_id"].astype(str)
    population = pd.Index(ids[~ids.isin(result.holdout_ids)].to_numpy())
    result.fairness = segment_fairness(result.assignment.members, population, contacts, attrs, result.scores,
                                       {s.name: s.score for s in tenant.segments})
    for line in breaches(result.fairness):
        result.warnings.append(line)
    if tenant.fairness != "block":
        return
    for segment, per_attr in result.fairness.items():
        if any(res.get("passes_four_fifths") is False for res in per_attr.values()):
            result.assignment.members[segment] = []
            result.warnings.append(f"fairness: segment {segment} is not pushed this run (fairness: block)")


def no_email_warning(store: Store, tenant: TenantCfg) -> str | None:
    """Contacts without an email cannot be checked against consent, so they are never scored: say how many."""
    return no_email_text(sum(1 for c in store.contact_stream(tenant.id) if not c["email"]))


def no_email_text(missing: int) -> str | None:
    if not missing:
        return None
    return (f"{missing} contact(s) have no email address: consent cannot be checked for them, so they are not "
            "scored or pushed")


def empty_segment_warnings(tenant: TenantCfg, result: ScoreResult) -> list[str]:
    """One warning per segment that selects nobody, with the reason (an unused score, a threshold, a cluster name)."""
    out: list[str] = []
    members = result.assignment.members if result.assignment else {}
    for seg in tenant.segments:
        if members.get(seg.name):
            continue
        why: str
        if seg.score in result.verdicts:
            why = f"its score {seg.score} is {result.verdicts[seg.score]}"
        elif seg.cluster is not None:
            names = sorted({str(v) for v in result.clusters.get(seg.score, pd.Series(dtype=object))})
            why = f"no contact is in cluster {seg.cluster!r}; the clusters are: {', '.join(names) or 'none'}"
        else:
            values = result.scores.get(seg.score, pd.Series(dtype=float))
            top = f"{values.max():.3f}" if len(values) else "none"
            why = (f"no contact passes the rule (min {seg.min}, max {seg.max}, top {seg.top_percent}%); "
                   f"the highest {seg.score} score is {top}")
        out.append(f"segment {seg.name} is empty: {why}")
    return out

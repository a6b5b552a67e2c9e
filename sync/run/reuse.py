"""Reusing the last scoring when nothing it reads has changed.

Re-reading a whole book's events and re-scoring every contact is most of a no-change run. The scores are
a function of a few inputs, so a run that finds all of them as they were when the stored scores and segments
were computed reuses those instead:

- the scoring config (scores, segments, features, holdout, fairness, the tag prefix and segment property);
- the persisted models (the bytes of every file in each score's model directory);
- who may be profiled (the consent gate's allowed set, as of this run);
- the stored events (the store's ``events`` counter, raised in the transaction of every new or changed event);
- the contacts: id, email, creation time and the property values scoring reads, after segsync's own tags are
  removed (:func:`sync.run.scorer.without_own_tags`) - the models' input columns and the columns read for time
  order, households, outcomes and fairness;
- the stored property changes of those columns (count and latest time written).

A mismatch anywhere, a missing or unreadable mark, ``--retrain`` or ``--full-refresh`` means a full scoring:
a stale reuse would push wrong segments, an unneeded rescore only costs time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from connectors.base import HOUSEHOLD_PROPERTY
from scoring.segments import SegmentAssignment, holdout
from sync.config.models import TenantCfg
from sync.store.interface import Store

FORMAT = 1  # raise when what the fingerprint covers or how scoring works changes: old marks stop matching


def fixed_columns(tenant: TenantCfg) -> set[str]:
    """Properties scoring reads whatever the models are: time order, households, outcomes, fairness, declared."""
    feats = tenant.features
    names = {HOUSEHOLD_PROPERTY, "_source_row", *feats.numeric_properties, *feats.categorical_properties,
             *feats.sensitive_attributes}
    names |= {s.outcome.property for s in tenant.scores if s.outcome and s.outcome.property}
    for extra in (feats.time_column, feats.household_value_property):
        if extra:
            names.add(extra)
    return names


def _config(tenant: TenantCfg) -> Any:
    return {"tenant": tenant.id, "scores": [s.model_dump(mode="json") for s in tenant.scores],
            "segments": [s.model_dump(mode="json") for s in tenant.segments],
            "features": tenant.features.model_dump(mode="json"), "holdout": tenant.holdout_percent,
            "fairness": tenant.fairness, "tag_prefix": tenant.push.tag_prefix,
            "crm_property": tenant.push.crm_property}


def _model_files(directory: Path, tenant: TenantCfg) -> dict[str, dict[str, str]]:
    """score -> file name -> sha256 of every file in its model directory (none: no model saved)."""
    out: dict[str, dict[str, str]] = {}
    for cfg in tenant.scores:
        folder = directory / tenant.id / cfg.name
        files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        out[cfg.name] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    return out


def fingerprint(store: Store, tenant: TenantCfg, model_dir: Path, allowed: Iterable[str],
                columns: list[str], without_own_tags: Callable[[Any, str], Any]) -> tuple[dict[str, str], int]:
    """A digest of each input scoring reads (see the module docstring), by name, and the live contacts without an
    email (counted on the same pass). ``without_own_tags`` is the scorer's rule for what of a value is an input."""
    parts: dict[str, str] = {}

    def part(name: str, value: Any) -> None:
        text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
        parts[name] = hashlib.sha256(text.encode()).hexdigest()

    part("format", FORMAT)
    part("config", _config(tenant))
    part("models", _model_files(model_dir, tenant))
    part("allowed", hashlib.sha256("\n".join(sorted(allowed)).encode()).hexdigest())
    part("events", store.data_version(tenant.id, "events"))
    part("columns", columns)
    part("snapshots", store.snapshot_stamp(tenant.id, columns))
    prefix = tenant.push.tag_prefix
    no_email = 0
    contacts = hashlib.sha256()
    loads = json.loads
    for cid, email, created, properties in store.contact_texts(tenant.id):
        no_email += not email
        get = (loads(properties) if properties else {}).get
        values = [get(k) for k in columns]
        if list in map(type, values):  # only a list (of tags) can hold segsync's own; anything else is as read
            values = [without_own_tags(v, prefix) for v in values]
        contacts.update(repr((cid, email, created, values)).encode())
    parts["contacts"] = contacts.hexdigest()
    return parts, no_email


def changed_inputs(mark: dict[str, Any], parts: dict[str, str]) -> list[str]:
    """The inputs whose digest differs from the mark's (all of them when the mark has none): empty = reuse."""
    stored = mark.get("parts")
    if not isinstance(stored, dict):
        return sorted(parts)
    return [name for name in parts if stored.get(name) != parts[name]]


def read_columns(tenant: TenantCfg, feature_names: list[str]) -> list[str]:
    """The property columns a scoring read: ``feature_names`` (the models' inputs) and :func:`fixed_columns`.

    A score with no model (insufficient data) adds none: whether there is enough data to train depends on the
    events, the creation times, the allowed set and a labelled outcome's property (all covered), never on the
    other properties, so the same inputs give the same verdict again."""
    return sorted(fixed_columns(tenant) | set(feature_names))


def make_mark(parts: dict[str, str], columns: list[str], summary: dict[str, Any]) -> str:
    """The mark stored with the scores and segments: the inputs' digests, the columns they cover, and what the run
    report says about the scoring (models, verdicts, warnings, fairness, thresholds) to show it again."""
    return json.dumps({"format": FORMAT, "parts": parts, "columns": columns, "summary": summary},
                      sort_keys=True, default=_plain)


def _plain(value: Any) -> Any:
    """A numpy number as the Python one it holds (metrics come from numpy); anything else as text."""
    return value.item() if isinstance(value, np.generic) else str(value)


def read_mark(raw: str | None) -> dict[str, Any] | None:
    """The stored mark, or None when there is none or it is of another format or unreadable."""
    if not raw:
        return None
    try:
        mark = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(mark, dict) or mark.get("format") != FORMAT or not isinstance(mark.get("summary"), dict):
        return None
    columns = mark.get("columns")
    if not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
        return None
    return mark


def stored_assignment(store: Store, tenant: TenantCfg, summary: dict[str, Any]) -> SegmentAssignment:
    """The segment assignment as saved (members and holdouts), with the thresholds the mark kept."""
    names = list(summary.get("segments") or [])
    members: dict[str, list[str]] = {n: [] for n in names}
    held: dict[str, list[str]] = {}
    for row in store.segment_members(tenant.id):
        if row["segment"] not in members:
            continue
        (held.setdefault(row["segment"], []) if row["holdout"] else members[row["segment"]]).append(row["contact_id"])
    for name in names:
        members[name].sort()
        held.setdefault(name, []).sort()
    return SegmentAssignment(members=members, holdout=held, thresholds=dict(summary.get("thresholds") or {}),
                             holdout_percent=tenant.holdout_percent)


def stored_scores(store: Store, tenant_id: str, numeric: list[str],
                  clusters: list[str]) -> tuple[dict[str, pd.Series], dict[str, pd.Series]]:
    """The saved scores by name (numbers) and the saved cluster labels by name, indexed by contact id."""
    values: dict[str, dict[str, float]] = {n: {} for n in numeric}
    labels: dict[str, dict[str, str]] = {n: {} for n in clusters}
    for cid, name, value, label in store.score_rows(tenant_id):
        if name in values and value is not None:
            values[name][cid] = float(value)
        elif name in labels and label is not None:
            labels[name][cid] = str(label)
    return ({n: pd.Series(v, dtype=float) for n, v in values.items()},
            {n: pd.Series(v, dtype=object) for n, v in labels.items()})


def holdout_ids(tenant: TenantCfg, allowed: Iterable[str]) -> set[str]:
    return {c for c in allowed if holdout(tenant.id, c, tenant.holdout_percent)}

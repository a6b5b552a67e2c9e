"""The cluster kind: behavioural groups with names a person can read ("high web intent, low email").

KMeans runs on log-scaled, standardised behaviour features (counts are heavy-tailed; without the
log a handful of power users would each get a cluster). A cluster is named after the two feature
groups whose centroid sits furthest from the population mean, in standard deviations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from scoring.base import BacktestReport, InsufficientData, Options, TrainedModel, default_as_of, features_for
from scoring.features import eligible_contacts, extra_event_types, to_utc
from scoring.specs import ScoreSpec

# Readable group -> the features that express it (sign -1: smaller value = "higher" group).
GROUPS: dict[str, list[tuple[str, int]]] = {
    "web intent": [("high_intent_views_90d", 1), ("page_views_90d", 1), ("visit_days_90d", 1)],
    "email": [("opens_90d", 1), ("clicks_90d", 1), ("open_rate_90d", 1)],
    "deposits": [("txn_count", 1), ("txn_value_sum", 1), ("txn_count_90d", 1)],
    "recent activity": [("days_since_activity", -1)],
}
FEATURES = [f for members in GROUPS.values() for f, _ in members]
NEVER_DAYS = 3650.0  # "never active" sorts as ten years ago
MAX_FIT_ROWS = 200_000
THRESHOLD = 0.25  # standard deviations before a group counts as high/low
MIN_PER_CLUSTER = 20  # contacts per requested cluster before clustering means anything
MIN_BEHAVIOUR_COLUMNS = 2  # behaviour features that vary; fewer and there is nothing to group people by
QUALITY_ROWS = 5000  # rows sampled for silhouette and stability (both are quadratic or refit-heavy)


def cluster_matrix(features: pd.DataFrame) -> np.ndarray:
    """log1p counts, recency with "never" as ten years; columns in :data:`FEATURES` order."""
    cols = []
    for name in FEATURES:
        col = features[name].to_numpy(np.float64) if name in features.columns else np.zeros(len(features))
        if name == "days_since_activity":
            col = np.minimum(np.nan_to_num(col, nan=NEVER_DAYS), NEVER_DAYS)
        else:
            col = np.nan_to_num(col, nan=0.0)
        cols.append(np.log1p(np.maximum(col, 0.0)) if not name.endswith("_rate_90d") else col)
    return np.column_stack(cols)


def name_clusters(centers_z: np.ndarray) -> list[str]:
    """Readable, unique names from standardised centroids."""
    names = []
    for center in centers_z:
        scores = {}
        for group, members in GROUPS.items():
            idx = [FEATURES.index(f) for f, _ in members]
            scores[group] = float(np.mean([center[i] * sign for i, (_, sign) in zip(idx, members, strict=True)]))
        ranked = sorted(scores.items(), key=lambda kv: -abs(kv[1]))
        parts = [f"{'high' if s > 0 else 'low'} {g}" for g, s in ranked[:2] if abs(s) >= THRESHOLD]
        names.append(", ".join(parts) if parts else "average")
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return unique


def fit_clusters(features: pd.DataFrame, n_clusters: int, seed: int = 0) -> tuple[Pipeline, dict[str, Any]]:
    """Fit scaler + KMeans on a sample (at most 200k rows); return the pipeline and cluster info."""
    X = cluster_matrix(features)
    rng = np.random.default_rng(seed)
    fit_rows = X if len(X) <= MAX_FIT_ROWS else X[rng.choice(len(X), MAX_FIT_ROWS, replace=False)]
    pipe = make_pipeline(StandardScaler(), KMeans(n_clusters=n_clusters, n_init=4, random_state=seed))
    pipe.fit(fit_rows)
    centers = pipe[-1].cluster_centers_
    names = name_clusters(centers)
    labels = pipe.predict(fit_rows)
    sizes = np.bincount(labels, minlength=n_clusters)
    profile = {names[k]: {f: round(float(v), 3) for f, v in zip(FEATURES, centers[k], strict=True)}
               for k in range(n_clusters)}
    info = {"names": names, "sizes": [int(s) for s in sizes], "centroids_z": profile, "features": FEATURES}
    return pipe, info


def assign_clusters(pipe: Pipeline, info: dict[str, Any], features: pd.DataFrame) -> pd.Series:
    """The readable cluster name of each contact."""
    labels = pipe.predict(cluster_matrix(features))
    return pd.Series(np.asarray(info["names"], dtype=object)[labels], index=features.index)


def too_few(spec: ScoreSpec, features: pd.DataFrame) -> str | None:
    """Why these contacts cannot be split into ``spec.n_clusters`` groups, or None.

    Too few rows, or no behaviour: with no events every contact has the same features and KMeans
    would put everyone in one cluster and report the others as empty - a refusal, not a result.
    """
    rows = len(features)
    need = spec.n_clusters * MIN_PER_CLUSTER
    if rows < need:
        return f"{rows} contacts; clustering into {spec.n_clusters} groups needs at least {need}"
    varying = int((cluster_matrix(features).std(axis=0) > 0).sum())
    if varying < MIN_BEHAVIOUR_COLUMNS:
        return (f"no behaviour to cluster on: {varying} behaviour feature(s) vary across contacts, need "
                f"{MIN_BEHAVIOUR_COLUMNS} (pull email or web events first)")
    return None


def align_names(info: dict[str, Any], previous: dict[str, Any]) -> None:
    """Give each new cluster the name of the previous model's nearest cluster (one-to-one).

    Names are generated from centroids, and a refit on slightly different data can reorder or
    rename them, which would silently empty a segment defined by cluster name. Matching centroids
    (Hungarian assignment on standardised distance) keeps a cluster's name while it stays itself.
    """
    old = previous.get("centroids_z") or {}
    current = info["centroids_z"]
    if len(old) != len(current) or list(old) == list(current):
        return
    centers = np.array([[current[n][f] for f in FEATURES] for n in info["names"]])
    old_names = list(old)
    old_centers = np.array([[old[n][f] for f in FEATURES] for n in old_names])
    cost = np.linalg.norm(centers[:, None, :] - old_centers[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    names = list(info["names"])
    for r, c in zip(rows, cols, strict=True):
        names[r] = old_names[c]
    info["centroids_z"] = {names[k]: info["centroids_z"][info["names"][k]] for k in range(len(names))}
    info["names"] = names


def quality(X: pd.DataFrame, n_clusters: int, seed: int) -> dict[str, float]:
    """Silhouette of the fitted clusters and their stability across refits on resamples (adjusted Rand)."""
    rng = np.random.default_rng(seed)
    sample = X.iloc[np.sort(rng.choice(len(X), min(len(X), QUALITY_ROWS), replace=False))]
    pipe, _ = fit_clusters(sample, n_clusters, seed)
    M = cluster_matrix(sample)
    labels = pipe.predict(M)
    sil = float(silhouette_score(pipe[:-1].transform(M), labels)) if len(set(labels)) > 1 else 0.0
    aris = []
    for i in range(1, 4):
        half = sample.iloc[np.sort(rng.choice(len(sample), len(sample) // 2, replace=False))]
        refit, _ = fit_clusters(half, n_clusters, seed + i)
        aris.append(float(adjusted_rand_score(labels, refit.predict(M))))
    return {"silhouette": round(sil, 4), "stability": round(float(np.mean(aris)), 4)}


def describe_clusters(spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, *,
                      cutoff: object = None, seed: int = 0) -> BacktestReport:
    """Clusters have no outcome to backtest: report names, sizes and standardised centroids."""
    cut = to_utc(cutoff) if cutoff is not None else default_as_of(events)
    report = BacktestReport(spec.name, spec.kind, "none", window={"features_as_of": cut.isoformat()})
    X = features_for(spec, contacts, events, cut).sort_index()
    reason = too_few(spec, X)
    if reason:
        report.verdict = InsufficientData(spec.name, reason).to_dict()
        return report
    _, info = fit_clusters(X, spec.n_clusters, seed)
    report.model = {"clusters": [{"name": n, "size": s} for n, s in zip(info["names"], info["sizes"], strict=True)],
                    "centroids_z": info["centroids_z"], **quality(X, spec.n_clusters, seed)}
    return report


@dataclass(frozen=True)
class Cluster:
    """The cluster kind: a readable group name per contact, no outcome."""

    uses_properties: bool = False  # clusters are cut from behaviour alone

    def train(self, spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, cut: pd.Timestamp,
              options: Options) -> TrainedModel | InsufficientData:
        """Scaler + KMeans on behaviour as of ``cut``; too few contacts is a verdict."""
        now = datetime.now(UTC)
        # Sorted by id: KMeans depends on row order, and the store's order is not the source's.
        X = features_for(spec, contacts, events, cut).sort_index()
        reason = too_few(spec, X)
        if reason:
            return InsufficientData(spec.name, reason)
        est, info = fit_clusters(X, spec.n_clusters, options.seed)
        return TrainedModel(spec, cut, now, None, est, extra_event_types(events, cut), info=info)

    def predict(self, model: TrainedModel, contacts: pd.DataFrame, events: pd.DataFrame | None,
                cut: pd.Timestamp) -> pd.Series:
        """The cluster name of every contact existing at ``cut``."""
        features = features_for(model.spec, eligible_contacts(contacts, cut), events, cut, model.extra_types)
        return assign_clusters(model.estimator, model.info, features).rename(model.spec.name)

    def backtest(self, spec: ScoreSpec, contacts: pd.DataFrame, events: pd.DataFrame | None, cutoff: object,
                 options: Options) -> BacktestReport:
        """See :func:`describe_clusters`."""
        return describe_clusters(spec, contacts, events, cutoff=cutoff, seed=options.seed)

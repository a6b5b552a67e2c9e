"""Behavioural clusters with names a person can read ("high web intent, low email").

KMeans runs on log-scaled, standardised behaviour features (counts are heavy-tailed; without the
log a handful of power users would each get a cluster). A cluster is named after the two feature
groups whose centroid sits furthest from the population mean, in standard deviations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

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
            scores[group] = float(np.mean([center[i] * sign for i, (_, sign) in zip(idx, members)]))
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
    profile = {names[k]: {f: round(float(v), 3) for f, v in zip(FEATURES, centers[k])} for k in range(n_clusters)}
    info = {"names": names, "sizes": [int(s) for s in sizes], "centroids_z": profile, "features": FEATURES}
    return pipe, info


def assign_clusters(pipe: Pipeline, info: dict[str, Any], features: pd.DataFrame) -> pd.Series:
    """The readable cluster name of each contact."""
    labels = pipe.predict(cluster_matrix(features))
    return pd.Series(np.asarray(info["names"], dtype=object)[labels], index=features.index)

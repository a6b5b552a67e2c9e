"""Segments cut from scores, a deterministic holdout kept out of them, and lift against it.

The holdout is ``sha256(tenant + ":" + contact_id)`` mapped to [0, 100): stable across runs,
machines and Python versions (``hash()`` is salted per process), and independent per tenant.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.errors import InputError
from scoring.specs import SegmentSpec


def holdout_bucket(tenant_id: str, contact_id: str) -> float:
    """Position of a contact in [0, 100) for this tenant, from the first 8 bytes of a sha256."""
    digest = hashlib.sha256(f"{tenant_id}:{contact_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


def holdout(tenant_id: str, contact_id: str, percent: float) -> bool:
    """True when the contact belongs to the tenant's holdout of ``percent`` percent."""
    if not 0 <= percent <= 100:
        raise InputError(f"holdout percent must be between 0 and 100, got {percent}")
    return holdout_bucket(tenant_id, contact_id) < percent


@dataclass
class SegmentAssignment:
    """Per segment: who is in it (holdout excluded) and who would have been but is held out."""

    members: dict[str, list[str]] = field(default_factory=dict)
    holdout: dict[str, list[str]] = field(default_factory=dict)
    thresholds: dict[str, float | None] = field(default_factory=dict)  # score cut-off actually used
    holdout_percent: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Counts and thresholds per segment (ids omitted: they are personal data)."""
        return {name: {"members": len(ids), "holdout": len(self.holdout.get(name, [])),
                       "threshold": self.thresholds.get(name)} for name, ids in self.members.items()}


def _select(spec: SegmentSpec, scores: pd.Series) -> tuple[pd.Index, float | None]:
    if spec.cluster is not None:
        target = spec.cluster
        return scores.index[scores.astype(str).to_numpy() == str(target)], None
    values = pd.to_numeric(scores, errors="coerce")
    values = values[values.notna()]
    mask = pd.Series(True, index=values.index)
    threshold: float | None = None
    if spec.top_percent is not None:
        k = int(math.floor(len(values) * spec.top_percent / 100))
        # Rank with a stable order so ties at the boundary split the same way every run.
        order = np.argsort(-values.to_numpy(float), kind="stable")[:k]
        top = pd.Series(False, index=values.index)
        top.iloc[order] = True
        mask &= top
        threshold = float(values.iloc[order[-1]]) if k else None
    if spec.min is not None:
        mask &= values >= spec.min
        threshold = spec.min if threshold is None else max(threshold, spec.min)
    if spec.max is not None:
        mask &= values <= spec.max
    return values.index[mask.to_numpy()], threshold


def assign_segments(scores: Mapping[str, pd.Series], specs: Sequence[SegmentSpec], tenant_id: str,
                    holdout_percent: float, clusters: Mapping[str, pd.Series] | None = None) -> SegmentAssignment:
    """Cut every segment from its score (or cluster labels) and split off the holdout.

    ``scores`` / ``clusters`` map a score name to a Series indexed by contact id. Contacts with
    no score (not consented, insufficient data) are simply absent from the Series.
    """
    sources = {**dict(scores), **dict(clusters or {})}
    out = SegmentAssignment(holdout_percent=holdout_percent)
    for spec in specs:
        if spec.score not in sources:
            raise InputError(f"segment {spec.name}: score {spec.score!r} was not computed")
        chosen, threshold = _select(spec, sources[spec.score])
        ids = [str(c) for c in chosen]
        held = [c for c in ids if holdout(tenant_id, c, holdout_percent)]
        held_set = set(held)
        out.members[spec.name] = [c for c in ids if c not in held_set]
        out.holdout[spec.name] = held
        out.thresholds[spec.name] = threshold
    return out


def two_proportion_z(success_a: int, n_a: int, success_b: int, n_b: int) -> tuple[float | None, float | None]:
    """(z, two-sided p-value) for rate A vs rate B with the pooled standard error."""
    if n_a == 0 or n_b == 0:
        return None, None
    pooled = (success_a + success_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return None, None
    z = (success_a / n_a - success_b / n_b) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def lift_report(assignment_members: Mapping[str, Iterable[str]], holdout_members: Mapping[str, Iterable[str]],
                outcomes: pd.Series | Mapping[str, Any] | Iterable[str], alpha: float = 0.05) -> dict[str, Any]:
    """Outcome rate of each segment's members vs its holdout, with counts and a two-proportion z-test.

    ``outcomes``: contact ids that had the outcome (an iterable), or a Series/mapping id -> 0/1.
    """
    if isinstance(outcomes, pd.Series):
        hit = set(outcomes.index[outcomes.astype(bool).to_numpy()].astype(str))
    elif isinstance(outcomes, Mapping):
        hit = {str(k) for k, v in outcomes.items() if v}
    else:
        hit = {str(c) for c in outcomes}
    report: dict[str, Any] = {}
    for name, members in assignment_members.items():
        m = [str(c) for c in members]
        h = [str(c) for c in holdout_members.get(name, [])]
        sm, sh = sum(c in hit for c in m), sum(c in hit for c in h)
        rate_m = sm / len(m) if m else None
        rate_h = sh / len(h) if h else None
        z, p = two_proportion_z(sm, len(m), sh, len(h))
        report[name] = {
            "members": len(m), "member_outcomes": sm, "member_rate": rate_m,
            "holdout": len(h), "holdout_outcomes": sh, "holdout_rate": rate_h,
            "lift": (rate_m / rate_h) if rate_m is not None and rate_h else None,
            "difference": (rate_m - rate_h) if rate_m is not None and rate_h is not None else None,
            "z": z, "p_value": p, "significant": bool(p is not None and p < alpha),
        }
    return report


def render_lift_report(report: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table of a :func:`lift_report`."""
    def f(v: Any, pct: bool = False) -> str:
        if v is None:
            return "-"
        return f"{v:.1%}" if pct else (f"{v:.3g}" if isinstance(v, float) else str(v))

    lines = ["| segment | members | member rate | holdout | holdout rate | lift | z | p | significant |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in report.items():
        lines.append(f"| {name} | {r['members']} | {f(r['member_rate'], True)} | {r['holdout']} | "
                     f"{f(r['holdout_rate'], True)} | {f(r['lift'])} | {f(r['z'])} | {f(r['p_value'])} | "
                     f"{'yes' if r['significant'] else 'no'} |")
    return "\n".join(lines) + "\n"

"""Lift of a segment: members vs the held-out contacts, over time, from what the store holds.

The outcome follows the segment's score (as ``segsync report lift`` does): the outcome event of a
propensity score, "no activity" for churn, a deposit for lifetime value. Rates are cumulative
since the segments were assigned, with Wilson 95% intervals; the minimum detectable effect is the
difference the current group sizes could detect (two-sided 5%, power 80%). Until the outcome
window has passed the numbers are partial, and the page says so instead of declaring a winner.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any, cast

from core import times
from scoring.segments import lift_report
from sync.config.models import ScoreCfg, SegmentCfg, TenantCfg
from sync.store import Store

Z95 = 1.959964
Z_POWER80 = 0.841621
MAX_POINTS = 26


def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (sane at 0 and n, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def minimum_detectable_effect(n_members: int, n_holdout: int, base_rate: float) -> float | None:
    """The smallest difference in rates these group sizes detect (alpha 0.05 two-sided, power 0.8)."""
    if n_members == 0 or n_holdout == 0:
        return None
    p = min(max(base_rate, 0.01), 0.99)  # a zero rate would claim any effect is detectable
    return (Z95 + Z_POWER80) * math.sqrt(p * (1 - p) * (1 / n_members + 1 / n_holdout))


def _aware(value: datetime) -> datetime:
    return times.as_utc(value)  # value: what the driver returns for a timestamp column (a datetime)


def _outcome(score: ScoreCfg) -> tuple[str, str | None]:
    if score.kind == "churn":
        return "stayed inactive (no activity since assignment)", None
    if score.kind == "propensity" and score.outcome and score.outcome.event:
        return f"a {score.outcome.event} event", score.outcome.event
    return "a deposit event", "deposit"


def _window(score: ScoreCfg) -> timedelta:
    return timedelta(days=score.inactive_days if score.kind == "churn" else score.horizon_days)


def segment_lift(store: Store, tenant: TenantCfg, segment: SegmentCfg, now: datetime) -> dict[str, Any]:
    """Everything the lift page of one segment shows; ``missing`` says why a part cannot be shown."""
    score = next(s for s in tenant.scores if s.name == segment.score)
    label, event_type = _outcome(score)
    rows = [r for r in store.segment_members(tenant.id) if r["segment"] == segment.name]
    base: dict[str, Any] = {"segment": segment, "score": score, "outcome": label, "window_days": _window(score).days}
    if not rows:
        return {**base, "missing": "no members assigned yet: run `segsync sync` first"}
    assigned = min(_aware(r["assigned_at"]) for r in rows)
    members = {r["contact_id"] for r in rows if not r["holdout"]}
    held = {r["contact_id"] for r in rows if r["holdout"]}
    closes = assigned + _window(score)
    # First time each contact had the outcome event, and the last activity of each contact, since assignment.
    first_hit: dict[str, datetime] = {}
    first_activity: dict[str, datetime] = {}
    for e in store.events(tenant.id):
        when = _aware(e["occurred_at"])
        if when < assigned:
            continue
        cid = e["contact_id"]
        if cid not in first_activity or when < first_activity[cid]:
            first_activity[cid] = when
        if e["type"] == event_type and (cid not in first_hit or when < first_hit[cid]):
            first_hit[cid] = when
    end = min(now, closes)
    span = max((end - assigned).total_seconds(), 0.0)
    steps = min(MAX_POINTS, max(int(span // 86400), 1))
    points = []
    for i in range(1, steps + 1):
        t = assigned + timedelta(seconds=span * i / steps)
        if score.kind == "churn":
            hit = {c for c in members | held if c not in first_activity or first_activity[c] > t}
        else:
            hit = {c for c, w in first_hit.items() if w <= t}
        m_hits, h_hits = len(members & hit), len(held & hit)
        points.append(
            {
                "day": (t - assigned).total_seconds() / 86400,
                "date": t.date().isoformat(),
                "member_rate": m_hits / len(members) if members else 0.0,
                "member_band": wilson(m_hits, len(members)),
                "holdout_rate": h_hits / len(held) if held else 0.0,
                "holdout_band": wilson(h_hits, len(held)),
            }
        )
    final = points[-1] if points else None
    hits_now = ({c for c in members | held if c not in first_activity} if score.kind == "churn" else set(first_hit))
    summary = lift_report({segment.name: members}, {segment.name: held}, hits_now)[segment.name]
    base_rate = (
        summary["holdout_rate"] if summary["holdout_rate"] is not None else (final["member_rate"] if final else 0.1)
    )
    out = {**base, "assigned": assigned, "closes": closes, "open": now < closes, "members": len(members),
           "holdout": len(held), "points": points, "summary": summary,
           "mde": minimum_detectable_effect(len(members), len(held), cast(float, base_rate)), "base_rate": base_rate}
    if not held:
        out["missing"] = (
            "no held-out contacts in this segment (holdout_percent is 0 or the segment is tiny): "
            "lift cannot be measured"
        )
    return out

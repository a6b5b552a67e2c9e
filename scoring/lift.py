"""Lift of a pushed segment over its holdout, from membership history, with an interval and the power it has.

Each contact is measured over its own window: from when it was *first* assigned to the segment
(scheduled re-runs do not move that date) for the score's window, and only once that window has
passed. The outcome is the one the score predicts - nothing else:

- propensity: the outcome event happened in the window;
- churn: no event of the score's ``activity_types`` (or the explicit churn event happened); campaign
  sends are never activity, the config refuses them;
- ltv: an event of the score's ``transaction_types`` happened;
- clusters and labelled-property outcomes have no event outcome: lift is not measured for them.

The difference of rates gets a 95% Newcombe (Wilson score) interval, and the minimum detectable
effect (80% power, two-sided 5%) says what the current holdout can see at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from scoring.segments import two_proportion_z

Z95 = float(norm.ppf(0.975))
Z_POWER = float(norm.ppf(0.8))
MIN_HOLDOUT = 100  # below this a holdout measures little whatever the effect


@dataclass(frozen=True)
class Outcome:
    """What counts as the outcome within ``window_days`` of assignment.

    ``types``: event types that count; ``absence``: the outcome is that none of them happened (churn).
    ``None`` types: no event outcome (clusters, labelled properties) - ``why`` says so.
    """

    window_days: int
    types: tuple[str, ...] | None
    absence: bool = False
    why: str = ""


def wilson(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return centre - half, centre + half


def difference_interval(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """95% Newcombe hybrid score interval of p1 - p2 (good at small counts and rates near 0 or 1)."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1)
    l2, u2 = wilson(x2, n2)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def minimum_detectable_effect(base_rate: float, n_members: int, n_holdout: int) -> float | None:
    """Smallest rate difference detectable with 80% power at two-sided 5% for these group sizes."""
    if n_members == 0 or n_holdout == 0:
        return None
    p = min(max(base_rate, 1e-3), 1 - 1e-3)
    return (Z95 + Z_POWER) * math.sqrt(p * (1 - p) * (1 / n_members + 1 / n_holdout))


def first_spells(spells: pd.DataFrame, segment: str) -> pd.DataFrame:
    """Each contact's first spell in ``segment`` (contact_id, holdout, first_assigned as UTC)."""
    rows = spells[spells["segment"] == segment].copy()
    rows["first_assigned"] = pd.to_datetime(rows["first_assigned"], utc=True)
    return rows.sort_values("first_assigned").drop_duplicates("contact_id")[["contact_id", "holdout", "first_assigned"]]


def outcomes(cohort: pd.DataFrame, events: pd.DataFrame, outcome: Outcome) -> np.ndarray:
    """1/0 per cohort row: the outcome within the row's own window after ``first_assigned``."""
    assert outcome.types is not None
    ev = events[events["type"].isin(outcome.types)]
    ev = ev.assign(occurred_at=pd.to_datetime(ev["occurred_at"], utc=True))
    joined = cohort[["contact_id", "first_assigned"]].reset_index().merge(ev[["contact_id", "occurred_at"]],
                                                                         on="contact_id")
    window = pd.Timedelta(days=outcome.window_days)
    start = joined["first_assigned"]
    inside = (joined["occurred_at"] >= start) & (joined["occurred_at"] < start + window)
    hit = np.zeros(len(cohort), dtype=int)
    hit[joined.loc[inside, "index"].unique()] = 1
    return 1 - hit if outcome.absence else hit


def advice(mde: float | None, base: float, n_holdout: int) -> str | None:
    """What to do when the holdout is too small to measure anything useful, else None."""
    if mde is None:
        return "no holdout members have a completed window: nothing to compare with yet"
    if n_holdout < MIN_HOLDOUT or mde > max(base, 0.05):
        return (f"the holdout ({n_holdout} people) can only detect a difference of {mde:.1%} or more at a "
                f"{base:.1%} base rate; raise holdout_percent, widen the segment or wait for more members")
    return None


def segment_lift(spells: pd.DataFrame, events: pd.DataFrame, segment: str, outcome: Outcome,
                 now: pd.Timestamp) -> dict[str, Any]:
    """Lift of one segment over its holdout among contacts whose window has passed (see the module docstring)."""
    if outcome.types is None:
        return {"status": "not measurable", "reason": outcome.why}
    first = first_spells(spells, segment)
    window = pd.Timedelta(days=outcome.window_days)
    done = first[first["first_assigned"] + window <= now].reset_index(drop=True)
    waiting = int(len(first) - len(done))
    out: dict[str, Any] = {"window_days": outcome.window_days, "waiting": waiting}
    if waiting:
        out["next_window_closes"] = (first["first_assigned"].min() + window).date().isoformat() if done.empty else None
    members, held = done[~done["holdout"].astype(bool)], done[done["holdout"].astype(bool)]
    if members.empty or held.empty:
        out.update({"status": "window open", "members": len(members), "holdout": len(held)})
        return out
    hit = outcomes(done, events, outcome)
    hm, hh = hit[~done["holdout"].astype(bool).to_numpy()], hit[done["holdout"].astype(bool).to_numpy()]
    xm, xh, nm, nh = int(hm.sum()), int(hh.sum()), len(hm), len(hh)
    low, high = difference_interval(xm, nm, xh, nh)
    _, p_value = two_proportion_z(xm, nm, xh, nh)
    base = xh / nh
    mde = minimum_detectable_effect(base, nm, nh)
    out.update({"status": "complete" if not waiting else "partial", "members": nm, "member_outcomes": xm,
                "member_rate": round(xm / nm, 4), "holdout": nh, "holdout_outcomes": xh, "holdout_rate": round(base, 4),
                "difference": round(xm / nm - base, 4), "ci_low": round(low, 4), "ci_high": round(high, 4),
                "lift": round((xm / nm) / base, 3) if base else None, "p_value": p_value,
                "minimum_detectable_effect": round(mde, 4) if mde is not None else None})
    tip = advice(mde, base, nh)
    if tip:
        out["advice"] = tip
    return out


def outcome_for(kind: str, window_days: int, *, event: str | None = None, labelled: bool = False,
                activity_types: Sequence[str] = (), transaction_types: Sequence[str] = ()) -> Outcome:
    """The lift outcome of a score, defined exactly as the score defines its own."""
    if kind == "cluster":
        return Outcome(window_days, None, why="a cluster has no outcome to measure lift on")
    if labelled:
        return Outcome(window_days, None, why="the outcome is a contact property, not an event: lift needs an event")
    if kind == "churn":
        return Outcome(window_days, (event,)) if event else Outcome(window_days, tuple(activity_types), absence=True)
    if kind == "ltv":
        return Outcome(window_days, tuple(transaction_types))
    return Outcome(window_days, (event,) if event else None, why="no outcome event configured")

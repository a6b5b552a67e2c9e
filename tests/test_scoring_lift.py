"""Lift from segment membership history (scoring.lift, `segsync report lift`).

A scheduled book re-saves its segments every few hours; lift must still complete once each
contact's window (from when it was *first* assigned) has passed, and its interval must cover the
effect planted in the outcomes. Campaign sends never count as activity; a small holdout gets advice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from connectors.base import Contact, EngagementEvent
from scoring.lift import Outcome, difference_interval, minimum_detectable_effect, outcome_for, segment_lift
from sync.store import open_store
from tests.configs import consent_yaml

CONFIG = """version: 1
store: sqlite:///{db}
tenants:
  - id: firm
    crm: {{type: csv, contacts: contacts.csv, output: out.csv}}
    {consent}
    scores:
      - {{name: upgrade, kind: propensity, outcome: {{event: upgrade}}, horizon_days: 30}}
      - {{name: quiet, kind: churn, inactive_days: 30}}
    segments:
      - {{name: likely, score: upgrade, top_percent: 50}}
      - {{name: at_risk, score: quiet, top_percent: 50}}
"""


def planted_book(folder: Path, start: datetime, *, n_members: int = 2000, n_holdout: int = 1000,
                 members_rate: float = 0.30, holdout_rate: float = 0.15) -> None:
    """A store whose segment is re-saved on a schedule, then outcomes at the planted rates inside the window."""
    rng = np.random.default_rng(9)
    store = open_store(f"sqlite:///{folder / 's.db'}")
    n = n_members + n_holdout
    people = [Contact("csv", f"v{i}", f"p{i}@example.com") for i in range(n)]
    events = []
    for i in range(n):
        rate = members_rate if i < n_members else holdout_rate
        if rng.random() < rate:
            events.append(EngagementEvent("csv", f"v{i}", "upgrade", start + timedelta(days=float(rng.uniform(1, 29))),
                                          event_id=f"u{i}"))
        # Every contact is sent a campaign during the window: a send is not activity.
        events.append(EngagementEvent("csv", f"v{i}", "email_sent", start + timedelta(days=3), event_id=f"s{i}"))
        if i % 2:  # half are active (an open) inside the window
            events.append(EngagementEvent("csv", f"v{i}", "email_open", start + timedelta(days=5), event_id=f"o{i}"))
    store.store_page("firm", people, events, None)
    by_vendor = {c["email"]: c["contact_id"] for c in store.contacts("firm")}
    ids = [by_vendor[f"p{i}@example.com"] for i in range(n)]
    members, held = set(ids[:n_members]), set(ids[n_members:])
    for run in range(12):  # every six hours for three days, as a schedule would
        store.save_segments("firm", {"likely": members, "at_risk": members}, {"likely": held, "at_risk": held},
                            at=start + timedelta(hours=6 * run))
    store.close()
    (folder / "contacts.csv").write_text("id,email\n")
    consent = consent_yaml("lift-secret-0123456789")
    (folder / "segsync.yaml").write_text(CONFIG.format(db=folder / "s.db", consent=consent))


def lift_json(folder: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "sync", "report", "lift", "segsync.yaml", "--json"],
                            capture_output=True, text=True, cwd=folder, env={**os.environ, "CI": "true"}, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["firm"]["segments"]


def test_lift_completes_after_the_window_on_a_scheduled_book_and_covers_the_planted_effect(tmp_path):
    start = datetime.now(UTC) - timedelta(days=40)  # the 30-day windows have closed; re-saves went on for 3 days
    planted_book(tmp_path, start)
    segments = lift_json(tmp_path)
    likely = segments["likely"]
    assert likely["status"] == "complete" and likely["waiting"] == 0
    assert (likely["members"], likely["holdout"]) == (2000, 1000)
    assert likely["ci_low"] <= 0.15 <= likely["ci_high"] and likely["ci_low"] > 0
    assert likely["minimum_detectable_effect"] < 0.15 and "advice" not in likely
    at_risk = segments["at_risk"]
    # Churn's outcome is "no activity" (opens, upgrades...): half opened, some upgraded, so about 35% of members
    # and 42.5% of the holdout were inactive. Were the campaign send every contact got counted, it would be 0%.
    assert 0.3 < at_risk["member_rate"] < 0.4 and 0.37 < at_risk["holdout_rate"] < 0.48


def test_lift_waits_while_windows_are_open(tmp_path):
    planted_book(tmp_path, datetime.now(UTC) - timedelta(days=10), n_members=50, n_holdout=20)
    likely = lift_json(tmp_path)["likely"]
    assert likely["status"] == "window open" and likely["waiting"] == 70


def test_a_small_holdout_gets_advice_and_a_large_detectable_effect():
    now = pd.Timestamp.now(tz="UTC")
    first = now - pd.Timedelta(days=100)
    spells = pd.DataFrame({"segment": "top", "contact_id": [f"c{i}" for i in range(220)],
                           "holdout": [i >= 200 for i in range(220)], "first_assigned": first})
    events = pd.DataFrame({"contact_id": [f"c{i}" for i in range(0, 220, 10)], "type": "deposit",
                           "occurred_at": first + pd.Timedelta(days=3)})
    result = segment_lift(spells, events, "top", Outcome(90, ("deposit",)), now)
    assert result["holdout"] == 20 and result["minimum_detectable_effect"] > 0.15  # about 20 points at 10%
    assert "the holdout (20 people) can only detect a difference of" in result["advice"]


def test_interval_and_power_formulas_and_outcome_definitions():
    low, high = difference_interval(300, 1000, 150, 1000)
    assert low < 0.15 < high and low > 0.1 and high < 0.2
    assert 0.18 < minimum_detectable_effect(0.1, 180, 20) < 0.22  # the 2,000-contact example: about 20 points
    assert outcome_for("churn", 90, activity_types=("email_open",)).absence
    assert outcome_for("ltv", 365, transaction_types=("deposit", "transfer")).types == ("deposit", "transfer")
    assert outcome_for("cluster", 90).types is None and outcome_for("propensity", 90, labelled=True).types is None

"""Household features (issue 16): size, members' activity and summed value, from the household id contacts carry.

- the values as of a cutoff, on a small hand-made frame (members created later do not count yet; a contact
  without a household id gets NaN, not a household of one);
- through the CLI on a CSV book with a ``household_id`` column: `segsync score` adds the three columns by
  itself, learns from them (the outcome is driven by the whole household's activity), never uses the id as
  an input, and the model card says which household columns went in.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scoring.households import household_features
from scoring.specs import FeatureSpec
from tests.test_scoring_cli import config, segsync

END = datetime(2025, 6, 1, tzinfo=UTC)


def test_household_columns_as_of_a_cutoff():
    contacts = pd.DataFrame({
        "contact_id": ["a", "b", "c", "d", "e"],
        "created_at": pd.to_datetime([END - timedelta(days=300)] * 4 + [END - timedelta(days=5)], utc=True),
        "household_id": ["h1", "h1 ", "h2", None, "h1"],  # e joins h1 after the cutoff
        "aum": [100.0, 50.0, 10.0, 7.0, 1000.0],
    })
    events = pd.DataFrame({"contact_id": ["a", "b", "b", "c", "e", "a"], "type": ["page_view"] * 5 + ["email_sent"],
                           "occurred_at": pd.to_datetime([END - timedelta(days=d) for d in (10, 20, 200, 3, 2, 1)],
                                                         utc=True)})
    cut = END - timedelta(days=8)
    out = household_features(contacts, events, cut, FeatureSpec(household_value_property="aum"), ["page_view"])
    assert out is not None
    assert list(out.index) == ["a", "b", "c", "d"]
    assert out.loc["a", "household_size"] == 2 and out.loc["c", "household_size"] == 1
    assert out.loc["a", "household_activity_90d"] == 2 == out.loc["b", "household_activity_90d"]  # 200 days: out
    assert out.loc["c", "household_activity_90d"] == 0  # its view came after the cutoff
    assert out.loc["b", "household_value"] == 150 and out.loc["c", "household_value"] == 10
    assert out.loc["d"].isna().all()
    assert household_features(contacts.drop(columns="household_id"), events, cut, FeatureSpec(), ["page_view"]) is None




def write_household_book(folder: Path, households: int = 700, seed: int = 4) -> None:
    """Interest is a household's: its members' visits together drive each member's outcome."""
    rng = np.random.default_rng(seed)
    rows, events = [], []
    pid = 0
    for h in range(households):
        interest = rng.normal()
        visits = rng.poisson(np.exp(0.9 * interest))
        size = int(rng.choice([1, 2, 3], p=[0.3, 0.5, 0.2]))
        members = [f"p{pid + i}" for i in range(size)]
        pid += size
        for _ in range(visits):  # the household's visits land on any one member
            events.append((str(rng.choice(members)), "page_view",
                           (END - timedelta(days=float(rng.uniform(1, 80)))).isoformat()))
        for m in members:
            y = rng.random() < 1 / (1 + np.exp(-(-1.2 + 1.8 * interest)))
            rows.append((m, f"{m}@example.com", round(float(np.exp(rng.normal(11, 1))), -2), f"hh{h}",
                         "yes" if y else "no"))
    with (folder / "contacts.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "email", "aum", "household_id", "converted"])
        w.writerows(rows)
    with (folder / "events.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["contact_id", "type", "occurred_at"])
        w.writerows(events)
    config(folder, features="{numeric_properties: [aum], household_value_property: aum}")


@pytest.mark.slow
def test_a_csv_book_with_household_ids_gets_household_features_in_score_and_card(tmp_path):
    write_household_book(tmp_path)
    sync = segsync("sync", "segsync.yaml", "--dry-run", cwd=tmp_path)  # pulls the book, pushes nothing
    assert sync.returncode == 0, sync.stderr
    score = segsync("score", "segsync.yaml", "--json", "--report", "--out", str(tmp_path / "cards"), cwd=tmp_path)
    assert score.returncode == 0, score.stderr
    card = json.loads(score.stdout)["scores"][0]
    households = card["extra"]["households"]
    assert households["features"] == ["household_size", "household_activity_90d", "household_value"]
    assert households["households"] == 700 and households["contacts_with_household"] == households["contacts"]
    assert card["extra"]["property_inputs"] == ["aum"]  # the household id is never an input itself
    ranked = [f["feature"] for f in card["top_features"]]
    assert ranked[0] == "household_activity_90d", ranked  # the household's visits explain the outcome best
    assert card["gate"]["passed"], card["gate"]
    text = (tmp_path / "cards" / "firm" / "opens_account" / "card.md").read_text()
    assert ("Household features from `household_id`: household_size, household_activity_90d, household_value "
            "(value: sum of members' aum)") in text

"""Household features: what the people someone shares a household with did and hold, as of a cutoff.

Advisors' CRMs group people into households (Wealthbox households, Redtail families); the connectors
put that id in one contact property (``connectors.base.HOUSEHOLD_PROPERTY``, handed to scoring as
:attr:`scoring.specs.FeatureSpec.household_column`; a CSV export can carry it as a column). When
contacts carry household ids, three columns are added to every feature frame:

- ``household_size``: people in the household who existed before the cutoff (the contact included);
- ``household_activity_90d``: activity events (the score's ``activity_types``) of all its members in
  the 90 days before the cutoff - a spouse reading the pricing page says something about the couple;
- ``household_value``: the sum of the members' value property (``features.household_value_property``,
  e.g. ``aum``), only when one is configured: wealth held together is decided together.

A contact without a household id gets NaN (unknown), never a household of one by assumption. The
household id itself is never a model input (it is an identifier). Like every feature, these use only
events before the cutoff and property values known then (:mod:`scoring.snapshots` applies first).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from scoring.features import eligible_contacts, event_counts, to_utc
from scoring.specs import FeatureSpec

ACTIVITY_DAYS = 90
COLUMNS = ("household_size", "household_activity_90d", "household_value")


def household_ids(contacts: pd.DataFrame, column: str) -> pd.Series | None:
    """Trimmed household id per contact (NA when blank), or None when no contact carries one."""
    if column not in contacts.columns:
        return None
    ids = contacts[column].astype("string").str.strip().replace("", pd.NA)  # type: ignore[call-overload]
    return None if ids.notna().sum() == 0 else ids


def household_features(contacts: pd.DataFrame, events: pd.DataFrame | None, cutoff: object, spec: FeatureSpec,
                       activity_types: Sequence[str]) -> pd.DataFrame | None:
    """The household columns for every contact existing before ``cutoff`` (index: contact id), or None."""
    cut = to_utc(cutoff)
    people = eligible_contacts(contacts, cut)
    hh = household_ids(people, spec.household_column)
    if hh is None:
        return None
    ids = pd.Index(people["contact_id"].astype(str).to_numpy(), name="contact_id")
    hh.index = ids
    known = hh.notna().to_numpy()
    size = hh.map(hh.value_counts()).astype("float32")
    activity = event_counts(ids, events, list(activity_types), cut - pd.Timedelta(days=ACTIVITY_DAYS), cut)
    per_household = activity.groupby(hh.to_numpy()).sum()
    out = pd.DataFrame({"household_size": size,
                        "household_activity_90d": hh.map(per_household).astype("float32")}, index=ids)
    value_col = spec.household_value_property
    if value_col and value_col in people.columns:
        value = pd.to_numeric(people[value_col].astype("string").str.strip(), errors="coerce").to_numpy(np.float64)
        worth = pd.Series(value, index=ids).groupby(hh.to_numpy()).sum(min_count=1)
        out["household_value"] = hh.map(worth).astype("float32")
    out.loc[~known] = np.nan
    return out


def household_summary(contacts: pd.DataFrame, spec: FeatureSpec) -> dict[str, Any] | None:
    """What the model card says about households: how many, how many people carry an id, which columns."""
    hh = household_ids(contacts, spec.household_column)
    if hh is None:
        return None
    columns = [c for c in COLUMNS if c != "household_value" or spec.household_value_property]
    return {"column": spec.household_column, "households": int(hh.nunique()),
            "contacts_with_household": int(hh.notna().sum()), "contacts": len(hh), "features": columns,
            "value_property": spec.household_value_property}

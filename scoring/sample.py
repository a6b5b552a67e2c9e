"""A big book's people sampled before their features are built: fits and evaluations read a bounded number of rows.

A classifier is fitted on at most :data:`scoring.base.SAMPLE_ROWS` people (seeded), and a time-split backtest
evaluates on at most as many. Drawing the people *before* their features are computed means a million-contact
book never has a feature frame, an encoded matrix or a DeLong comparison of a million rows for a fit or a
backtest: those are bounded by the sample, and only live scoring (everyone is scored, in slices) reads the whole
book. The sample is the one the whole book's feature frame would have been cut to (:func:`draw`: the same rows,
the same seed), so below the cap - where the sample is everyone - nothing changes at all.

Why evaluating on a sample is sound: the backtest's figures are estimates whose precision is set by the number of
people evaluated, and at 300,000 people it is already fine. The 95% intervals of a ROC AUC and of the paired DeLong
difference (the gain over the naive baseline, what the gate decides on) narrow with the square root of the people
evaluated: on the 100,000-contact CSV bench book the gain was 0.113 with an interval of 0.106 to 0.120 (+/- 0.007),
so about +/- 0.004 at 300,000 people and +/- 0.002 at a million - a difference no decision of the gate turns on,
far below the gain a model must show. The sample is random (seeded), so it favours neither old nor new contacts,
and a sampled report says so (``window.evaluation``, and the gain's ``evaluated_on``).

Not sampled before the features, and why:
- a book with households: a household's features add up its members, who may not all be drawn; its fit and its
  evaluation are sampled after their features (the same cap and seed), so only their frames are the book's size;
- labelled outcomes: cross-validated on the whole labelled set (their own code path), as before.
Churn is sampled by people too, for the evaluation; its training keeps the active people first and samples them
after the features (as live training does), so its fit and its backtest's fit stay alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scoring.base import not_inputs
from scoring.discovery import select_properties
from scoring.features import eligible_contacts, to_utc
from scoring.households import household_ids
from scoring.snapshots import properties_as_of
from scoring.specs import ScoreSpec


@dataclass
class Sample:
    """The people to build features for, and what they were drawn from."""

    contacts: pd.DataFrame  # the people drawn (eligible at the cutoff, in their order), or the whole frame
    available: int  # people existing at the cutoff (0: not counted, nothing was drawn)
    properties: tuple[list[str], list[str]] | None = None  # the property inputs chosen on the whole book

    @property
    def drawn(self) -> bool:
        """True when the people are a sample of the book, not all of it."""
        return self.properties is not None


def sampled_rows(n: int, rows: int, seed: int) -> np.ndarray | None:
    """Positions (sorted) of a seeded sample of ``rows`` out of ``n``, or None when ``n`` is at most ``rows``."""
    if n <= rows:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, rows, replace=False))


def draw(spec: ScoreSpec, contacts: pd.DataFrame, cutoff: pd.Timestamp, rows: int, seed: int) -> Sample:
    """At most ``rows`` of the people existing at ``cutoff`` (seeded), with the property inputs the whole book's
    frame as of ``cutoff`` would select; the whole frame (not drawn) when it is small enough or cannot be
    sampled before its features (households, labelled outcomes: see the module docstring)."""
    if spec.labelled or household_ids(contacts, spec.features.household_column) is not None:
        return Sample(contacts, 0)
    eligible = eligible_contacts(contacts, to_utc(cutoff))
    keep = sampled_rows(len(eligible), rows, seed)
    if keep is None:
        return Sample(contacts, 0)
    return Sample(eligible.iloc[keep], len(eligible), property_inputs(spec, contacts, cutoff))


def property_inputs(spec: ScoreSpec, contacts: pd.DataFrame, cutoff: pd.Timestamp) -> tuple[list[str], list[str]]:
    """The (numeric, categorical) property inputs :func:`scoring.base.features_for` would select on the whole
    book as of ``cutoff``: discovery looks at every eligible contact's values known then."""
    feats = spec.features
    if feats.numeric_properties or feats.categorical_properties:
        return select_properties(contacts, feats, not_inputs(spec))  # declared: used as given
    cut = to_utc(cutoff)
    return select_properties(eligible_contacts(properties_as_of(contacts, cut), cut), feats, not_inputs(spec))


__all__ = ["Sample", "draw", "property_inputs", "sampled_rows"]

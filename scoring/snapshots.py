"""Contact properties as of a past cutoff, from the snapshots the store keeps of every change.

The contacts frame holds each property's latest value. A time-split backtest or a training window
needs the value known *before* its cutoff instead: a tier raised by an upgrade must not explain that
upgrade. :class:`PropertyHistory` holds the changes (contact, property, known-from time, value) and
rewrites a contacts frame as of a cutoff:

- the last value known strictly before the cutoff (like events, ``valid_from < cutoff``);
- where a contact's property was first seen only after the cutoff (history shorter than the
  backtest reaches), the first value seen - the nearest known, but possibly later than the cutoff.
  Such values are counted (:meth:`PropertyHistory.unobserved_share`) and the model card says how
  many; the leakage check (a refit without properties) still guards them;
- at or after the data's watermark (the live scores) the latest values, unchanged.

The history travels with the contacts frame in ``frame.attrs`` (see :func:`attach_history`), so
every score kind gets it through :func:`scoring.base.features_for` without a new argument.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from scoring.features import eligible_contacts, to_utc

ATTR = "property_history"


class PropertyHistory:
    """Property changes per contact, with the time from which each value was known. Immutable."""

    def __init__(self, changes: pd.DataFrame | Callable[[], pd.DataFrame], watermark: object) -> None:
        """``changes`` (or a function that loads them, called at most once and only for a past cutoff) has
        columns contact_id, name, valid_from, value; ``watermark`` is the data's as-of."""
        self._source = changes
        self._changes: pd.DataFrame | None = None
        self._split: dict[str, pd.DataFrame] | None = None
        self.watermark = to_utc(watermark)

    @property
    def changes(self) -> pd.DataFrame:
        """The changes sorted by property, contact and time (loaded on first use: live scores never need them)."""
        if self._changes is None:
            raw = self._source() if callable(self._source) else self._source
            frame = raw[["contact_id", "name", "valid_from", "value"]].copy()
            frame["contact_id"] = frame["contact_id"].astype(str)
            frame["valid_from"] = pd.to_datetime(frame["valid_from"], utc=True)
            self._changes = frame.sort_values(["name", "contact_id", "valid_from"],
                                              kind="stable").reset_index(drop=True)
        return self._changes

    def __deepcopy__(self, memo: dict[int, Any]) -> PropertyHistory:
        # pandas deep-copies ``attrs`` on most operations; the history never changes, so share it.
        return self

    @property
    def names(self) -> set[str]:
        """Properties with at least one recorded value."""
        return set(self._by_name())

    def _by_name(self) -> dict[str, pd.DataFrame]:
        if self._split is None:
            # Sorted by name, each property's changes are one run of rows: a slice of the frame (a view), where
            # a groupby would copy the whole history once more - a million-contact book's is 4 million rows.
            changes = self.changes
            names = changes["name"].to_numpy()
            starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]]) if len(names) else np.array([], dtype=int)
            stops = np.r_[starts[1:], len(names)]
            self._split = {str(names[a]): changes.iloc[a:b] for a, b in zip(starts, stops, strict=True)}
        return self._split

    def _at(self, name: str, ids: pd.Index, cut: pd.Timestamp) -> tuple[pd.Series, np.ndarray]:
        """(value as of ``cut`` per id, mask of ids whose value was only seen after ``cut``)."""
        rows = self._by_name()[name]
        before = rows[rows["valid_from"] < cut].drop_duplicates("contact_id", keep="last").set_index("contact_id")
        first = rows.drop_duplicates("contact_id", keep="first").set_index("contact_id")
        known = ids.isin(before.index)
        late = ids.isin(first.index) & ~known
        values = before["value"].reindex(ids).astype(object)
        values[late] = first["value"].reindex(ids[late]).to_numpy()
        return values, np.asarray(late)

    def as_of(self, contacts: pd.DataFrame, cutoff: object, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """``contacts`` with its property columns as known before ``cutoff`` (unchanged at the watermark)."""
        cut = to_utc(cutoff)
        if cut >= self.watermark:
            return contacts
        ids = pd.Index(contacts["contact_id"].astype(str).to_numpy())
        out = contacts.copy()
        for name in columns if columns is not None else contacts.columns:
            if name not in self.names or name not in contacts.columns:
                continue
            values, _ = self._at(name, ids, cut)
            recorded = ids.isin(self._by_name()[name]["contact_id"])
            merged = np.where(recorded, values.to_numpy(), contacts[name].to_numpy(dtype=object))
            column = pd.Series(merged, index=contacts.index, dtype=object)
            if pd.api.types.is_numeric_dtype(contacts[name]):
                column = pd.to_numeric(column, errors="coerce")
            out[name] = column
        return out

    def unobserved_share(self, contacts: pd.DataFrame, cutoff: object, columns: Sequence[str]) -> float | None:
        """Share of (contact, property) values at ``cutoff`` first seen only after it; None when nothing applies."""
        cut = to_utc(cutoff)
        if cut >= self.watermark:
            return 0.0
        # Only people who existed then have features at the cutoff.
        ids = pd.Index(eligible_contacts(contacts, cut)["contact_id"].astype(str).to_numpy())
        late = total = 0
        for name in columns:
            if name not in self.names:
                continue
            _, mask = self._at(name, ids, cut)
            late += int(mask.sum())
            total += len(ids)
        return late / total if total else None


def attach_history(contacts: pd.DataFrame, history: PropertyHistory) -> pd.DataFrame:
    """Make ``history`` travel with ``contacts`` (read back by :func:`properties_as_of`)."""
    contacts.attrs[ATTR] = history
    return contacts


def history_of(contacts: pd.DataFrame) -> PropertyHistory | None:
    """The history attached to ``contacts``, if any."""
    found = contacts.attrs.get(ATTR)
    return found if isinstance(found, PropertyHistory) else None


def properties_as_of(contacts: pd.DataFrame, cutoff: object) -> pd.DataFrame:
    """``contacts`` as of ``cutoff`` when a history is attached, else unchanged (properties as stored now)."""
    history = history_of(contacts)
    return contacts if history is None else history.as_of(contacts, cutoff)

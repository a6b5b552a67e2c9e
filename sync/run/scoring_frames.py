"""The inputs of a scoring, read from the store as compact frames: contacts (in time order), events, and the
property history a past cutoff reads.

A book is read in batches and kept as columns: events as categoricals with book-wide integer codes, repeated
property values as one shared object each, the history as a few pointers per change. What the whole book holds
as Python objects at once is one object per contact and distinct value, never one per event or per change.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from connectors.base import HOUSEHOLD_PROPERTY
from scoring.features import session_keys
from scoring.models import default_as_of
from scoring.snapshots import PropertyHistory, attach_history
from sync.config.models import TenantCfg
from sync.store.interface import Store

ORDER_COLUMN = "_source_row"  # a source's own row number, when it has one (CSV exports): its time order


def wanted_properties(tenant: TenantCfg, records: Iterable[dict[str, Any]]) -> tuple[set[str], bool]:
    """Property names to read, and whether they were discovered (no ``features:`` declared).

    With no declared features every stored property is read and :func:`scoring.discovery.select_properties`
    keeps the numeric-looking and the low-cardinality text ones; the model card lists which.
    """
    feats = tenant.features
    wanted = set(feats.numeric_properties) | set(feats.categorical_properties) | set(feats.sensitive_attributes)
    wanted |= {s.outcome.property for s in tenant.scores if s.outcome and s.outcome.property}
    if feats.time_column:
        wanted.add(feats.time_column)
    wanted.add(HOUSEHOLD_PROPERTY)  # household features appear when contacts carry household ids
    if feats.household_value_property:
        wanted.add(feats.household_value_property)
    discovered = not (feats.numeric_properties or feats.categorical_properties)
    if discovered:
        wanted |= {k for c in records for k in (c["properties"] or {}) if not k.startswith("_")}
        # segsync's own segment property comes back on the next pull: an input, it would feed the push back in.
        # (Score properties are ``segsync_score_*``, skipped with every ``segsync*`` column by select_properties.)
        wanted.discard(tenant.push.crm_property)
    return wanted, discovered


def without_own_tags(value: Any, prefix: str) -> Any:
    """A list of tags (an ESP's, a CRM's) less segsync's own: the segments pushed last run are not inputs."""
    if isinstance(value, list) and prefix:
        return [t for t in value if not str(t).startswith(prefix)]
    return value


def time_order(contacts: pd.DataFrame, tenant: TenantCfg, rows: list[int | None]) -> pd.DataFrame:
    """Contacts in their source's time order, and what that order is (``attrs["time_order"]``).

    The store returns contacts by hashed id, which is a shuffle: a "later rows" check on it would
    be a random split. A declared date column wins, then creation dates, then the export's row order.
    """
    col = tenant.features.time_column
    if col and col in contacts.columns:
        key, name = pd.to_datetime(contacts[col], utc=True, errors="coerce", format="mixed"), f"column {col}"
    elif contacts["created_at"].notna().mean() > 0.95 and contacts["created_at"].nunique() > 1:
        key, name = contacts["created_at"], "creation date"
    elif rows and all(r is not None for r in rows):
        key, name = pd.Series(rows, index=contacts.index), "source row order"
    else:
        contacts.attrs["time_order"] = "none known (store order)"
        return contacts
    contacts = contacts.assign(_key=key.to_numpy()).sort_values("_key", kind="stable").drop(columns="_key")
    contacts.attrs["time_order"] = name
    return contacts


EVENT_COLUMNS = ("contact_id", "type", "occurred_at", "value", "url", "session_id")
TEXT_COLUMNS = ("contact_id", "type", "url")
EVENT_BATCH = 100_000
CONTACT_BATCH = 50_000


def frames(store: Store, tenant: TenantCfg, allowed: set[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Contacts (in time order) and events as the scoring package expects them (see scoring.features)."""
    # Streamed twice (once more only to discover property names), never held as a list of dicts.
    wanted, _ = wanted_properties(tenant, store.contact_stream(tenant.id))
    # A vendor's own "email" property must neither replace the normalised address nor duplicate a column.
    wanted -= {"contact_id", "email", "created_at"}
    columns = ["contact_id", "email", "created_at", *sorted(wanted)]
    parts: list[pd.DataFrame] = []
    order: list[int | None] = []
    stream = store.contact_stream(tenant.id)
    share = SharedText(wanted)
    while batch := list(itertools.islice(stream, CONTACT_BATCH)):
        rows = []
        for c in batch:
            if allowed is not None and c["contact_id"] not in allowed:
                continue
            props = c["properties"] or {}
            raw_row = str(props.get(ORDER_COLUMN) or "")
            order.append(int(raw_row) if raw_row.isdigit() else None)
            rows.append({"contact_id": c["contact_id"], "email": c["email"], "created_at": c["created_at"],
                         **{k: share(k, without_own_tags(props.get(k), tenant.push.tag_prefix)) for k in wanted}})
        del batch
        parts.append(pd.DataFrame(rows, columns=columns))
    contacts = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    contacts["created_at"] = pd.to_datetime(contacts["created_at"], utc=True, errors="coerce")
    for name in tenant.features.numeric_properties:
        contacts[name] = pd.to_numeric(contacts[name], errors="coerce")
    contacts = time_order(contacts, tenant, order)
    # The events' contact ids become the contacts frame's own id strings: one copy of a million ids, not two.
    own = {cid: cid for cid in contacts["contact_id"]}
    ev = event_frame(store.event_rows(tenant.id), allowed, own=own)
    del own
    attrs = dict(contacts.attrs)
    contacts = contacts.reset_index(drop=True)
    contacts.attrs.update(attrs)
    ev = ev.reset_index(drop=True)
    attach_history(contacts, property_history(store, tenant, contacts["contact_id"], wanted,
                                              default_as_of(ev if not ev.empty else None)))
    return contacts, ev


class SharedText:
    """One object per distinct text value of each column, up to :data:`SHARED_VALUES` per column.

    A decoded JSON property is a new string on every contact: a book's 1,000,000 "premier"s would be as many
    objects (about 60 bytes each) where one, pointed at a million times, holds the same value. Columns whose
    values are all distinct (an AUM as text) stop being shared once the cap is reached.
    """

    def __init__(self, columns: Iterable[str]) -> None:
        self.seen: dict[str, dict[str, str]] = {c: {} for c in columns}

    def __call__(self, column: str, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        seen = self.seen[column]
        found = seen.get(value)
        if found is not None:
            return found
        if len(seen) < SHARED_VALUES:
            seen[value] = value
        return value


SHARED_VALUES = 10_000
HISTORY_BATCH = 100_000


def property_history(store: Store, tenant: TenantCfg, ids: pd.Series, names: set[str],
                     watermark: pd.Timestamp) -> PropertyHistory:
    """The stored property changes of the contacts ``ids`` for ``names``, read when a past cutoff first needs them.

    Read as columns, not a dict per change: each row points at the contacts frame's own id string and at one
    shared name, its time is a datetime64 (converted a batch at a time), and repeated values are shared by the
    store's read; a book's history (several changes per contact) then costs a few pointers per change.
    """
    def load() -> pd.DataFrame:
        own = {cid: cid for cid in ids}  # the frame's id objects: a change's row points at one, copies none
        known: dict[str, str] = {}
        cids: list[str] = []
        names_of: list[str] = []
        values: list[Any] = []
        times: list[pd.Series] = []
        rows = store.property_history_rows(tenant.id, sorted(names))
        while batch := list(itertools.islice(rows, HISTORY_BATCH)):
            stamps = []
            for cid, name, valid_from, value in batch:
                mine = own.get(cid)
                if mine is None:
                    continue
                cids.append(mine)
                names_of.append(known.setdefault(name, name))
                stamps.append(valid_from)
                values.append(value)
            del batch
            times.append(pd.Series(pd.to_datetime(stamps, utc=True)))
        # Each column's dtype inferred as a frame of the rows would infer it (values: over the whole history).
        return pd.DataFrame({"contact_id": pd.Series(cids, dtype=None if cids else object),
                             "name": pd.Series(names_of, dtype=None if cids else object),
                             "valid_from": pd.concat(times, ignore_index=True) if times else pd.Series(dtype=object),
                             "value": pd.Series(values, dtype=None if cids else object)})

    return PropertyHistory(load, watermark)


def event_frame(rows: Iterable[Any], allowed: set[str] | None = None,
                batch: int = EVENT_BATCH, own: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The stored events (dicts, or tuples in :data:`EVENT_COLUMNS` order) as one frame, built ``batch`` rows at a
    time with compact dtypes.

    Text columns become categoricals (integer codes and one copy of each distinct value), times
    datetime64 and values float64, so a book's events cost tens of bytes per row instead of a dict
    and half a dozen Python objects each; at most ``batch`` rows exist as Python objects at a time.
    Session ids become their 64-bit keys (:func:`scoring.features.session_keys`, nullable Int64): nearly every
    page view has a session of its own, so as categories they would be millions of distinct strings.
    ``own`` maps a contact id to the string object to keep for it (the contacts frame's: the same text, held once).
    """
    known: dict[str, dict[Any, int]] = {c: {} for c in TEXT_COLUMNS}  # value -> category code, in order seen
    codes: dict[str, list[np.ndarray]] = {c: [] for c in TEXT_COLUMNS}  # int32 codes per batch
    times: list[np.ndarray] = []
    values: list[np.ndarray] = []
    session_keys_: list[np.ndarray] = []
    session_missing: list[np.ndarray] = []
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, batch)):
        part = pd.DataFrame.from_records(chunk, columns=list(EVENT_COLUMNS))
        del chunk
        if allowed is not None:
            part = part[part["contact_id"].isin(allowed)]
        for col in TEXT_COLUMNS:
            local, uniques = pd.factorize(part[col].to_numpy(dtype=object))
            if own is not None and col == "contact_id":
                uniques = np.array([own.get(u, u) for u in uniques], dtype=object)
            seen = known[col]
            # The batch's few distinct values get the book-wide codes (new ones appended).
            index = np.fromiter((seen.setdefault(u, len(seen)) for u in uniques), dtype=np.int32, count=len(uniques))
            codes[col].append(np.where(local >= 0, index[np.maximum(local, 0)] if len(index) else -1, -1)
                              .astype(np.int32))
        stamps = pd.to_datetime(part["occurred_at"], utc=True).dt.as_unit("us").dt.tz_localize(None)  # UTC
        times.append(stamps.to_numpy(dtype="datetime64[us]"))
        values.append(pd.to_numeric(part["value"], errors="coerce").to_numpy(dtype=np.float64))
        key, absent = session_keys(part["session_id"].to_numpy(dtype=object))
        session_keys_.append(key)
        session_missing.append(absent)
        del part
    columns: dict[str, Any] = {}
    for col in TEXT_COLUMNS:
        categories = pd.Index(list(known[col]), dtype=object)
        columns[col] = pd.Categorical.from_codes(_joined(codes[col], np.int32), categories=categories)
    columns["occurred_at"] = pd.Series(_joined(times, "datetime64[us]")).dt.tz_localize("UTC")
    columns["value"] = _joined(values, np.float64)
    keys, missing = _joined(session_keys_, np.int64), _joined(session_missing, bool)
    columns["session_id"] = pd.arrays.IntegerArray(keys, missing)
    # The frame takes the columns as they are: a copy here would hold every column twice at the end of the read.
    return pd.DataFrame({c: columns[c] for c in EVENT_COLUMNS}, copy=False)


def _joined(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    """The batches of one column as one array; the batches are released at once (before the next column)."""
    out = np.concatenate(parts) if parts else np.array([], dtype=dtype)
    parts.clear()
    return out

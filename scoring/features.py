"""Point-in-time features: what was known about each contact just before a cutoff.

Leakage is prevented in one place: only events with ``occurred_at < cutoff`` are read, and only
contacts created before the cutoff (or with an unknown creation time) are kept. Everything is
vectorised with integer contact codes and ``np.bincount``-style reductions over event chunks, so
memory stays bounded by the chunk size rather than by the event log (1M contacts / 20M events fit).

Columns (float32, NaN where undefined, e.g. recency for someone who never transacted):
RFM of transactions, email engagement over 7/30/90 days, web behaviour over 90 days, tenure,
distinct devices over 90 days (from an optional ``device`` event column),
per-type counts for other event types, then the configured contact properties (numbers as
float, categories as pandas ``category`` dtype; the model encodes them with training-time levels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from core.errors import InputError
from scoring.discovery import select_properties
from scoring.specs import FeatureSpec

DAY_NS = 86_400 * 10**9
WINDOWS = (7, 30, 90)
EMAIL_TYPES = {"email_sent": "sends", "email_open": "opens", "email_click": "clicks"}
MAX_EXTRA_TYPES = 12
CHUNK_ROWS = 2_000_000


def to_utc(value: object) -> pd.Timestamp:
    """A timezone-aware UTC timestamp; naive inputs are taken to be UTC already."""
    ts = pd.Timestamp(value)  # type: ignore[arg-type]
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def times_ns(series: pd.Series) -> np.ndarray:
    """Integer nanoseconds since the epoch (UTC); NaT becomes the minimum int64.

    pandas 3 infers microsecond resolution from strings, so the unit is normalised here once.
    """
    s = pd.to_datetime(series, utc=True)
    # DatetimeArray.asi8 is public pandas API that pandas-stubs leave out.
    return np.asarray(s.dt.as_unit("ns").array.asi8, dtype=np.int64)  # type: ignore[attr-defined]


def contact_positions(ids: pd.Index, column: pd.Series) -> Callable[[pd.Series], np.ndarray]:
    """A function giving each event row's position in ``ids`` (-1: not a kept contact), chunk by chunk.

    A categorical ``contact_id`` column (integer codes, as the store and the bench hand over big books)
    is mapped once per category, so a chunk costs an array lookup instead of millions of Python strings
    hashed against the index.
    """
    if isinstance(column.dtype, pd.CategoricalDtype):
        per_category = ids.get_indexer(pd.Index(column.cat.categories.astype(str)))

        def by_code(chunk: pd.Series) -> np.ndarray:
            codes = chunk.cat.codes.to_numpy()
            return np.where(codes >= 0, per_category[np.maximum(codes, 0)], -1)

        return by_code

    def by_text(chunk: pd.Series) -> np.ndarray:
        return np.asarray(ids.get_indexer(pd.Index(chunk.astype(str).to_numpy())))

    return by_text


def factorize_text(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """(integer code per row, -1 when missing; the distinct values as text): categoricals by their codes."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy().astype(np.int64), [str(c) for c in column.cat.categories]
    codes, uniques = pd.factorize(column.astype(str).to_numpy())
    return np.asarray(codes), [str(u) for u in uniques]


def session_keys(values: object) -> tuple[np.ndarray, np.ndarray]:
    """(a 64-bit hash of each session id as text, where it is missing): all that features read of a session is
    which views share one, so a book's events may carry these keys instead of millions of distinct id strings
    (an integer ``session_id`` column is taken as keys made here)."""
    text = pd.Series(values, dtype="string")
    return (pd.util.hash_array(text.fillna("").to_numpy(dtype=object)).astype(np.int64),
            np.asarray(text.isna().to_numpy(), dtype=bool))


def behaviour_columns(extra_types: Sequence[str] = ()) -> list[str]:
    """Names of the event-derived columns, in output order."""
    cols = ["txn_count", "txn_value_sum", "txn_value_mean", "txn_recency_days", "txn_first_days", "txn_count_90d",
            "txn_value_90d"]
    for w in WINDOWS:
        cols += [f"sends_{w}d", f"opens_{w}d", f"clicks_{w}d", f"open_rate_{w}d", f"click_rate_{w}d"]
    cols += ["page_views_90d", "high_intent_views_90d", "high_intent_views_30d", "sessions_90d",
             "views_per_session_90d", "visit_days_90d", "devices_90d", "days_since_visit", "days_since_activity",
             "first_seen_days", "tenure_days"]
    for t in extra_types:
        cols += [f"n_{t}", f"n_{t}_90d", f"days_since_{t}"]
    return cols


def property_frame(contacts: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> pd.DataFrame:
    """Numeric properties as float32 (blanks -> NaN) and categorical ones as ``category`` dtype."""
    out: dict[str, pd.Series] = {}
    for col in numeric:
        s = contacts[col]
        if not pd.api.types.is_numeric_dtype(s):
            blanked = s.astype("string").str.strip().replace("", pd.NA)  # type: ignore[call-overload]  # stubs lack NA
            s = pd.to_numeric(blanked, errors="coerce")
        out[col] = s.astype("float32")
    for col in categorical:
        stripped = contacts[col].astype("string").str.strip()
        out[col] = stripped.replace("", pd.NA).astype("category")  # type: ignore[call-overload]  # stubs lack NA
    frame = pd.DataFrame(out)
    frame.index = pd.Index(contacts["contact_id"].astype(str).to_numpy(), name="contact_id")
    return frame


def eligible_contacts(contacts: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Contacts that existed before ``cutoff``; an unknown creation time is kept (assumed old)."""
    if "contact_id" not in contacts.columns:
        raise InputError("contacts frame has no contact_id column")
    if "created_at" in contacts.columns:
        created = times_ns(contacts["created_at"])
        keep = (created == np.iinfo(np.int64).min) | (created < cutoff.value)
        contacts = contacts.loc[keep]
    ids = contacts["contact_id"].astype(str)
    if ids.duplicated().any():
        dup = ids[ids.duplicated()].iloc[0]
        raise InputError(f"contacts frame has duplicate contact_id values, e.g. {dup!r}")
    return contacts


def extra_event_types(events: pd.DataFrame | None, cutoff: object = None) -> list[str]:
    """Event types other than email and page views seen before ``cutoff``, most frequent first, capped.

    Only past events decide the columns, so later events cannot change a frame as of ``cutoff``.
    """
    if events is None or events.empty:
        return []
    types = events["type"]
    if cutoff is not None:
        types = types[times_ns(events["occurred_at"]) < to_utc(cutoff).value]
    # Count first, stringify the few distinct values after: a categorical column of 20M events
    # would otherwise become 20M Python strings.
    counts = types.value_counts()
    counts = counts[counts > 0]
    counts.index = counts.index.astype(str)
    counts = counts.groupby(level=0).sum().sort_values(ascending=False, kind="stable")
    skip = set(EMAIL_TYPES) | {"page_view"}
    names = [str(t) for t in counts.index if str(t) not in skip and str(t).replace("_", "").isalnum()]
    return sorted(names[:MAX_EXTRA_TYPES])


class _Acc:
    """Per-contact accumulators filled chunk by chunk."""

    def __init__(self, n: int, extra: Sequence[str]) -> None:
        def z() -> np.ndarray:
            return np.zeros(n, dtype=np.float64)

        def big() -> np.ndarray:  # minimum age so far
            return np.full(n, np.inf)

        self.n = n
        self.txn_count, self.txn_value, self.txn_valued, self.txn_90, self.txn_v90 = z(), z(), z(), z(), z()
        self.txn_last, self.txn_first = big(), np.full(n, -np.inf)
        self.email = {(k, w): z() for k in EMAIL_TYPES.values() for w in WINDOWS}
        self.pv90, self.hi90, self.hi30 = z(), z(), z()
        self.last_visit, self.last_activity, self.first_seen = big(), big(), np.full(n, -np.inf)
        self.extra = {t: (z(), z(), big()) for t in extra}
        self.visit_days: list[np.ndarray] = []
        self.sessions: list[pd.DataFrame] = []
        self.devices: list[pd.DataFrame] = []


def _accumulate(acc: _Acc, codes: np.ndarray, age: np.ndarray, types: pd.Series, value: np.ndarray,
                url: pd.Series | None, session: pd.Series | None, device: pd.Series | None, transaction_types: set[str],
                activity_types: set[str], high_intent: Sequence[str]) -> None:
    n = acc.n
    tcodes, tnames = factorize_text(types)

    def mask_of(names: set[str]) -> np.ndarray:
        ids = [i for i, t in enumerate(tnames) if t in names]
        return np.isin(tcodes, ids) if ids else np.zeros(len(tcodes), dtype=bool)

    def count(m: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(codes[m], weights=None if w is None else w[m], minlength=n)

    np.maximum.at(acc.first_seen, codes, age)
    tx = mask_of(transaction_types)
    v = np.nan_to_num(value, nan=0.0)
    acc.txn_count += count(tx)
    acc.txn_value += count(tx, v)
    acc.txn_valued += count(tx & ~np.isnan(value))
    in90 = age < 90
    acc.txn_90 += count(tx & in90)
    acc.txn_v90 += count(tx & in90, v)
    np.minimum.at(acc.txn_last, codes[tx], age[tx])
    np.maximum.at(acc.txn_first, codes[tx], age[tx])
    act = mask_of(activity_types)
    np.minimum.at(acc.last_activity, codes[act], age[act])
    for etype, short in EMAIL_TYPES.items():
        m = mask_of({etype})
        for w in WINDOWS:
            acc.email[(short, w)] += count(m & (age < w))
    for t, (n_all, n_90, last) in acc.extra.items():
        m = mask_of({t})
        n_all += count(m)
        n_90 += count(m & in90)
        np.minimum.at(last, codes[m], age[m])
    pv = mask_of({"page_view"})
    np.minimum.at(acc.last_visit, codes[pv], age[pv])
    pv90 = pv & in90
    acc.pv90 += count(pv90)
    if url is not None and high_intent and pv90.any():
        # Match on the distinct URLs only: page views repeat a small set of paths.
        if isinstance(url.dtype, pd.CategoricalDtype):  # codes, not millions of strings
            ucodes, uniq = url.cat.codes.to_numpy()[pv90], url.cat.categories.to_numpy()
        else:
            ucodes, uniq = pd.factorize(url.to_numpy()[pv90])
        pattern = "|".join(h.replace(".", r"\.") for h in high_intent)
        hit_u = (pd.Series(uniq, dtype="string").str.contains(pattern, case=False, regex=True)
                 .fillna(False).to_numpy(bool))
        hit = np.zeros(len(codes), dtype=bool)
        if len(uniq):  # all URLs unknown: nothing can match
            hit[np.flatnonzero(pv90)] = np.where(ucodes >= 0, hit_u[np.maximum(ucodes, 0)], False)
        acc.hi90 += count(hit)
        acc.hi30 += count(hit & (age < 30))
    if device is not None:
        seen = in90 & device.notna().to_numpy()
        if seen.any():
            dkey = pd.util.hash_array(device.to_numpy()[seen].astype(str).astype(object)).astype(np.int64)
            acc.devices.append(pd.DataFrame({"c": codes[seen], "d": dkey}).drop_duplicates())
    if pv90.any():
        day = np.floor(age[pv90]).astype(np.int64)
        acc.visit_days.append(pd.unique(codes[pv90].astype(np.int64) * 128 + day))  # hashing, not sorting
        if session is not None and pd.api.types.is_integer_dtype(session.dtype):  # keys made when read
            key, missing = session.to_numpy(dtype=np.int64, na_value=0)[pv90], session.isna().to_numpy()[pv90]
        else:
            key, missing = session_keys(session.to_numpy()[pv90] if session is not None
                                        else np.full(int(pv90.sum()), None))
        # A view without a session id counts as one session per contact and day.
        key = np.where(missing, day, key)
        acc.sessions.append(pd.DataFrame({"c": codes[pv90], "s": key}).drop_duplicates())


def build_features(
    contacts: pd.DataFrame,
    events: pd.DataFrame | None,
    cutoff: object,
    spec: FeatureSpec | None = None,
    *,
    transaction_types: Sequence[str] = ("deposit",),
    activity_types: Sequence[str] = ("email_open", "email_click", "page_view", "deposit", "upgrade"),
    exclude: Sequence[str] = (),
    extra_types: Sequence[str] | None = None,
    include_properties: bool = True,
    chunk_rows: int = CHUNK_ROWS,
    properties: tuple[Sequence[str], Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Features of every contact existing before ``cutoff``, from events strictly before it.

    ``exclude`` removes property columns (the label of a labelled outcome). ``extra_types`` fixes
    the per-type count columns (a trained model passes its own list so columns line up). ``properties`` fixes the
    (numeric, categorical) property columns instead of selecting them from ``contacts`` (a sample of a book passes
    the whole book's selection).
    """
    spec = spec or FeatureSpec()
    cut = to_utc(cutoff)
    contacts = eligible_contacts(contacts, cut)
    ids = pd.Index(contacts["contact_id"].astype(str).to_numpy(), name="contact_id")
    n = len(ids)
    extra = list(extra_types) if extra_types is not None else extra_event_types(events, cut)
    acc = _Acc(n, extra)
    if events is not None and len(events):
        for col in ("contact_id", "type", "occurred_at"):
            if col not in events.columns:
                raise InputError(f"events frame has no {col} column")
        position = contact_positions(ids, events["contact_id"])
        for start in range(0, len(events), chunk_rows):
            ch = events.iloc[start:start + chunk_rows]
            t = times_ns(ch["occurred_at"])
            codes = position(ch["contact_id"])
            keep = (codes >= 0) & (t < cut.value) & (t != np.iinfo(np.int64).min)
            if not keep.any():
                continue
            idx = np.flatnonzero(keep)
            value = (pd.to_numeric(ch["value"], errors="coerce").to_numpy(np.float64)[idx]
                     if "value" in ch.columns else np.full(len(idx), np.nan))
            _accumulate(acc, codes[idx], (cut.value - t[idx]) / DAY_NS, ch["type"].iloc[idx], value,
                        ch["url"].iloc[idx] if "url" in ch.columns else None,
                        ch["session_id"].iloc[idx] if "session_id" in ch.columns else None,
                        ch["device"].iloc[idx] if "device" in ch.columns else None,
                        set(transaction_types), set(activity_types), spec.high_intent_urls)
    out = _finish(acc, contacts, cut, extra)
    out.index = ids
    if include_properties:
        numeric, categorical = properties if properties is not None else select_properties(contacts, spec, exclude)
        props = property_frame(contacts, numeric, categorical)
        props.index = ids
        out = pd.concat([out, props], axis=1)
    return out


def _finish(acc: _Acc, contacts: pd.DataFrame, cut: pd.Timestamp, extra: Sequence[str]) -> pd.DataFrame:
    def age(a: np.ndarray) -> np.ndarray:
        return np.where(np.isfinite(a), a, np.nan)

    cols: dict[str, np.ndarray] = {
        "txn_count": acc.txn_count, "txn_value_sum": acc.txn_value,
        "txn_value_mean": np.divide(acc.txn_value, acc.txn_valued, out=np.full(acc.n, np.nan),
                                    where=acc.txn_valued > 0),
        "txn_recency_days": age(acc.txn_last), "txn_first_days": age(acc.txn_first),
        "txn_count_90d": acc.txn_90, "txn_value_90d": acc.txn_v90,
    }
    for w in WINDOWS:
        sends = acc.email[("sends", w)]
        opens, clicks = acc.email[("opens", w)], acc.email[("clicks", w)]
        cols[f"sends_{w}d"], cols[f"opens_{w}d"], cols[f"clicks_{w}d"] = sends, opens, clicks
        # Opens can outnumber recorded sends (sends pulled from another system); cap at 1.
        cols[f"open_rate_{w}d"] = np.minimum(opens / np.maximum(sends, 1), 1.0)
        cols[f"click_rate_{w}d"] = np.minimum(clicks / np.maximum(sends, 1), 1.0)
    visit_days = np.zeros(acc.n)
    if acc.visit_days:
        keys = pd.unique(np.concatenate(acc.visit_days))  # distinct (contact, day): order does not matter
        visit_days = np.bincount(keys // 128, minlength=acc.n).astype(float)
    sessions = np.zeros(acc.n)
    if acc.sessions:
        pairs = pd.concat(acc.sessions, ignore_index=True).drop_duplicates()
        sessions = np.bincount(pairs["c"].to_numpy(), minlength=acc.n).astype(float)
    devices = np.zeros(acc.n)
    if acc.devices:
        pairs = pd.concat(acc.devices, ignore_index=True).drop_duplicates()
        devices = np.bincount(pairs["c"].to_numpy(), minlength=acc.n).astype(float)
    cols.update({
        "devices_90d": devices,
        "page_views_90d": acc.pv90, "high_intent_views_90d": acc.hi90, "high_intent_views_30d": acc.hi30,
        "sessions_90d": sessions,
        "views_per_session_90d": np.divide(acc.pv90, sessions, out=np.zeros(acc.n), where=sessions > 0),
        "visit_days_90d": visit_days, "days_since_visit": age(acc.last_visit),
        "days_since_activity": age(acc.last_activity), "first_seen_days": np.where(np.isfinite(acc.first_seen),
                                                                                     acc.first_seen, np.nan),
    })
    tenure = np.full(acc.n, np.nan)
    if "created_at" in contacts.columns:
        created = times_ns(contacts["created_at"])
        known = created != np.iinfo(np.int64).min
        tenure[known] = (cut.value - created[known]) / DAY_NS
    cols["tenure_days"] = tenure
    for t in extra:
        n_all, n_90, last = acc.extra[t]
        cols[f"n_{t}"], cols[f"n_{t}_90d"], cols[f"days_since_{t}"] = n_all, n_90, age(last)
    # Built in output order: selecting the columns afterwards would copy the whole frame once more.
    return pd.DataFrame({k: np.asarray(cols[k], dtype=np.float32) for k in behaviour_columns(extra)})


def outcome_labels(contacts_ids: pd.Index, events: pd.DataFrame | None, types: Sequence[str], start: object,
                   end: object) -> pd.Series:
    """1 where a contact had an event of ``types`` in ``[start, end)``, else 0 (index = ``contacts_ids``)."""
    return (event_counts(contacts_ids, events, types, start, end) > 0).astype(np.int8)


def event_counts(contacts_ids: pd.Index, events: pd.DataFrame | None, types: Sequence[str], start: object,
                 end: object, value: bool = False) -> pd.Series:
    """Count (or, with ``value``, sum the value) of ``types`` events per contact in ``[start, end)``."""
    out = np.zeros(len(contacts_ids))
    if events is not None and len(events):
        s, e = to_utc(start).value, to_utc(end).value
        position = contact_positions(contacts_ids, events["contact_id"])
        wanted = {str(t) for t in types}
        for begin in range(0, len(events), CHUNK_ROWS):
            ch = events.iloc[begin:begin + CHUNK_ROWS]
            t = times_ns(ch["occurred_at"])
            tcodes, tnames = factorize_text(ch["type"])
            m = (t >= s) & (t < e) & np.isin(tcodes, [i for i, name in enumerate(tnames) if name in wanted])
            codes = position(ch["contact_id"])[m]
            ok = codes >= 0
            w = None
            if value:
                w = np.nan_to_num(pd.to_numeric(ch["value"], errors="coerce").to_numpy(np.float64)[m][ok], nan=0.0)
            out += np.bincount(codes[ok], weights=w, minlength=len(contacts_ids))
    return pd.Series(out, index=contacts_ids)

"""Compact frames for big books: the stored events read in batches into categoricals, and features that come out
the same whether ids, types and URLs arrive as text or as categoricals (the fast path must not change a value)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from scoring.chunks import apply_in_slices
from scoring.features import build_features, event_counts, session_keys
from scoring.specs import FeatureSpec
from sync.run.scorer import EVENT_COLUMNS, event_frame

CUT = pd.Timestamp("2025-01-31T00:00:00Z")
TYPES = ["email_sent", "email_open", "email_click", "page_view", "deposit", "webinar", None]
URLS = ["/tools/retirement-calculator", "/", "/pricing", None]


def random_book(n: int = 300, events: int = 6000, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    contacts = pd.DataFrame({"contact_id": [f"c{i}" for i in range(n)],
                             "created_at": [CUT - pd.Timedelta(days=int(d)) for d in rng.integers(-5, 800, n)],
                             "aum": rng.lognormal(11, 1, n).round(-2)})
    who = rng.integers(0, n + 20, events)  # some events belong to nobody we know
    ev = pd.DataFrame({
        "contact_id": [f"c{i}" for i in who],
        "type": [TYPES[i] for i in rng.integers(0, len(TYPES), events)],
        "occurred_at": [CUT - pd.Timedelta(hours=int(h)) for h in rng.integers(-500, 24 * 400, events)],
        "value": np.where(rng.random(events) < 0.5, rng.lognormal(6, 1, events).round(), np.nan),
        "url": [URLS[i] for i in rng.integers(0, len(URLS), events)],
        "session_id": [None if s == 0 else f"s{s}" for s in rng.integers(0, 40, events)],
    })
    return contacts, ev


def as_categoricals(ev: pd.DataFrame) -> pd.DataFrame:
    out = ev.copy()
    for col in ("contact_id", "type", "url", "session_id"):
        out[col] = out[col].astype("category")
    return out


@pytest.mark.parametrize("chunk_rows", [1000, 10_000_000])
def test_features_are_identical_from_text_and_from_categorical_columns(chunk_rows: int) -> None:
    contacts, ev = random_book()
    spec = FeatureSpec(numeric_properties=("aum",))
    text = build_features(contacts, ev, CUT, spec, chunk_rows=chunk_rows)
    coded = build_features(contacts, as_categoricals(ev), CUT, spec, chunk_rows=chunk_rows)
    pd.testing.assert_frame_equal(text, coded)
    # Session ids as the 64-bit keys the store's event frame carries: the same sessions, the same features.
    keyed = as_categoricals(ev)
    keyed["session_id"] = pd.arrays.IntegerArray(*session_keys(ev["session_id"].to_numpy(dtype=object)))
    pd.testing.assert_frame_equal(text, build_features(contacts, keyed, CUT, spec, chunk_rows=chunk_rows))
    assert text["sessions_90d"].sum() > 0 and (text["sessions_90d"] < text["page_views_90d"]).any()
    assert text["high_intent_views_90d"].sum() > 0 and text["n_webinar"].sum() > 0  # the paths were exercised
    ids = pd.Index(contacts["contact_id"])
    start, end = CUT - pd.Timedelta(days=90), CUT
    pd.testing.assert_series_equal(event_counts(ids, ev, ["deposit"], start, end),
                                   event_counts(ids, as_categoricals(ev), ["deposit"], start, end))


def test_stored_events_become_one_categorical_frame_batch_by_batch() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    rows = [{"contact_id": f"c{i % 7}", "type": ["page_view", "deposit"][i % 2], "occurred_at": t0 + timedelta(hours=i),
             "value": str(i) if i % 2 else None, "url": "/pricing" if i % 2 == 0 else None,
             "session_id": None if i % 3 else f"s{i}"} for i in range(25)]
    frame = event_frame(iter(rows), batch=4)
    whole = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    assert list(frame.columns) == list(EVENT_COLUMNS) and len(frame) == 25
    for col in ("contact_id", "type", "url"):
        assert isinstance(frame[col].dtype, pd.CategoricalDtype)
        assert frame[col].astype(object).where(frame[col].notna(), None).tolist() == [r[col] for r in rows]
    # Session ids are kept as the keys features read (one 64-bit hash per id, missing where there is none).
    keys, missing = session_keys([r["session_id"] for r in rows])
    assert frame["session_id"].dtype == "Int64" and frame["session_id"].isna().tolist() == missing.tolist()
    assert missing.tolist() == [r["session_id"] is None for r in rows] and not missing.all()
    assert frame["session_id"][~missing].tolist() == keys[~missing].tolist()
    assert len(set(keys[~missing])) == len({r["session_id"] for r in rows} - {None})  # distinct ids, distinct keys
    assert (frame["occurred_at"] == pd.to_datetime(whole["occurred_at"], utc=True)).all()
    assert frame["value"].dtype == np.float64 and frame["value"].sum() == sum(range(1, 25, 2))
    kept = event_frame(iter(rows), {"c1", "c3"}, batch=4)
    assert set(kept["contact_id"].astype(str)) == {"c1", "c3"} and len(kept) == sum(i % 7 in (1, 3) for i in range(25))
    assert len(event_frame(iter([]))) == 0
    as_tuples = event_frame((tuple(r[c] for c in EVENT_COLUMNS) for r in rows), batch=4)  # what the store streams
    pd.testing.assert_frame_equal(as_tuples, frame)
    # Given the contacts frame's own id strings, the categories are those very objects (one copy of each id).
    own = {cid: cid for cid in ("".join(["c", str(i)]) for i in range(7))}
    shared = event_frame(iter(rows), batch=4, own=own)
    pd.testing.assert_frame_equal(shared, frame)
    assert all(own[c] is c for c in shared["contact_id"].cat.categories)
    assert not any(own[c] is c for c in frame["contact_id"].cat.categories)


def test_scoring_in_slices_covers_every_row_in_order() -> None:
    frame = pd.DataFrame({"x": np.arange(10_007, dtype=float)})
    seen: list[int] = []

    def apply(m: np.ndarray) -> np.ndarray:
        seen.append(len(m))
        return m[:, 0] * 2

    out = apply_in_slices(frame, lambda f: f.to_numpy(), apply, rows=1000)
    assert np.array_equal(out, np.arange(10_007) * 2.0) and max(seen) == 1000 and len(seen) == 11


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "discovered"])
def test_sampling_contacts_before_the_features_keeps_the_very_rows_sampled_after(declared: bool) -> None:
    from scoring.base import Options, features_for
    from scoring.kinds import classifier
    from scoring.specs import ScoreSpec

    contacts, ev = random_book(n=400)
    contacts["tier"] = np.where(np.arange(400) % 3 == 0, "premier", np.where(np.arange(400) % 3 == 1, "core", None))
    feats = FeatureSpec(numeric_properties=("aum",), categorical_properties=("tier",)) if declared else FeatureSpec()
    spec = ScoreSpec("up", "propensity", outcome_event="deposit", features=feats)
    cut = CUT - pd.Timedelta(days=90)
    options = Options(seed=7, sample_rows=150)
    everyone = features_for(spec, contacts, ev, cut)
    assert {"aum", "tier"} <= set(everyone.columns)  # the properties were selected (discovered or declared)
    keep = np.sort(np.random.default_rng(7).choice(len(everyone), 150, replace=False))
    people = classifier.training_people(spec, contacts, cut, options, churn=False)
    assert people.drawn and people.available == len(everyone) and len(people.contacts) == 150
    sampled = features_for(spec, people.contacts, ev, cut, properties=people.properties)
    # The same rows and values; a sample's categorical column lists only the levels it holds (encoded by text).
    pd.testing.assert_frame_equal(sampled, everyone.iloc[keep], check_categorical=False)
    # Churn keeps active contacts first: it is sampled after its features, as before.
    unchanged = classifier.training_people(spec, contacts, cut, options, churn=True)
    assert unchanged.contacts is contacts and not unchanged.drawn
    # At or below the cap the sample is everyone: nothing is drawn, nothing changes.
    whole = classifier.training_people(spec, contacts, cut, Options(seed=7, sample_rows=len(everyone)), churn=False)
    assert whole.contacts is contacts and not whole.drawn


def test_reading_a_bigger_book_holds_no_python_objects_per_event() -> None:
    """The events are streamed in batches into compact arrays: what a read holds besides the frame it returns grows
    no faster than that frame (a copy while the batches are joined), plus one batch - never a dict or a handful of
    Python objects per event, which would cost ten times the frame. Measured with tracemalloc, not timed."""
    import tracemalloc

    t0 = datetime(2025, 1, 1, tzinfo=UTC)

    def stream(n: int):
        for i in range(n):
            yield (f"c{i % 5000}", "page_view" if i % 3 else "email_open", t0 + timedelta(minutes=i),
                   None, "/pricing" if i % 3 else None, f"s{i // 4}")

    def transient(n: int) -> tuple[int, int]:
        tracemalloc.start()
        frame = event_frame(stream(n), batch=5_000)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        kept = int(frame.memory_usage(deep=True).sum())
        assert len(frame) == n
        return peak - kept, kept

    small, small_frame = transient(20_000)
    big, big_frame = transient(80_000)
    assert big_frame > 2 * small_frame  # the data did grow
    # 4x the events: the extra held besides the result stays within 1.5x the result's own growth (about 1.1x
    # measured; a list of dicts, or int64 codes and per-batch copies kept to the end, exceed it several times).
    assert big - small < 1.5 * (big_frame - small_frame), (small, small_frame, big, big_frame)


def test_contacts_read_in_batches_give_the_same_frame(tmp_path, monkeypatch) -> None:
    from test_scoring_gate import drifting_book, pulled

    from sync.run import scorer, scoring_frames

    book, no_events = tmp_path / "contacts.csv", tmp_path / "events.csv"
    drifting_book(book)
    no_events.write_text("person,type,at,value,url,session_id\n")
    # No declared features: the property names are discovered by a first pass over the stream.
    tenant, store = pulled(tmp_path, book, no_events, created=None)
    try:
        whole, _ = scorer.frames(store, tenant)
        monkeypatch.setattr(scoring_frames, "CONTACT_BATCH", 700)  # 4,000 contacts: six batches
        batched, _ = scorer.frames(store, tenant)
    finally:
        store.close()
    assert len(whole) == 4000 and {"steady", "signal"} <= set(whole.columns)
    assert batched.attrs.keys() == whole.attrs.keys() and batched.attrs["time_order"] == whole.attrs["time_order"]
    pd.testing.assert_frame_equal(batched, whole)

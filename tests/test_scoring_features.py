"""Point-in-time features: exact values on a hand-made book, and no leakage from after the cutoff."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import InputError
from scoring.discovery import select_properties
from scoring.features import behaviour_columns, build_features
from scoring.specs import FeatureSpec

CUT = pd.Timestamp("2025-01-31T00:00:00Z")


def ts(days_before: float) -> pd.Timestamp:
    return CUT - pd.Timedelta(days=days_before)


def book() -> tuple[pd.DataFrame, pd.DataFrame]:
    contacts = pd.DataFrame({
        "contact_id": ["a", "b", "c"],
        "email": ["a@x.org", "b@x.org", "c@x.org"],
        "created_at": [ts(396), ts(10), pd.NaT],
        "aum": ["250000", "", "1000"],
        "tier": ["core", "premier", None],
        "age": [61, 35, 47],
        "segsync_segments": ["hot", "", ""],
    })
    rows = [
        ("a", "deposit", ts(30), 100.0, None, None),
        ("a", "deposit", ts(244), 50.0, None, None),
        ("a", "email_sent", ts(3), None, None, None),
        ("a", "email_sent", ts(5), None, None, None),
        ("a", "email_open", ts(2), None, None, None),
        ("a", "email_click", ts(20), None, None, None),
        ("a", "page_view", ts(11), None, "/tools/retirement-calculator", "s1"),
        ("a", "page_view", ts(11.01), None, "/", "s1"),
        ("a", "page_view", ts(6), None, "/pricing", "s2"),
        ("b", "email_sent", ts(1), None, None, None),
        ("b", "webinar", ts(4), None, None, None),
    ]
    events = pd.DataFrame(rows, columns=["contact_id", "type", "occurred_at", "value", "url", "session_id"])
    # Devices: phone and laptop within 90 days, a tablet only long before.
    events["device"] = [None, "tablet", None, None, "phone", None, "phone", "phone", "laptop", None, None]
    return contacts, events


def test_feature_values_on_a_hand_made_book():
    contacts, events = book()
    f = build_features(contacts, events, CUT, FeatureSpec(sensitive_attributes=("age",)))
    a, b = f.loc["a"], f.loc["b"]
    assert (a["txn_count"], a["txn_value_sum"], a["txn_value_mean"]) == (2, 150, 75)
    assert a["txn_recency_days"] == pytest.approx(30) and a["txn_first_days"] == pytest.approx(244)
    assert (a["txn_count_90d"], a["txn_value_90d"]) == (1, 100)
    assert (a["sends_7d"], a["opens_7d"], a["open_rate_7d"]) == (2, 1, 0.5)
    assert (a["clicks_7d"], a["clicks_30d"], a["click_rate_30d"]) == (0, 1, 0.5)
    assert (a["page_views_90d"], a["high_intent_views_90d"], a["high_intent_views_30d"]) == (3, 2, 2)
    assert (a["sessions_90d"], a["views_per_session_90d"], a["visit_days_90d"]) == (2, 1.5, 2)
    assert (a["devices_90d"], b["devices_90d"]) == (2, 0)
    assert a["days_since_activity"] == pytest.approx(2) and a["tenure_days"] == pytest.approx(396)
    assert np.isnan(b["txn_recency_days"]) and b["txn_count"] == 0
    assert b["n_webinar"] == 1 and b["days_since_webinar"] == pytest.approx(4)
    assert np.isnan(f.loc["c", "tenure_days"]), "unknown creation time: tenure unknown, contact kept"
    # properties: numbers parsed, categories kept, sensitive and segsync's own columns left out
    assert f.loc["a", "aum"] == 250000 and np.isnan(f.loc["b", "aum"])
    assert str(f["tier"].dtype) == "category"
    assert "age" not in f.columns and "segsync_segments" not in f.columns and "email" not in f.columns


def test_events_after_the_cutoff_do_not_change_the_features():
    contacts, events = book()
    before = build_features(contacts, events, CUT)
    later = pd.DataFrame([
        ("a", "deposit", CUT, 1e6, None, None),  # exactly at the cutoff: already "after"
        ("a", "deposit", CUT + pd.Timedelta(days=5), 500.0, None, None),
        ("b", "page_view", CUT + pd.Timedelta(hours=1), None, "/pricing", "s9"),
        ("b", "upgrade", CUT + pd.Timedelta(days=2), 1.0, None, None),  # a type never seen before
        ("c", "email_open", CUT + pd.Timedelta(days=40), None, None, None),
        ("d", "deposit", CUT + pd.Timedelta(days=1), 10.0, None, None),
    ], columns=events.columns[:6])
    later["device"] = "watch"
    new_contact = pd.DataFrame({"contact_id": ["d"], "email": ["d@x.org"], "created_at": [CUT + pd.Timedelta(days=1)],
                                "aum": ["5"], "tier": ["private"], "age": [30], "segsync_segments": [""]})
    after = build_features(pd.concat([contacts, new_contact], ignore_index=True),
                           pd.concat([events, later], ignore_index=True).sample(frac=1, random_state=1), CUT)
    pd.testing.assert_frame_equal(before, after)
    assert "d" not in after.index, "a contact created after the cutoff is not scored as of it"


def test_chunked_reading_gives_the_same_features():
    contacts, events = book()
    whole = build_features(contacts, events, CUT)
    chunked = build_features(contacts, events, CUT, chunk_rows=2)
    pd.testing.assert_frame_equal(whole, chunked)


def test_contacts_without_events_get_zero_counts_and_all_columns():
    contacts, _ = book()
    f = build_features(contacts, None, CUT, include_properties=False)
    assert list(f.columns) == behaviour_columns([])
    assert f["txn_count"].sum() == 0 and f["days_since_activity"].isna().all()


def test_explicit_properties_win_and_missing_ones_are_named():
    contacts, _ = book()
    numeric, categorical = select_properties(contacts, FeatureSpec(numeric_properties=("age",),
                                                                   sensitive_attributes=("age",)))
    assert (numeric, categorical) == (["age"], []), "a sensitive attribute is an input only when listed"
    with pytest.raises(InputError, match="not found in contacts: income"):
        select_properties(contacts, FeatureSpec(numeric_properties=("income",)))


def test_duplicate_contact_ids_are_an_input_error():
    contacts, events = book()
    with pytest.raises(InputError, match="duplicate contact_id"):
        build_features(pd.concat([contacts, contacts.iloc[:1]]), events, CUT)


def test_identity_and_consent_fields_are_never_discovered_as_inputs():
    """Names, record ids and consent state are who someone is and what they agreed to, not behaviour: a
    discovered model must not read them (a declared list is still used as given)."""
    n = 200
    contacts = pd.DataFrame({
        "contact_id": [str(i) for i in range(n)],
        "email": [f"p{i}@example.com" for i in range(n)],
        "firstname": ["Ann", "Bo", "Cy", "Di"] * (n // 4),
        "hs_object_id": list(range(n)),
        "hs_email_optout_7001": ["true", "false"] * (n // 2),
        "status": ["subscribed", "unsubscribed"] * (n // 2),
        "ip_opt": ["10.0.0.1", "10.0.0.2"] * (n // 2),
        "city": ["Austin", "Boise"] * (n // 2),
        "age": [30 + i % 40 for i in range(n)],
        "gender": ["f", "m"] * (n // 2),
        "aum": [float(i) for i in range(n)],
        "account_tier": ["core", "plus"] * (n // 2),
        "hs_analytics_num_page_views": list(range(n)),
    })
    numeric, categorical = select_properties(contacts, FeatureSpec())
    assert sorted(numeric) == ["aum", "hs_analytics_num_page_views"]
    assert categorical == ["account_tier"]
    declared = select_properties(contacts, FeatureSpec(categorical_properties=("city",)))
    assert declared == ([], ["city"])

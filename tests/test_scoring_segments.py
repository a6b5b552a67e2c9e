"""Segments from scores, the deterministic holdout kept out of them, and the lift report."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from core.errors import InputError
from scoring.segments import assign_segments, holdout, holdout_bucket, lift_report, render_lift_report, two_proportion_z
from scoring.specs import SegmentSpec

IDS = [f"c{i:05d}" for i in range(10_000)]


def test_holdout_is_a_stable_hash_of_tenant_and_contact():
    digest = hashlib.sha256(b"harbor:c00042").digest()
    assert holdout_bucket("harbor", "c00042") == int.from_bytes(digest[:8], "big") / 2**64 * 100
    first = [c for c in IDS if holdout("harbor", c, 10)]
    again = [c for c in IDS if holdout("harbor", c, 10)]
    assert first == again
    assert 0.09 < len(first) / len(IDS) < 0.11
    other = {c for c in IDS if holdout("other-firm", c, 10)}
    assert len(other & set(first)) < 0.2 * len(first), "each tenant has its own holdout"
    assert {c for c in IDS if holdout("harbor", c, 5)} <= set(first), "a smaller holdout is nested in a larger one"
    with pytest.raises(InputError, match="between 0 and 100"):
        holdout("harbor", "c1", 120)


def scores() -> pd.Series:
    return pd.Series(np.linspace(0, 1, len(IDS)), index=IDS)


def test_holdout_is_excluded_from_every_segment_and_recorded():
    specs = [SegmentSpec("top", "p", top_percent=10), SegmentSpec("band", "p", min=0.2, max=0.4),
             SegmentSpec("watch", "p", min=0.9)]
    a = assign_segments({"p": scores()}, specs, "harbor", 10)
    held = {c for c in IDS if holdout("harbor", c, 10)}
    for name in ("top", "band", "watch"):
        assert not set(a.members[name]) & held
        assert set(a.holdout[name]) <= held and a.holdout[name]
    assert len(a.members["top"]) + len(a.holdout["top"]) == 1000
    assert min(scores()[a.members["top"]]) >= 0.9
    band = scores()[a.members["band"] + a.holdout["band"]]
    assert band.between(0.2, 0.4).all() and len(band) == ((scores() >= 0.2) & (scores() <= 0.4)).sum()
    assert a.thresholds["top"] == pytest.approx(scores().iloc[9000])
    assert a.to_dict()["top"] == {"members": len(a.members["top"]), "holdout": len(a.holdout["top"]),
                                  "threshold": a.thresholds["top"]}
    again = assign_segments({"p": scores()}, specs, "harbor", 10)
    assert again.members == a.members, "the same scores cut the same segments"


def test_cluster_segments_and_missing_scores():
    labels = pd.Series(["high web intent" if i % 3 == 0 else "average" for i in range(300)],
                       index=IDS[:300])
    a = assign_segments({}, [SegmentSpec("web", "cl", cluster="high web intent")], "t", 0, {"cl": labels})
    assert len(a.members["web"]) == 100 and a.holdout["web"] == []
    with pytest.raises(InputError, match="score 'nope' was not computed"):
        assign_segments({}, [SegmentSpec("x", "nope", top_percent=5)], "t", 0)


def test_ties_at_the_top_percent_boundary_split_the_same_way_every_run():
    flat = pd.Series(0.5, index=IDS[:100])
    cut1 = assign_segments({"p": flat}, [SegmentSpec("t", "p", top_percent=10)], "t", 0).members["t"]
    cut2 = assign_segments({"p": flat.iloc[::-1].iloc[::-1]}, [SegmentSpec("t", "p", top_percent=10)], "t", 0)
    assert len(cut1) == 10 and cut1 == cut2.members["t"]


def test_lift_report_compares_members_with_their_holdout():
    members = {"hot": [f"m{i}" for i in range(1000)]}
    held = {"hot": [f"h{i}" for i in range(100)]}
    outcomes = {f"m{i}" for i in range(200)} | {f"h{i}" for i in range(10)}
    r = lift_report(members, held, outcomes)["hot"]
    assert (r["member_rate"], r["holdout_rate"]) == (0.2, 0.1)
    assert r["lift"] == pytest.approx(2.0) and r["difference"] == pytest.approx(0.1)
    z, p = two_proportion_z(200, 1000, 10, 100)
    assert (r["z"], r["p_value"]) == (z, p) and p < 0.05 and r["significant"]
    table = render_lift_report({"hot": r})
    assert "| hot | 1000 | 20.0% | 100 | 10.0% | 2 |" in table
    empty = lift_report({"cold": ["a"]}, {}, pd.Series({"a": 1}))["cold"]
    assert empty["holdout_rate"] is None and empty["lift"] is None and not empty["significant"]


"""The HubSpot simulator's search index gives exactly what a scan of every record gives.

Searches bounded on the modified property look candidates up in a (modified time, id) index instead of scanning
the whole book; the answers must not change: same hits, same order, same totals, after writes too.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sandbox.hubspot.schema import default_contact_properties, iso
from sandbox.hubspot.store import ObjectStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _store(n: int, rng: random.Random) -> ObjectStore:
    store = ObjectStore("contacts", default_contact_properties(), "lastmodifieddate", ("email",))
    for i in range(n):
        created = T0 + timedelta(minutes=rng.randrange(10_000))
        store.add({"email": f"p{i}@example.com", "firstname": rng.choice(["Ann", "Bo", "Cy"])}, created,
                  created + timedelta(minutes=rng.randrange(500)))
    return store


def _scan(store: ObjectStore, body: dict[str, Any], before: datetime | None = None) -> dict[str, Any]:
    """The same search answered by scanning every live record (the index bypassed)."""
    original = store._candidates
    store._candidates = lambda groups: store.live()  # type: ignore[method-assign]
    try:
        return store.search(body, before)
    finally:
        store._candidates = original  # type: ignore[method-assign]


def _bodies(rng: random.Random) -> list[dict[str, Any]]:
    def ms(minutes: int) -> str:
        return str(int((T0 + timedelta(minutes=minutes)).timestamp() * 1000))

    sorts = [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"},
             {"propertyName": "hs_object_id", "direction": "ASCENDING"}]
    out: list[dict[str, Any]] = []
    for _ in range(40):
        low, high = sorted(rng.sample(range(11_000), 2))
        out.append({"filterGroups": [{"filters": [
            {"propertyName": "lastmodifieddate", "operator": rng.choice(["GT", "GTE"]), "value": ms(low)},
            {"propertyName": "lastmodifieddate", "operator": rng.choice(["LT", "LTE"]), "value": ms(high)}]}],
            "sorts": sorts, "limit": 100, "after": rng.choice([0, 100])})
    out.append({"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "BETWEEN",
                                               "value": ms(100), "highValue": ms(5_000)}]},
                                 {"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE",
                                               "value": iso(T0 + timedelta(minutes=9_000))},
                                              {"propertyName": "firstname", "operator": "EQ", "value": "Bo"}]}],
                "sorts": sorts, "limit": 200})
    # Not bounded in every group: the scan path, the same either way.
    out.append({"filterGroups": [{"filters": [{"propertyName": "firstname", "operator": "EQ", "value": "Cy"}]},
                                 {"filters": [{"propertyName": "lastmodifieddate", "operator": "GT", "value": ms(1)}]}],
                "limit": 50})
    out.append({"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "EQ",
                                               "value": "not a date"}]}], "limit": 10})
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_indexed_search_answers_as_a_full_scan_before_and_after_writes(seed: int) -> None:
    rng = random.Random(seed)
    store = _store(1_500, rng)
    for round_ in range(3):
        for body in _bodies(rng):
            before = T0 + timedelta(minutes=rng.randrange(12_000)) if rng.random() < 0.3 else None
            assert store.search(body, before) == _scan(store, body, before), (round_, body)
        # Writes between searches move records in the index; archived and merged-away ones drop out.
        for rec in rng.sample(list(store.records.values()), 200):
            store.touch(rec, T0 + timedelta(minutes=rng.randrange(11_000)))
        for rec in rng.sample(list(store.records.values()), 20):
            rec.archived = True
        store.add({"email": f"new{round_}@example.com"}, T0 + timedelta(minutes=10_500))


def test_a_touched_record_is_found_by_a_range_search_at_its_new_time() -> None:
    store = _store(50, random.Random(3))
    rec = store.records[next(iter(store.records))]
    later = T0 + timedelta(days=30)
    body = {"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE",
                                           "value": str(int(later.timestamp() * 1000))}]}], "limit": 10}
    assert store.search(body)["total"] == 0
    store.touch(rec, later)
    found = store.search(body)
    assert [r["id"] for r in found["results"]] == [rec.id]

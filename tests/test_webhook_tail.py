"""The webhook writer's reserve of ids (consent.webhook_tail.IdPool): ascending, handed out above a floor."""

from __future__ import annotations

from consent.webhook_tail import IdPool


def test_ids_are_handed_out_in_order_and_only_above_the_floor() -> None:
    pool = IdPool()
    pool.add([13, 11, 12, 14, 15])
    assert pool.take(2, above=0) == [11, 12]
    # the tenant's newest row is 13 already (another path wrote it): 13 is dropped, never handed out
    assert pool.take(1, above=13) == [14]
    assert len(pool) == 1


def test_too_few_ids_take_nothing() -> None:
    pool = IdPool()
    pool.add([1, 2])
    assert pool.take(3, above=0) is None
    assert pool.take(2, above=0) == [1, 2]


def test_ids_not_above_the_largest_are_left_as_gaps() -> None:
    pool = IdPool()
    pool.add([5, 6])
    pool.add([4, 7])  # 4 would break the order: unused
    assert pool.take(3, above=0) == [5, 6, 7]
    pool.clear()
    assert len(pool) == 0

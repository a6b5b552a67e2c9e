"""What the webhook's PostgreSQL writer remembers between groups, so a group can go in one round trip.

The writer is normally the only one appending to a tenant's chain, so after each group it knows the end of
the chain (the head it moved) and of the tenant's outbox (its newest row). With that, and ids reserved from
the tables' sequences ahead of time, it can chain, sign and insert the next group without reading anything
first. What it remembers is never trusted: the statement that moves the head only matches the head it
remembers (a compare-and-set that also takes the head's row lock, as ``SELECT ... FOR UPDATE`` did), the
outbox's newest row is compared under that lock, and a mismatch - another server, a sync run, the CLI or an
erasure appended meanwhile - fails the statement, so the transaction keeps nothing and the group is written
again from what the database says (``consent.webhook_pg``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from consent.chain import Head


@dataclass(frozen=True, slots=True)
class Tail:
    """The end of a tenant's chain and outbox as this writer last left them (or read them under the lock)."""

    head: Head
    outbox_id: int  # the tenant's newest outbox row, 0 for none


class IdPool:
    """Ids reserved from one table's sequence ahead of use, ascending.

    Reserved ids no other writer can be given; one that ends up unused is a gap in the sequence, as a
    rolled-back insert leaves. Ids are handed out only above a floor (the tenant's newest row), because
    signed outbox rows name the row before them in id order.
    """

    def __init__(self) -> None:
        self._ids: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ids: Iterable[int]) -> None:
        """Ids just reserved from the sequence (larger than any reserved before). One that is not above the
        pool's largest is left unused (a gap), so the pool stays ascending; this runs after a commit and
        must not fail."""
        for i in sorted(ids):
            if not self._ids or i > self._ids[-1]:
                self._ids.append(i)

    def take(self, n: int, above: int) -> list[int] | None:
        """``n`` ascending ids greater than ``above`` (the ones at or below it are dropped), or None when the
        pool has fewer (then nothing is taken)."""
        while self._ids and self._ids[0] <= above:
            self._ids.popleft()
        if len(self._ids) < n:
            return None
        return [self._ids.popleft() for _ in range(n)]

    def clear(self) -> None:
        self._ids.clear()


__all__ = ["IdPool", "Tail"]

"""What a read has seen so far, in 8 bytes per key: the contact ids, and which event rows repeat.

A million-contact export with tens of millions of events cannot keep a Python string (and a dict
slot, and an int) per row: that is 100-200 bytes each, gigabytes in all. :class:`Fingerprints`
keeps a 64-bit fingerprint per key in sorted numpy arrays instead (the few most recent ones in a
small set until they are merged in), and answers membership for a block of keys at once.

Two different keys share a fingerprint with probability about n^2 / 2^65 (10^-7 for 25 million
keys): the only effect is that such a key is taken as known, or an event row as a repeat (its id
then says "second occurrence" - still distinct, just not the id an earlier read gave it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

RECENT_MAX = 1 << 16  # fingerprints held in a Python set before they go into a sorted array


def fingerprint(key: str) -> int:
    """A 64-bit fingerprint of ``key`` (stable across processes, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


class Fingerprints:
    """A set of 64-bit fingerprints: sorted arrays (8 bytes per key) plus a small set of recent ones.

    The arrays are merged so that each is at least twice the size of the next: a lookup searches a
    handful of arrays, and adding n keys costs O(n log n) in numpy, never a Python object per key.
    """

    def __init__(self, keys: Iterable[int] = ()) -> None:
        self._recent: set[int] = set()
        self._levels: list[np.ndarray] = []
        for key in keys:
            self._recent.add(key)
            if len(self._recent) >= RECENT_MAX:
                self._flush()
        self._flush()

    def __len__(self) -> int:
        return len(self._recent) + sum(len(a) for a in self._levels)

    def _in_levels(self, keys: Sequence[int]) -> np.ndarray:
        found = np.zeros(len(keys), bool)
        if not self._levels or not keys:
            return found
        wanted = np.fromiter(keys, np.uint64, len(keys))
        for level in self._levels:
            pos = np.minimum(np.searchsorted(level, wanted), len(level) - 1)
            found |= level[pos] == wanted
        return found

    def contains(self, keys: Sequence[int]) -> list[bool]:
        """Whether each of ``keys`` is in the set."""
        in_levels = self._in_levels(keys)
        recent = self._recent
        return [bool(hit) or key in recent for key, hit in zip(keys, in_levels.tolist(), strict=True)]

    def add_new(self, keys: Sequence[int]) -> list[bool]:
        """Add ``keys`` in order; True where a key was not there before (nor earlier in ``keys``)."""
        in_levels = self._in_levels(keys)
        recent = self._recent
        fresh = []
        for key, hit in zip(keys, in_levels.tolist(), strict=True):
            new = not hit and key not in recent
            if new:
                recent.add(key)
            fresh.append(new)
        if len(recent) >= RECENT_MAX:
            self._flush()
        return fresh

    def _flush(self) -> None:
        if not self._recent:
            return
        block = np.fromiter(self._recent, np.uint64, len(self._recent))
        block.sort()
        self._recent = set()
        self._levels.append(block)
        levels = self._levels
        while len(levels) > 1 and len(levels[-2]) <= 2 * len(levels[-1]):
            top, below = levels.pop(), levels.pop()
            merged = np.concatenate((below, top))
            merged.sort(kind="stable")
            levels.append(merged)

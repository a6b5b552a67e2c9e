"""The contacts cursor: a keyset on ``updated_at`` read through ``updated_since`` (Wealthbox has no id filter).

Each query asks ``updated_since=<since>&updated_before=<run start>&order=updated`` from page 1, so a record
that changes mid-pull leaves the window (its new time is past the run start; the next run reads it)
without shifting the records not read yet. Records at the boundary time that were already read are
remembered by id (``seen``) and skipped when the next query returns them again; a full page that is all
one time pages on within that time (``page``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors.kit.paging import Paginator, PagingLoopError
from core.errors import InputError
from core.times import parse_time_or_none


@dataclass
class ContactsCursor:
    """Where the contacts pull stands; ``deleted_since``: deletions read up to there."""

    since: str | None = None
    seen: list[str] = field(default_factory=list)
    page: int = 1
    deleted_since: str | None = None

    def encode(self) -> str:
        return json.dumps({"since": self.since, "seen": sorted(self.seen), "page": self.page,
                           "deleted_since": self.deleted_since}, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | None) -> ContactsCursor:
        if not text:
            return cls()
        try:
            raw = json.loads(text)
            return cls(raw.get("since"), [str(i) for i in raw.get("seen") or []], int(raw.get("page") or 1),
                       raw.get("deleted_since"))
        except (ValueError, TypeError, AttributeError):
            raise InputError(f"wealthbox: the stored contacts cursor is not readable ({text[:80]!r}); reset it with "
                             "`segsync reset-cursors`") from None


class UpdatedKeyset(Paginator):
    """Moves a :class:`ContactsCursor` over one answer; ``items`` are the records not read before."""

    def __init__(self, what: str, cursor: ContactsCursor, per_page: int,
                 extract: Callable[[Any], list[Mapping[str, Any]]]) -> None:
        super().__init__(what)
        self.cursor, self.per_page, self.extract = cursor, per_page, extract
        self.items: list[Mapping[str, Any]] = []

    def update(self, body: Any) -> bool:
        self._count()
        rows = self.extract(body)
        cur = self.cursor
        stamps = [(str(r.get("updated_at") or ""), str(r.get("id"))) for r in rows]
        if any(parse_time_or_none(t) is None for t, _ in stamps):
            raise InputError(f"wealthbox: {self.what} returned a record without a readable updated_at")
        seen = set(cur.seen)
        self.items = [r for r, (_, i) in zip(rows, stamps, strict=True) if i not in seen]
        full = len(rows) >= self.per_page
        top = max((t for t, _ in stamps), key=_key, default=None)
        if top is None:
            self.done = True
            return True
        if cur.since is not None and _key(top) < _key(cur.since):
            raise PagingLoopError(f"{self.what} returned records updated before updated_since {cur.since}")
        if cur.since is not None and _key(top) == _key(cur.since):  # the whole page is one time
            cur.seen = sorted(seen | {i for _, i in stamps})
            cur.page = cur.page + 1 if full else cur.page
        else:
            cur.seen = sorted({i for t, i in stamps if _key(t) == _key(top)})
            cur.since, cur.page = top, 1
        self.done = not full
        return True


def _key(stamp: str) -> datetime:
    value = parse_time_or_none(stamp)
    assert value is not None  # checked by the caller
    return value

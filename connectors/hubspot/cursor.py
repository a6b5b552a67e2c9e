"""The HubSpot pull cursors: what has been read, as data, with no I/O.

A contact cursor holds a keyset position ``(ts, last_id)`` over ``(lastmodifieddate, hs_object_id)``
(see :class:`connectors.kit.paging.Keyset`); the search queries that continue from it never use
HubSpot's ``after`` offset, so they never hit the 10,000-result stop.

Cursors are serialised as ``hs1:`` + compact JSON; a stored value that does not parse is an
:class:`~core.errors.InputError` naming the problem, never a traceback.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

from connectors.kit.paging import Keyset, KeysetStep, keyset_advance, keyset_step
from core.errors import InputError

PREFIX = "hs1:"


def to_ms(when: datetime) -> int:
    """A timezone-aware datetime as epoch milliseconds (naive ones are taken as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass
class ContactCursor:
    """Where a contact pull stands. ``phase`` "full" pages the list endpoint; "inc" searches."""

    phase: Literal["full", "inc"] = "full"
    after: str | None = None  # full phase: the list endpoint's paging token
    started: int | None = None  # full phase: ms when the full pull began (becomes the first ts)
    ts: int = 0  # inc phase: the keyset timestamp (ms)
    last_id: int | None = None  # inc phase: last hs_object_id read at ts; None = all of ts read
    runs: int = 0  # incremental runs since the last archived/merged sweep
    sweep_after: str | None = None  # a sweep in progress: the archived list's paging token
    sweeping: bool = False


@dataclass
class EngagementCursor:
    """Where an engagement pull stands: a watermark per stream, and a web-events window in progress."""

    deals: int = 0  # ms: deal events closed at or before this were emitted
    web: int = 0  # ms: web events that occurred at or before this were emitted
    web_window: list[int] = field(default_factory=list)  # [after_ms, before_ms] of a window being paged
    web_after: str | None = None  # its paging token
    web_refused: int = 0  # ms when the portal last refused the events API (0: never); not asked again for a while


def _encode(kind: str, obj: Any) -> str:
    return PREFIX + json.dumps({"k": kind, **asdict(obj)}, separators=(",", ":"), sort_keys=True)


def _decode(kind: str, text: str, cls: type[Any]) -> Any:
    where = f"hubspot {kind} cursor {text[:80]!r}"
    if not text.startswith(PREFIX):
        raise InputError(f"{where} is not a segsync HubSpot cursor (expected the prefix {PREFIX!r})")
    try:
        data = json.loads(text[len(PREFIX):])
    except ValueError as exc:
        raise InputError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.pop("k", None) != kind:
        raise InputError(f"{where} is not a {kind} cursor")
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise InputError(f"{where} has unknown keys {sorted(unknown)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise InputError(f"{where}: {exc}") from None


def encode(cursor: ContactCursor | EngagementCursor) -> str:
    """The opaque string the pipeline stores."""
    return _encode("contacts" if isinstance(cursor, ContactCursor) else "engagement", cursor)


encode_contacts = encode_engagement = encode  # the names the connector and tests use


def decode_contacts(text: str | None) -> ContactCursor:
    """Parse a stored contact cursor; None starts a full pull."""
    if text is None:
        return ContactCursor()
    cursor: ContactCursor = _decode("contacts", text, ContactCursor)
    if cursor.phase not in ("full", "inc") or not isinstance(cursor.ts, int):
        raise InputError(f"hubspot contacts cursor {text[:80]!r} has an invalid phase or timestamp")
    return cursor


def decode_engagement(text: str | None) -> EngagementCursor:
    """Parse a stored engagement cursor; None reads all history."""
    return EngagementCursor() if text is None else _decode("engagement", text, EngagementCursor)


@dataclass(frozen=True)
class SearchStep:
    """The next search to run from a cursor: a tie query within one timestamp, or a range query after it."""

    kind: KeysetStep
    body: dict[str, Any]


def next_search(cursor: ContactCursor, cap_ms: int, properties: list[str], limit: int) -> SearchStep | None:
    """The search that continues from ``cursor``, bounded above by ``cap_ms`` (exclusive); None when done."""
    kind = keyset_step(Keyset(cursor.ts, cursor.last_id), cap_ms)
    if kind is None:
        return None
    lmd = "lastmodifieddate"
    if kind == "tie":
        filters = [{"propertyName": lmd, "operator": "EQ", "value": str(cursor.ts)},
                   {"propertyName": "hs_object_id", "operator": "GT", "value": str(cursor.last_id)}]
        sort = "hs_object_id"
    else:
        filters = [{"propertyName": lmd, "operator": "GT", "value": str(cursor.ts)},
                   {"propertyName": lmd, "operator": "LT", "value": str(cap_ms)}]
        sort = lmd
    return SearchStep(kind, {"filterGroups": [{"filters": filters}], "sorts": [{"propertyName": sort,
                                                                                "direction": "ASCENDING"}],
                             "properties": properties, "limit": limit})


def advance(cursor: ContactCursor, step: SearchStep, stamps: list[tuple[int, int]], limit: int) -> tuple[
        ContactCursor, set[int]]:
    """Move the cursor past one search page of ``(lastmodified ms, id)`` rows; return it and the ids to emit
    (see :func:`connectors.kit.paging.keyset_advance`)."""
    pos, ids = keyset_advance(Keyset(cursor.ts, cursor.last_id), step.kind, stamps, limit, "hubspot search")
    out = ContactCursor(**asdict(cursor))
    out.ts, out.last_id = pos.ts, pos.last_id
    return out, ids

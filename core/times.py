"""Time, the one way segsync reads it: timezone-aware UTC inside; a tenant's zone only at the edges.

``now()`` is the clock every default falls back to; ``parse_time`` reads ISO 8601 (a trailing ``Z`` included)
and, when asked, epoch numbers; ``as_utc`` turns what a driver or a vendor hands back into aware UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal, overload

_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_EPOCH_AUTO = re.compile(r"^\d{9,13}(\.\d+)?$")

EpochUnit = Literal["ms", "auto"]


class NaiveTimeError(ValueError):
    """A time without a zone where one is required (``parse_time(..., naive_ok=False)``)."""


def now() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """``value`` in UTC; a naive value is taken to be UTC already (SQLite hands those back); None stays None."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_time(text: str, *, epoch: EpochUnit | None = None, naive_ok: bool = True) -> datetime:
    """Parse an ISO 8601 time (``Z`` or an offset) into aware UTC; raise ``ValueError`` saying why not.

    ``epoch="ms"`` also reads epoch milliseconds (HubSpot); ``epoch="auto"`` reads 9 to 13 digit epoch
    seconds, or milliseconds when the value is that large (CSV files). A naive time is taken as UTC
    unless ``naive_ok`` is False, when it is refused: a time without a zone is ambiguous at an edge
    where a person typed it.
    """
    raw = text  # not stripped: an edge that tolerates padding strips it first (CSV, HubSpot)
    if not raw:
        raise ValueError("the time is empty")
    if epoch == "ms" and _NUMBER.match(raw):
        return datetime.fromtimestamp(float(raw) / 1000, tz=UTC)
    if epoch == "auto" and _EPOCH_AUTO.match(raw):
        number = float(raw)
        if number > 1e11:  # 13 digits: milliseconds
            number /= 1000.0
        return datetime.fromtimestamp(number, UTC)
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not an ISO 8601 time (e.g. 2026-11-25T18:00:00Z)") from None
    if value.tzinfo is None or value.utcoffset() is None:
        if not naive_ok:
            raise NaiveTimeError(f"{raw!r} has no time zone (add Z or +00:00)")
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_time_or_none(value: object, *, epoch: EpochUnit | None = None) -> datetime | None:
    """Like :func:`parse_time` for values a vendor may leave empty or garble: None instead of an error."""
    if value is None or value == "":
        return None
    try:
        return parse_time(str(value).strip(), epoch=epoch)
    except ValueError:
        return None

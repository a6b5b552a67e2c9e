"""Reading CSV exports row by row, with the file and line of every row, and parsing their values.

Nothing here knows about contacts or events; :mod:`connectors.csvfile.connector` decides what a
good row is. Every problem is phrased as ``"file:line: reason"`` so a person can open the file
at that line.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.emails import looks_like_email
from core.errors import InputError
from core.times import parse_time as parse_time_core

MAX_LISTED = 20  # problems quoted in one error message; the rest are counted


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes: the cursor that says "nothing changed since"."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


@contextmanager
def read_rows(path: Path, delimiter: str) -> Iterator[tuple[list[str], Iterator[tuple[int, list[str]]]]]:
    """Context manager: the header and an iterator of ``(line, fields)``, line = where the row starts.

    Blank lines are skipped. A missing file, an empty file, undecodable text or broken quoting is
    an :class:`InputError` naming the file (and the line). The file is closed on leaving the block.
    """
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot open ({exc.strerror or exc})") from None

    def lines() -> Iterator[str]:
        # Decoded line by line (not by buffer) so a bad byte is reported on its own line.
        for number, raw in enumerate(fh, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}:{number}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                 "re-export as UTF-8") from None

    with fh:
        reader = csv.reader(lines(), delimiter=delimiter, strict=True)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise InputError(f"{path}:1: cannot read the header ({exc})") from None
        if header is None:
            raise InputError(f"{path}: the file is empty; expected a header row")

        def rows() -> Iterator[tuple[int, list[str]]]:
            start = reader.line_num + 1
            while True:
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    # Broken quoting: the reader cannot resynchronise reliably, so stop here.
                    raise InputError(f"{path}:{start}: malformed CSV ({exc})") from None
                line, start = start, reader.line_num + 1
                if fields and any(f.strip() for f in fields):
                    yield line, fields

        yield [h.strip() for h in header], rows()


def check_header(path: Path, header: list[str], required: dict[str, str]) -> dict[str, int]:
    """Column index of each required column (``{our name: header name}``); InputError if any is absent."""
    if len(set(header)) != len(header):
        dups = sorted({h for h in header if header.count(h) > 1})
        raise InputError(f"{path}:1: duplicate column names in the header: {', '.join(dups)}")
    missing = [f"{ours} (column {theirs!r})" for ours, theirs in required.items() if theirs not in header]
    if missing:
        raise InputError(f"{path}:1: header is missing {', '.join(missing)}; the header has: "
                         f"{', '.join(repr(h) for h in header)}. Map columns in the config if they are named "
                         "differently.")
    return {ours: header.index(theirs) for ours, theirs in required.items()}


def parse_time(text: str) -> datetime:
    """An aware UTC datetime from ISO 8601 (date, datetime, ``Z`` or offset) or epoch seconds/millis.

    Naive values are taken as UTC. Raises ValueError with a readable message.
    """
    raw = text.strip()
    if not raw:
        raise ValueError("timestamp is empty")
    try:
        value = parse_time_core(raw, epoch="auto")
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"timestamp {raw!r} is not ISO 8601 (e.g. 2025-03-01T14:30:00Z) or epoch seconds") from None
    return bounded(value, raw)


EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)  # clocks and time zones of exporting systems; beyond that, a bad value


def bounded(value: datetime, raw: str) -> datetime:
    """``value`` if it is a time an export can hold: not before 1900, not more than a day ahead of now.

    A placeholder such as 9999-12-31 is rejected here, at the edge, so it is never stored and never
    reaches scoring (where it would not even fit a timestamp).
    """
    if value < EARLIEST:
        raise ValueError(f"timestamp {raw!r} is before 1900")
    if value > datetime.now(UTC) + FUTURE_SLACK:
        raise ValueError(f"timestamp {raw!r} is in the future")
    return value


def parse_number(text: str) -> float | None:
    """A finite float, None for a blank; ValueError otherwise."""
    raw = text.strip()
    if not raw:
        return None
    try:
        number = float(raw)
    except ValueError:
        raise ValueError(f"value {raw!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"value {raw!r} is not a finite number")
    return number


def valid_email(email: str) -> bool:
    """A plausible address: one @, no spaces, a dot in the domain."""
    return looks_like_email(email)


def summarise(problems: list[str]) -> str:
    """The first problems, one per line, and how many more there were."""
    shown = problems[:MAX_LISTED]
    more = len(problems) - len(shown)
    return "\n  ".join(shown) + (f"\n  ... and {more} more" if more else "")

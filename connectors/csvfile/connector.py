"""A CRM that is a pair of CSV exports: contacts (id, email, any properties) and events.

Reads stream row by row, so a million-row export is never held in memory as text. Bad rows
(wrong number of fields, no id, duplicate id, unparseable email, time or value, an event for an
unknown contact) are skipped, logged as a warning and listed in :attr:`CsvConnector.problems` as
``"file:line: reason"``. A wrong header, or a file in which every row is bad, is an
:class:`InputError` instead: nothing useful could be read.

The cursor is the sha256 of the file: an unchanged export yields nothing on the next run.
Pushes and suppressions go to one output CSV (``id`` plus one column per property), rewritten
atomically (temporary file + rename) so a crash never leaves half a file.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar

from connectors.base import Contact, CrmConnector, EngagementEvent, Limits, PropertyUpdate, PullPage, RecordResult
from connectors.csvfile.output import merge_output
from connectors.csvfile.rows import (
    MAX_LISTED,
    check_header,
    file_digest,
    parse_number,
    parse_time,
    read_rows,
    summarise,
    valid_email,
)
from connectors.csvfile.seen import Fingerprints, fingerprint
from connectors.kit.paging import chunked
from connectors.kit.stats import CallStats
from core.emails import normalize_email
from core.errors import ConfigError, InputError

log = logging.getLogger("segsync.csv")

SOURCE = "csv"
PAGE_SIZE = 1000
EVENT_FIELDS = ("contact_id", "type", "timestamp", "value", "url", "session_id", "email")
DEFAULT_EVENT_COLUMNS = {"contact_id": "contact_id", "type": "type", "timestamp": "timestamp", "value": "value",
                         "url": "url", "session_id": "session_id", "email": "email"}
OPTIONAL_EVENT_FIELDS = {"value", "url", "session_id", "email"}
OPTOUT_COLUMN = "email_optout"


# A good event row before its id: contact id, type, time, value, email, attributes, content (what the id hashes).
_Row = tuple[str, str, datetime, float | None, str | None, dict[str, Any], str]


def _engagement(row: _Row, occurrence: int) -> EngagementEvent:
    """The event of a good row that is the ``occurrence``-th with its content in the file."""
    cid, etype, at, value, email, attributes, content = row
    event_id = "csv:" + hashlib.sha256(f"{content}\x1e{occurrence}".encode()).hexdigest()[:32]
    return EngagementEvent(SOURCE, cid, etype, at, value, event_id, email, attributes)


class CsvConnector(CrmConnector):
    """Contacts and engagement from CSV files; property values written to an output CSV."""

    name: ClassVar[str] = SOURCE
    # Files have no rate limit. Every batch rewrites the whole output file, so batches are large:
    # a million-contact push is four rewrites, not a hundred.
    limits: ClassVar[Limits] = Limits(batch_size=250_000, requests_per_window=1_000_000, window_seconds=1.0,
                                      page_size=PAGE_SIZE)

    def __init__(self, contacts: Path | str, events: Path | str | None = None, *, delimiter: str = ",",
                 id_column: str | None = "id", email_column: str | None = "email",
                 created_column: str | None = None, event_columns: dict[str, str] | None = None,
                 output: Path | str | None = None) -> None:
        if id_column is None and email_column is None:
            raise ConfigError("csv: give id_column or email_column (contacts need a key)")
        if len(delimiter) != 1:
            raise ConfigError(f"csv: delimiter must be one character, got {delimiter!r}")
        unknown = sorted(set(event_columns or {}) - set(EVENT_FIELDS))
        if unknown:
            raise ConfigError(f"csv: event_columns has unknown keys {', '.join(unknown)}; "
                              f"known: {', '.join(EVENT_FIELDS)}")
        self.contacts_path = Path(contacts)
        self.events_path = Path(events) if events is not None else None
        self.delimiter = delimiter
        self.id_column = id_column
        self.email_column = email_column
        self.created_column = created_column
        self.event_columns = {**DEFAULT_EVENT_COLUMNS, **(event_columns or {})}
        self.explicit_event_columns = set(event_columns or {})
        self.output = Path(output) if output is not None else None
        self.problems: list[str] = []
        self._rows_read = {"contacts": 0, "events": 0}
        self.calls = CallStats()  # one "output.write" per atomic rewrite of the output file
        self._quiet: list[str] | None = None

    # -- pulling ---------------------------------------------------------------------------

    def _problem(self, path: Path, line: int, reason: str) -> None:
        message = f"{path}:{line}: {reason}"
        if self._quiet is not None:  # a re-read (ids for the events check): already reported once
            self._quiet.append(message)
            return
        self.problems.append(message)
        log.warning("skipped row %s", message)

    def _contact_rows(self) -> Iterator[Contact]:
        """Good contacts in file order; bad rows recorded as problems."""
        path = self.contacts_path
        with read_rows(path, self.delimiter) as (header, rows):
            required = {k: v for k, v in (("id", self.id_column), ("email", self.email_column),
                                          ("created", self.created_column)) if v}
            cols = check_header(path, header, required)
            keys = set(cols.values())
            props = [(i, h) for i, h in enumerate(header) if i not in keys and h]
            seen: dict[str, int] = {}
            good = bad = 0
            for line, fields in rows:
                self._rows_read["contacts"] += 1
                contact = self._contact(path, line, fields, header, cols, props, seen)
                if contact is None:
                    bad += 1
                    continue
                good += 1
                yield contact
        if bad and not good:
            found = self._quiet if self._quiet is not None else self.problems
            raise InputError(f"{path}: every one of the {bad} contact rows is bad:\n  {summarise(found[-bad:])}")

    def _contact(self, path: Path, line: int, fields: list[str], header: list[str], cols: dict[str, int],
                 props: list[tuple[int, str]], seen: dict[str, int]) -> Contact | None:
        if len(fields) != len(header):
            self._problem(path, line, f"expected {len(header)} fields, found {len(fields)}")
            return None
        email = None
        if "email" in cols:
            raw = fields[cols["email"]].strip()
            email = normalize_email(raw)
            if email is not None and not valid_email(email):
                self._problem(path, line, f"email {raw!r} is not a valid address")
                return None
        vendor_id = fields[cols["id"]].strip() if "id" in cols else (email or "")
        if not vendor_id:
            self._problem(path, line, f"no {'id' if 'id' in cols else 'email'} (column "
                                      f"{self.id_column if 'id' in cols else self.email_column!r} is blank)")
            return None
        if vendor_id in seen:
            self._problem(path, line, f"duplicate id {vendor_id!r} (first on line {seen[vendor_id]})")
            return None
        created = None
        if "created" in cols and fields[cols["created"]].strip():
            try:
                created = parse_time(fields[cols["created"]])
            except ValueError as exc:
                self._problem(path, line, f"column {self.created_column!r}: {exc}")
                return None
        seen[vendor_id] = line
        properties = {name: fields[i].strip() for i, name in props if fields[i].strip()}
        # The export's row order is often its time order; scoring's time-ordered check needs it back.
        properties["_source_row"] = str(line)
        return Contact(SOURCE, vendor_id, email, properties, created_at=created)

    def pull_contacts(self, cursor: str | None, run_started: datetime) -> Iterator[PullPage]:
        """All contacts in pages of 1,000; nothing when the file is unchanged since ``cursor``."""
        digest = file_digest(self.contacts_path) if self.contacts_path.exists() else None
        if digest is not None and cursor == digest:
            return
        for page, last in chunked(self._contact_rows(), PAGE_SIZE):
            # The cursor rides on the last page only: it covers the whole file.
            yield PullPage(contacts=page, cursor=digest if last else None)

    def _known_ids(self) -> Fingerprints:
        """Ids of the good contact rows, as fingerprints (problems found on the way are not recorded twice)."""
        reads = self._rows_read["contacts"]
        self._quiet = []
        try:
            return Fingerprints(fingerprint(c.vendor_id) for c in self._contact_rows())
        finally:
            self._quiet = None
            self._rows_read["contacts"] = reads

    def pull_engagement(self, cursor: str | None, run_started: datetime) -> Iterator[PullPage]:
        """All events in pages of 1,000 (none without an events file or when it is unchanged)."""
        path = self.events_path
        if path is None:
            return
        digest = file_digest(path) if path.exists() else None
        if digest is not None and cursor == digest:
            return
        for page, last in chunked(self._event_rows(path), PAGE_SIZE):
            yield PullPage(events=page, cursor=digest if last else None)

    def _event_rows(self, path: Path) -> Iterator[EngagementEvent]:
        """The good event rows of ``path``; a file whose every row is bad is an :class:`InputError`.

        Rows are checked a block at a time against fingerprints of the contact ids and of the rows
        seen before (8 bytes per row, not a string): the memory of a read does not follow the file.
        """
        known = self._known_ids()
        with read_rows(path, self.delimiter) as (header, rows):
            required = {k: v for k, v in self.event_columns.items()
                        if k not in OPTIONAL_EVENT_FIELDS or k in self.explicit_event_columns}
            if "timestamp" not in self.explicit_event_columns and "timestamp" not in header and "occurred_at" in header:
                required["timestamp"] = "occurred_at"
            cols = check_header(path, header, required)
            cols.update({k: header.index(v) for k, v in self.event_columns.items() if k not in cols and v in header})
            attr_cols = [(i, h) for i, h in enumerate(header) if i not in set(cols.values()) and h]
            seen_rows = Fingerprints()
            repeats: dict[int, int] = {}  # fingerprint of a row seen more than once -> how many times so far
            good = bad = 0
            while block := list(islice(rows, PAGE_SIZE)):
                self._rows_read["events"] += len(block)
                cid_at = cols["contact_id"]
                flags = known.contains([fingerprint(f[cid_at].strip()) if len(f) == len(header) else 0
                                        for _, f in block])
                parsed = [self._event(path, line, fields, header, cols, attr_cols, is_known)
                          for (line, fields), is_known in zip(block, flags, strict=True)]
                good_rows = [p for p in parsed if p is not None]
                bad += len(parsed) - len(good_rows)
                good += len(good_rows)
                prints = [fingerprint(row[-1]) for row in good_rows]
                for row, key, first in zip(good_rows, prints, seen_rows.add_new(prints), strict=True):
                    count = 1 if first else repeats.get(key, 1) + 1
                    if not first:
                        repeats[key] = count
                    yield _engagement(row, count)
            if bad and not good:
                raise InputError(
                    f"{path}: every one of the {bad} event rows is bad:\n  {summarise(self.problems[-bad:])}"
                )

    def _event(
        self,
        path: Path,
        line: int,
        fields: list[str],
        header: list[str],
        cols: dict[str, int],
        attr_cols: list[tuple[int, str]],
        is_known: bool,
    ) -> _Row | None:
        if len(fields) != len(header):
            self._problem(path, line, f"expected {len(header)} fields, found {len(fields)}")
            return None
        cid = fields[cols["contact_id"]].strip()
        etype = fields[cols["type"]].strip()
        if not cid:
            self._problem(path, line, "no contact id")
            return None
        if not is_known:
            self._problem(path, line, f"contact id {cid!r} is not in {self.contacts_path.name}")
            return None
        if not etype:
            self._problem(path, line, "no event type")
            return None
        try:
            at = parse_time(fields[cols["timestamp"]])
            value = parse_number(fields[cols["value"]]) if "value" in cols else None
        except ValueError as exc:
            self._problem(path, line, str(exc))
            return None
        attributes: dict[str, Any] = {name: fields[i].strip() for i, name in attr_cols if fields[i].strip()}
        for key in ("url", "session_id"):
            if key in cols and fields[cols[key]].strip():
                attributes[key] = fields[cols[key]].strip()
        email = normalize_email(fields[cols["email"]]) if "email" in cols else None
        # Stable across re-exports: the row's content, plus which repeat of an identical row it is.
        content = "\x1f".join([cid, etype, at.isoformat(), "" if value is None else repr(value),
                               *(f"{k}={v}" for k, v in sorted(attributes.items()))])
        return cid, etype, at, value, email, attributes, content

    # -- writing ---------------------------------------------------------------------------

    def ensure_schema(self, property_name: str, segment_names: Sequence[str], score_names: Sequence[str]) -> None:
        """Nothing to create: the output file grows a column for any new property."""

    def _output_path(self) -> Path:
        if self.output is None:
            raise ConfigError("csv: pushing needs an output file (crm.output in the config)")
        return self.output

    def _merge(self, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        merge_output(self._output_path(), changes)
        self.calls.count("output.write")

    def push_properties(self, updates: Sequence[PropertyUpdate]) -> list[RecordResult]:
        """Merge the values into the output CSV (one atomic rewrite); every update is "sent"."""
        if not updates:
            return []
        self._merge([(u.key, dict(u.properties)) for u in updates])
        return [RecordResult(u.key, "sent") for u in updates]

    def suppress(self, email: str, vendor_id: str | None, property_name: str) -> RecordResult:
        """Record the opt-out in the output (``email_optout=true``) and clear the segment property."""
        key = vendor_id
        if key is None:
            wanted = normalize_email(email)
            self._quiet = []
            try:
                key = next((c.vendor_id for c in self._contact_rows() if c.email == wanted), None)
            finally:
                self._quiet = None
        if key is None:
            return RecordResult(email, "skipped", f"no contact with this email in {self.contacts_path.name}")
        self._merge([(key, {OPTOUT_COLUMN: "true", property_name: ""})])
        return RecordResult(key, "sent")

    def stats(self) -> dict[str, Any]:
        """Rows read per file, bad rows skipped, output rewrites."""
        return self.calls.as_dict(
            ("output.write",),
            {
                "rows_read": dict(self._rows_read),
                "bad_rows": len(self.problems),
                "quarantined": self.problems[:MAX_LISTED],
                "output_writes": self.calls.calls["output.write"],
            },
        )

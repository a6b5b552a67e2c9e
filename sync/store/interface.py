"""The sync store's interface: what the pipeline, the propagation handlers, the server and the CLI
may ask of the state segsync keeps between runs. :class:`sync.store.sql.SqlStore` implements it over
SQLAlchemy (SQLite and PostgreSQL); ``sync.store.open_store`` opens one.

Aggregates: identity (contacts, vendor identities, aliases, events), sent state (cursors, last-sent
values, per-record outcomes, scores, segments) and runs (run log, tenant lock).
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from connectors.base import Contact, EngagementEvent, VendorObject
from core.errors import SegsyncError
from sync.store.chunks import ContactChunk


class TenantBusy(SegsyncError):
    """Another run of this tenant is in progress."""


class LockLost(SegsyncError):
    """The tenant's run lock is no longer held (its database session ended, or the lease was taken over)."""


class TenantLease:
    """A held tenant lock. :meth:`check` (the fencing check) raises :class:`LockLost` once it is not held.

    The run calls it before every batch it sends and the connectors before every vendor call (each
    attempt and each split batch), so a run that lost its lock sends no request after it could know:
    only a request already on the wire when the lock went can still land.
    Thread-safe: a connector may call it from its worker threads.
    """

    def __init__(self, tenant_id: str, still_held: Callable[[], bool] | None = None) -> None:
        self.tenant_id = tenant_id
        self._still_held = still_held or (lambda: True)
        self._lock = threading.Lock()  # the check may run a query on the lease's one connection
        self.lost = False

    def check(self) -> None:
        """Raise :class:`LockLost` unless the lock is still ours."""
        with self._lock:
            if not self.lost:
                try:
                    self.lost = not self._still_held()
                except Exception:
                    self.lost = True
        if self.lost:
            raise LockLost(f"tenant {self.tenant_id}: the run lock was lost; stopping before sending more "
                           "(the rest is sent by the next run)")


@dataclass
class PageResult:
    """What storing one pulled page did: contacts new and changed, events stored."""

    new: int = 0
    changed: int = 0
    events: int = 0


class Store(ABC):
    """All sync state behind one small API (every method is scoped to one tenant)."""

    engine: Engine  # the database the consent ledger and outbox share (one schema, one migration history)

    @abstractmethod
    def migrate(self) -> None:
        """Bring the schema to the latest revision (sync and consent tables alike)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connections."""

    # ---- identity: contacts, identities, aliases, events

    @abstractmethod
    def store_page(self, tenant_id: str, contacts: Sequence[Contact], events: Sequence[EngagementEvent],
                   cursor: tuple[str, str | None] | None) -> PageResult:
        """Store a pulled page and (in the same transaction) its stream's cursor."""

    @abstractmethod
    def contacts(self, tenant_id: str) -> list[dict[str, Any]]:
        """Every live (not archived or merged) contact, as column dicts."""

    @abstractmethod
    def property_history(self, tenant_id: str, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Every stored contact property change (of ``names`` only, if given): ``contact_id``, ``name``,
        ``valid_from`` (UTC), ``value``."""

    def property_history_rows(self, tenant_id: str, names: Sequence[str]) -> Iterator[tuple[str, str, datetime, Any]]:
        """The property changes of ``names`` as (contact_id, name, valid_from, value) tuples, streamed: what scoring
        reads for a whole book. Stores may override it with a streaming read."""
        for r in self.property_history(tenant_id, names):
            yield r["contact_id"], r["name"], r["valid_from"], r["value"]

    @abstractmethod
    def addresses(self, tenant_id: str, contact_ids: Sequence[str] | None = None) -> dict[str, set[str]]:
        """contact id -> every email known for the person (current, at each vendor, former)."""

    @abstractmethod
    def contact_by_email(self, tenant_id: str, email: str) -> str | None:
        """The contact id for an email, current or an alias (None when unknown)."""

    @abstractmethod
    def email_for_vendor_id(self, tenant_id: str, source: str, vendor_id: str) -> str | None:
        """The current email of the contact a vendor id belongs to (None when unknown)."""

    @abstractmethod
    def vendor_ids(self, tenant_id: str, source: str) -> dict[str, str]:
        """contact id -> the live vendor id at ``source``."""

    @abstractmethod
    def identity_emails(self, tenant_id: str, source: str) -> dict[str, str]:
        """contact id -> the email ``source`` knows the person by."""

    @abstractmethod
    def source_addresses(self, tenant_id: str, source: str, contact_id: str) -> list[str]:
        """Every email ``source`` knows the person by (one per live record there; two after a merge elsewhere)."""

    @abstractmethod
    def events(self, tenant_id: str) -> Iterator[dict[str, Any]]:
        """Every stored engagement event (streamed)."""

    def contact_stream(self, tenant_id: str) -> Iterator[dict[str, Any]]:
        """The live contacts (contact_id, email, created_at, properties), streamed: for reads of a whole book that
        must not hold every contact at once. Stores may override it with a streaming read."""
        for c in self.contacts(tenant_id):
            yield {k: c[k] for k in ("contact_id", "email", "created_at", "properties")}

    def property_values(self, tenant_id: str, name: str) -> Iterator[tuple[str, str]]:
        """(contact id, value as text) of the live contacts with a non-empty property ``name``, streamed. Stores
        may override it with a read that extracts the one value in the database."""
        for c in self.contact_stream(tenant_id):
            value = (c["properties"] or {}).get(name)
            if value not in (None, ""):
                yield c["contact_id"], str(value)

    def contact_texts(self, tenant_id: str) -> Iterator[tuple[str, str | None, str | None, str]]:
        """The live contacts as (contact_id, email, created_at, properties) with the time and the properties as
        the store keeps them (text, JSON text), streamed: for digests of a whole book, without building a
        datetime and a dict per contact. Stores may override it with a read that skips decoding."""
        for c in self.contact_stream(tenant_id):
            created = c["created_at"]
            yield (c["contact_id"], c["email"], created.isoformat() if created is not None else None,
                   json.dumps(c["properties"] or {}, sort_keys=True, default=str))

    def event_rows(self, tenant_id: str) -> Iterator[tuple[Any, ...]]:
        """Every stored event as a plain tuple (contact_id, type, occurred_at, value, url, session_id), streamed:
        what scoring reads for a whole book, without a dict per event. Stores may override it with a faster read."""
        for e in self.events(tenant_id):
            yield (e["contact_id"], e["type"], e["occurred_at"], e["value"], e["url"], e["session_id"])

    def esp_statuses(self, tenant_id: str) -> dict[str, str | None]:
        """contact id -> the ESP status last seen, for every live contact. Stores may override it with a narrower
        read than :meth:`contacts` (which carries every property)."""
        return {c["contact_id"]: c.get("esp_status") for c in self.contacts(tenant_id)}

    @abstractmethod
    def counts(self, tenant_id: str) -> dict[str, int]:
        """``{"contacts": n, "events": n}``."""

    # ---- reads by chunk: a run gates, plans and pushes a book without holding all of it

    @abstractmethod
    def contact_chunk(self, tenant_id: str, after: str | None, limit: int, *, sent: bool = True) -> ContactChunk:
        """Up to ``limit`` live contacts with ids after ``after`` (None: from the first), in id order, with their
        live identities, every address and (``sent``) the last-sent and in-flight rows of each destination."""

    @abstractmethod
    def esp_audience(self, tenant_id: str, source: str) -> Iterator[tuple[str, str, str | None]]:
        """(email ``source`` knows, its vendor id, the contact's ESP status) per live identity there, streamed."""

    @abstractmethod
    def sent_emails(self, tenant_id: str, source: str, destinations: Sequence[str]) -> Iterator[tuple[str, str, str]]:
        """(destination, email at ``source``, last-sent value) per last-sent row of ``destinations``, streamed."""

    # ---- sent state: cursors, last-sent, outcomes, scores, segments

    @abstractmethod
    def cursor(self, tenant_id: str, stream: str) -> str | None:
        """Where the stream's next pull starts (None: from the beginning)."""

    @abstractmethod
    def stream_state(self, tenant_id: str) -> dict[str, list[dict[str, Any]]]:
        """``{"streams": [{stream, value, updated_at}], "destinations": [{destination, records, last_sent_at}]}``."""

    @abstractmethod
    def reset_cursors(self, tenant_id: str, streams: Sequence[str] | None = None) -> list[str]:
        """Forget pull cursors (all, or the named streams) so the next run pulls in full; returns the streams reset."""

    @abstractmethod
    def last_sent(self, tenant_id: str, destination: str) -> dict[str, str]:
        """key -> canonical value last confirmed by the vendor, for one destination."""

    @abstractmethod
    def in_flight(self, tenant_id: str, destination: str) -> set[str]:
        """Keys sent to ``destination`` whose vendor answer never arrived (the run died): outcome unknown."""

    @abstractmethod
    def intend_batch(
        self, tenant_id: str, run_id: int | None, destination: str, possible: Iterable[tuple[str, str]]
    ) -> None:
        """Write-ahead before a batch is sent: (key, value the vendor may hold either way), marked in flight."""

    @abstractmethod
    def destinations(self, tenant_id: str, prefix: str) -> list[str]:
        """Destinations with last-sent rows whose name starts with ``prefix``."""

    @abstractmethod
    def confirm_batch(self, tenant_id: str, run_id: int | None, destination: str,
                      confirmed: Iterable[tuple[str, str | None]], outcomes: Iterable[tuple[str, str, str]]) -> None:
        """After the vendor answered one batch: write last-sent values (None deletes) and outcomes together."""

    @abstractmethod
    def forget_sent(self, tenant_id: str, key: str, prefix: str) -> None:
        """Drop one contact's last-sent rows under a destination prefix (after an opt-out cleared them)."""

    @abstractmethod
    def save_scores(self, tenant_id: str, rows: Iterable[dict[str, Any]]) -> None:
        """Replace the tenant's scores (``rows`` may be a generator: it is read in batches)."""

    @abstractmethod
    def score_rows(self, tenant_id: str) -> Iterator[tuple[str, str, float | None, str | None]]:
        """The saved scores as (contact_id, score, value, label), streamed."""

    @abstractmethod
    def confirm_segments(self, tenant_id: str, at: datetime | None = None) -> None:
        """The saved segment assignment holds as of ``at`` (a run that reused it): open spells are last assigned
        then, as :meth:`save_segments` of the same members would record."""

    @abstractmethod
    def save_segments(self, tenant_id: str, members: dict[str, set[str]], holdout: dict[str, set[str]],
                      at: datetime | None = None) -> None:
        """Replace the tenant's segment members and holdouts, and record membership spells (as of ``at``)."""

    @abstractmethod
    def segment_history(self, tenant_id: str) -> list[dict[str, Any]]:
        """Every spell of segment membership: segment, contact_id, holdout, first/last assigned, left_at."""

    @abstractmethod
    def segment_members(self, tenant_id: str) -> list[dict[str, Any]]:
        """The stored segment assignment rows."""

    # ---- data marks: what a run may skip because nothing it reads changed

    @abstractmethod
    def data_version(self, tenant_id: str, name: str = "events") -> int:
        """A counter the store raises in the same transaction whenever the tenant's stored ``name`` data
        (``"events"``: a new or changed event, an erasure) changes."""

    @abstractmethod
    def scoring_mark(self, tenant_id: str) -> str | None:
        """The fingerprint of the inputs the stored scores and segments were computed from (None: unknown)."""

    @abstractmethod
    def set_scoring_mark(self, tenant_id: str, value: str | None) -> None:
        """Store (None: clear) the fingerprint the tenant's stored scores and segments now match."""

    @abstractmethod
    def snapshot_stamp(self, tenant_id: str, names: Sequence[str]) -> tuple[int, datetime | None]:
        """(rows, latest ``observed_at``) of the stored property changes of ``names``."""

    # ---- runs: run log and lock

    # ---- vendor objects segsync created or adopted (tags, segments, properties)

    @abstractmethod
    def vendor_objects(self, tenant_id: str, system: str, kind: str, scope: str) -> dict[str, VendorObject]:
        """Recorded objects of one kind in one scope at one vendor (``system``: the connector's name), by name."""

    @abstractmethod
    def record_vendor_object(self, tenant_id: str, system: str, obj: VendorObject) -> None:
        """Insert or update one object's record; durable when this returns."""

    @abstractmethod
    def start_run(self, tenant_id: str, dry_run: bool) -> int:
        """Log a run as running; returns its id."""

    @abstractmethod
    def finish_run(self, run_id: int, status: str, report: dict[str, Any]) -> None:
        """Close a run with its status and report."""

    @abstractmethod
    def runs(self, tenant_id: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Logged runs, newest first."""

    @abstractmethod
    def outcomes(self, run_id: int) -> list[dict[str, Any]]:
        """Per-record outcomes of one run."""

    @abstractmethod
    def tenant_lock(self, tenant_id: str, ttl: timedelta = timedelta(hours=2)) -> AbstractContextManager[TenantLease]:
        """Hold the tenant's run lock, or raise :class:`TenantBusy`; runs left "running" by a dead holder
        are marked "interrupted". The lease's :meth:`~TenantLease.check` says whether it is still held."""

    # ---- erasure

    @abstractmethod
    def erase(self, tenant_id: str, email: str) -> int:
        """Delete a person's personal data across every aggregate; returns rows removed."""

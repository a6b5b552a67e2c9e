"""The sync store's interface: what the pipeline, the propagation handlers, the server and the CLI
may ask of the state segsync keeps between runs. :class:`sync.store.sql.SqlStore` implements it over
SQLAlchemy (SQLite and PostgreSQL); ``sync.store.open_store`` opens one.

Aggregates: identity (contacts, vendor identities, aliases, events), sent state (cursors, last-sent
values, per-record outcomes, scores, segments) and runs (run log, tenant lock).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine

from connectors.base import Contact, EngagementEvent
from core.errors import SegsyncError


class TenantBusy(SegsyncError):
    """Another run of this tenant is in progress."""


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
    def events(self, tenant_id: str) -> Iterator[dict[str, Any]]:
        """Every stored engagement event (streamed)."""

    @abstractmethod
    def counts(self, tenant_id: str) -> dict[str, int]:
        """``{"contacts": n, "events": n}``."""

    # ---- sent state: cursors, last-sent, outcomes, scores, segments

    @abstractmethod
    def cursor(self, tenant_id: str, stream: str) -> str | None:
        """Where the stream's next pull starts (None: from the beginning)."""

    @abstractmethod
    def last_sent(self, tenant_id: str, destination: str) -> dict[str, str]:
        """key -> canonical value last confirmed by the vendor, for one destination."""

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
    def save_scores(self, tenant_id: str, rows: list[dict[str, Any]]) -> None:
        """Replace the tenant's scores."""

    @abstractmethod
    def save_segments(self, tenant_id: str, members: dict[str, set[str]], holdout: dict[str, set[str]]) -> None:
        """Replace the tenant's segment members and holdouts."""

    @abstractmethod
    def segment_members(self, tenant_id: str) -> list[dict[str, Any]]:
        """The stored segment assignment rows."""

    # ---- runs: run log and lock

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
    def tenant_lock(self, tenant_id: str, ttl: timedelta = timedelta(hours=2)) -> AbstractContextManager[None]:
        """Hold the tenant's run lock, or raise :class:`TenantBusy`."""

    # ---- erasure

    @abstractmethod
    def erase(self, tenant_id: str, email: str) -> int:
        """Delete a person's personal data across every aggregate; returns rows removed."""

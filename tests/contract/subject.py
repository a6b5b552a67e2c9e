"""The contract's view of a connector: the :class:`Subject` base, the capabilities a case may need, and
:func:`needs`. Concrete subjects live in ``sandboxed.py`` (HTTP vendors over the sandbox) and
``local.py`` (files and the test fakes); ``subjects.py`` lists them all."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from connectors.base import CrmConnector, EspConnector, PropertyUpdate, PullPage, RecordResult, TagChange
from connectors.kit import RetrySettings

PROP = "segsync_segments"
TAG = "segsync:contract"
FAST = RetrySettings(max_attempts=4, initial_wait=0.0, max_wait=30.0, total_budget=60.0)

# Capabilities a case may need. A subject that lacks one says why in ``lacks``.
LIVE_SOURCE = "records change while a pull pages"
INCREMENTAL = "an incremental pull reads only what changed"
ARCHIVE = "archived records"
MERGE = "merged records"
PARTIAL_FAILURE = "per-record refusals inside an accepted batch"
HTTP = "an HTTP API (status codes, retries, rate limits, credentials)"
RETRY_AFTER = "a Retry-After header on its 429s"
WEBHOOKS = "webhooks"
NO_WEBHOOKS = "it sends no webhooks"

NO_HTTP = "it makes no HTTP calls: no status codes, rate limits, retries or credentials"


class Clock:
    """A simulator clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Subject:
    """Base adapter. ``kind`` is "crm" or "esp"; keys are vendor ids (CRM) or emails (ESP).

    Methods that raise ``NotImplementedError`` here are per-subject: every subject implements the pull and
    push ones; a capability a vendor does not have (archive, merge, webhooks, a live source) is declared in
    ``lacks`` with its reason, and the contract skips those cases instead of calling the method.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    lacks: ClassVar[dict[str, str]] = {}
    vendor: ClassVar[str] = ""  # the sandbox vendor name, for HTTP subjects

    def __init__(self, make_sandbox: Any, tmp_path: Path) -> None:
        self.make_sandbox = make_sandbox
        self.tmp_path = tmp_path

    def _missing(self, method: str) -> NotImplementedError:
        return NotImplementedError(f"{self.name} does not implement {method}(): implement it, or declare the "
                                   "capability in `lacks` so the contract skips the case")

    # ---- building and pulling
    def connect(self, **options: Any) -> CrmConnector | EspConnector:
        raise self._missing("connect")

    def started(self) -> datetime:
        """A run start: now, on the simulator's clock."""
        return datetime.now(UTC)

    def pull(self, conn: Any, cursor: str | None, started: datetime) -> Iterator[PullPage]:
        return conn.pull_contacts(cursor, started) if self.kind == "crm" else conn.pull_members(cursor, started)

    def live_ids(self) -> set[str]:
        """Vendor ids of every record a full pull must return."""
        raise self._missing("live_ids")

    def modify(self, ids: Sequence[str]) -> None:
        """Change these records at the vendor, after the run started."""
        raise NotImplementedError(self.lacks.get(LIVE_SOURCE, ""))

    def archive(self, vendor_id: str) -> None:
        raise self._missing("archive")

    def merge(self, survivor: str, loser: str) -> str:
        """Merge ``loser`` into ``survivor``; return the merged record's id (HubSpot now gives it a new one)."""
        raise self._missing("merge")

    # ---- pushing
    def prepare(self, conn: Any) -> None:
        """Create what pushes write to (idempotent)."""

    def push_keys(self, n: int) -> list[str]:
        raise self._missing("push_keys")

    def email_of(self, key: str) -> str:
        """The email address of the record ``key`` (an ESP's keys are emails)."""
        return key

    def push(self, conn: Any, keys: Sequence[str]) -> list[RecordResult]:
        if self.kind == "crm":
            return conn.push_properties([PropertyUpdate(k, {PROP: "a"}) for k in keys])
        return conn.push_tags([TagChange(k, active=(TAG,)) for k in keys])

    def refuse(self, keys: Sequence[str]) -> None:
        """Make the vendor refuse these records inside an otherwise accepted batch."""
        raise self._missing("refuse")

    def mark(self) -> None:
        """Forget the write calls so far."""

    def write_sizes(self, conn: Any) -> list[tuple[str, int, int]]:
        """(what, records carried, declared limit for that call) per write call since :meth:`mark`."""
        raise self._missing("write_sizes")

    def subscribe_requests(self) -> list[str]:
        """Requests that set anyone subscribed (or resubscribed) at the vendor."""
        return []

    # ---- HTTP subjects
    secrets: list[str]

    def connect_to(self, base_url: str, **options: Any) -> Any:
        """The connector against any server (a scripted one that misbehaves)."""
        raise self._missing("connect_to")

    def probe(self, conn: Any) -> None:
        """One pull through the connector's public interface (the scripted server answers it)."""
        list(self.pull(conn, None, datetime.now(UTC)))

    def webhook(self, tenant: str, secret: str, list_id: str, valid: bool) -> tuple[str, bytes, dict[str, str]]:
        """One opt-out webhook as the vendor sends it: (path, body, headers); ``valid=False`` signs it wrongly."""
        raise self._missing("webhook")

    paced_options: ClassVar[dict[str, Any]] = {}  # connect() options under which the client paces to a real plan
    probe_routes: ClassVar[dict[str, Any]] = {}  # path -> happy JSON answer, for the scripted server
    probe_target: ClassVar[str] = ""  # the path the scripted faults hit


def needs(subject: Subject, *capabilities: str) -> None:
    """Run the case only where it applies; elsewhere say which declared capability is missing, and why."""
    import pytest

    for capability in capabilities:
        if capability in subject.lacks:
            pytest.skip(f"does not apply to {subject.name}, which lacks '{capability}': {subject.lacks[capability]}")

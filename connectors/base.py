"""What the pipeline needs from a vendor, and the plain records that cross package lines.

A CRM connector and an ESP connector each implement a few methods; everything else
(cursors, diffing, consent) is the pipeline's job. Records here are plain frozen
dataclasses so ``sync`` can hand them to ``consent`` and ``scoring`` without those
packages importing ``connectors``; the consent fact a pull sees is ``consent.signals.ConsentSignal``,
the one type ``consent`` owns (connectors may import that module and ``core``, nothing else of ours).

Metadata such as batch sizes and rate limits are class attributes (:class:`Limits`), not
constants buried in loops, so the planner can cost a push before it is sent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from consent.signals import ConsentSignal

Outcome = Literal["sent", "failed", "suppressed", "skipped"]

#: The property a CRM connector sets to the contact's household (family) id, as a string, when its vendor
#: groups people into households (Wealthbox households, Redtail families). Features (household size,
#: household activity and value) and consent (never email a household through a member who opted out)
#: read it from here, so no code outside ``connectors/`` needs to know which vendor grouped them.
HOUSEHOLD_PROPERTY = "household_id"


@dataclass(frozen=True)
class Limits:
    """A vendor's published limits, declared as data so plans can be costed up front."""

    batch_size: int  # inputs per batch write call
    requests_per_window: int  # general rate limit
    window_seconds: float
    page_size: int  # records per read page
    search_per_second: float | None = None  # a separate, lower search bucket (HubSpot)
    max_connections: int | None = None  # simultaneous connections per key (Mailchimp)
    job_size: int | None = None  # operations per asynchronous batch job (Mailchimp /batches), if the vendor has one


@dataclass(frozen=True)
class Contact:
    """One person as a vendor sees them. ``vendor_id`` is unique within ``source``."""

    source: str  # "hubspot", "mailchimp", "csv", ...
    vendor_id: str
    email: str | None
    properties: dict[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None
    created_at: datetime | None = None
    archived: bool = False
    merged_into: str | None = None  # vendor id this record was merged into (CRM merges)
    previous_emails: tuple[str, ...] = ()  # known older addresses (email changes)
    status: str | None = None  # ESP subscription status as the vendor reports it


@dataclass(frozen=True)
class EngagementEvent:
    """Something a contact did, at a time: an open, a click, a page view, a deposit."""

    source: str
    contact_vendor_id: str
    type: str  # "email_sent", "email_open", "email_click", "page_view", "deposit", ...
    occurred_at: datetime
    value: float | None = None
    event_id: str = ""  # stable id for de-duplication across re-pulls
    email: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class PullPage:
    """One page of a pull. The pipeline stores it, then saves ``cursor`` - never before."""

    contacts: list[Contact] = field(default_factory=list)
    events: list[EngagementEvent] = field(default_factory=list)
    consent: list[ConsentSignal] = field(default_factory=list)
    cursor: str | None = None  # opaque; None means "leave the stored cursor as it is"
    total: int | None = None  # records the whole pull will yield, when the vendor says (progress bars only)


@dataclass(frozen=True)
class PropertyUpdate:
    """Set CRM properties on one contact. ``key`` is the vendor id."""

    key: str
    properties: dict[str, str]


@dataclass(frozen=True)
class TagChange:
    """Turn ESP tags on or off for one member, by email."""

    email: str
    active: tuple[str, ...] = ()
    inactive: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecordResult:
    """What happened to one record of a push: sent, failed (with the vendor's message), ..."""

    key: str
    outcome: Outcome
    message: str = ""


#: How a vendor object (:class:`VendorObject`) came to be segsync's.
CREATING = "creating"  # segsync asked the vendor to create it; the answer is not recorded yet (a crash may hide it)
CREATED = "created"  # segsync created it
ADOPTED = "adopted"  # it existed; the user (a config key) or the upgrade rule gave it to segsync
LOST = "lost"  # segsync's create was refused (the name was taken meanwhile): not segsync's


@dataclass(frozen=True)
class VendorObject:
    """A named object segsync writes into at a vendor - a Mailchimp tag (static segment), a HubSpot contact
    property - and how it became segsync's. ``scope`` is where the name is unique (an audience id, an object type)."""

    kind: str
    scope: str
    name: str
    vendor_id: str = ""
    how: str = CREATED
    note: str = ""

    @property
    def owned(self) -> bool:
        return self.how in (CREATED, ADOPTED)


class ObjectLedger(ABC):
    """What segsync created (or adopted) at one vendor, kept durably by the caller (the store, per tenant).

    A connector records an object *before* asking the vendor to create it (:data:`CREATING`) and again once
    the vendor answered (:data:`CREATED` with its id), so a crash in between never turns segsync's own object
    into a stranger's. Anything that exists at the vendor and is not recorded here is the customer's.
    """

    @abstractmethod
    def objects(self, kind: str, scope: str) -> dict[str, VendorObject]:
        """Recorded objects of this kind in this scope, by name."""

    @abstractmethod
    def record(self, obj: VendorObject) -> None:
        """Record (or update) one object; durable when this returns."""

    def sent_to(self, kind: str, name: str) -> set[str] | None:
        """The emails segsync last confirmed in the object ``name`` (for an install from before objects were
        recorded: the upgrade rule compares them with the object's members); None when not known."""
        return None


class MemoryLedger(ObjectLedger):
    """A ledger that lives as long as the connector (the default when no store is attached: checks, tests)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, str], VendorObject] = {}

    def objects(self, kind: str, scope: str) -> dict[str, VendorObject]:
        return {o.name: o for (k, s, _), o in self._rows.items() if (k, s) == (kind, scope)}

    def record(self, obj: VendorObject) -> None:
        self._rows[(obj.kind, obj.scope, obj.name)] = obj


class CrmConnector(ABC):
    """A CRM: pull contacts and engagement, keep our properties in its schema, push values, suppress."""

    name: ClassVar[str]
    limits: ClassVar[Limits]

    @abstractmethod
    def pull_contacts(self, cursor: str | None, run_started: datetime) -> Iterator[PullPage]:
        """Yield pages of contacts changed since ``cursor`` (None: everything), with consent signals.

        The cursor in each page must never point past ``run_started``.
        """

    def pull_engagement(self, cursor: str | None, run_started: datetime) -> Iterator[PullPage]:
        """Yield pages of engagement events since ``cursor``. Default: none."""
        return iter(())

    @abstractmethod
    def ensure_schema(self, property_name: str, segment_names: Sequence[str], score_names: Sequence[str]) -> None:
        """Create (idempotently) what we write to: property group, segment property and options, score properties."""

    @abstractmethod
    def push_properties(self, updates: Sequence[PropertyUpdate]) -> list[RecordResult]:
        """Write property values in as few calls as the vendor allows; one result per update."""

    @abstractmethod
    def suppress(self, email: str, vendor_id: str | None, property_name: str) -> RecordResult:
        """Opt the person out of email at the CRM and clear segsync's segment property."""

    def unsubscribe_many(self, people: Sequence[tuple[str, str | None]]) -> dict[str, RecordResult]:
        """Opt many people, ``(email, vendor id or None)``, out of email at the CRM (nothing else); a result
        per email. Default: one :meth:`suppress` each; a CRM with a batch write overrides it to spend fewer calls.
        """
        return {email: self.suppress(email, vendor_id, "") for email, vendor_id in dict(people).items()}

    def use_objects(self, ledger: ObjectLedger) -> None:
        """Where to record the objects this connector creates at its vendor (and look up which are segsync's).
        Default: ignored (a connector that creates nothing)."""
        return None

    def stats(self) -> dict[str, Any]:
        """API calls made so far, by endpoint class, plus 429s and retries."""
        return {}

    def fence_calls(self, guard: Callable[[], None] | None) -> None:
        """Run ``guard`` before every vendor call from now on (None: stop); it raises to stop a call unsent.

        The push passes the tenant lease's fencing check. Here it is only kept (``call_guard``): a connector
        that does not run it before its calls is fenced per batch only.
        """
        self.call_guard = guard


class EspConnector(ABC):
    """An email platform: pull members and engagement, push tags and static segments, unsubscribe."""

    name: ClassVar[str]
    limits: ClassVar[Limits]

    @abstractmethod
    def pull_members(self, cursor: str | None, run_started: datetime) -> Iterator[PullPage]:
        """Yield pages of members changed since ``cursor``, with consent signals from their status."""

    def pull_engagement(self, cursor: str | None, run_started: datetime) -> Iterator[PullPage]:
        """Yield pages of engagement events since ``cursor``. Default: none."""
        return iter(())

    def known_members(self, members: Mapping[str, tuple[str, str | None]], cursor: str | None) -> None:
        """What segsync already holds of the audience: email -> (vendor id, status), current as of the stored
        members ``cursor``. A connector may use it to read only what changed since. Default: ignored."""
        return None

    @abstractmethod
    def push_tags(self, changes: Sequence[TagChange]) -> list[RecordResult]:
        """Apply tag activations/deactivations; never touches subscription status. One result per change."""

    @abstractmethod
    def sync_segment(self, name: str, add: Sequence[str], remove: Sequence[str]) -> list[RecordResult]:
        """Add/remove emails to/from the static segment ``name`` (created if missing); result per email."""

    @abstractmethod
    def suppress(self, email: str, tag_names: Sequence[str]) -> RecordResult:
        """Unsubscribe the member (the one status change segsync makes) and deactivate ``tag_names``."""

    def use_objects(self, ledger: ObjectLedger) -> None:
        """Where to record the objects this connector creates at its vendor (and look up which are segsync's).
        Default: ignored (a connector that creates nothing)."""
        return None

    def stats(self) -> dict[str, Any]:
        """API calls made so far, by endpoint class, plus 429s and retries."""
        return {}

    def fence_calls(self, guard: Callable[[], None] | None) -> None:
        """Run ``guard`` before every vendor call from now on (None: stop); it raises to stop a call unsent.

        The push passes the tenant lease's fencing check. Here it is only kept (``call_guard``): a connector
        that does not run it before its calls is fenced per batch only.
        """
        self.call_guard = guard

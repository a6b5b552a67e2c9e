"""What a vendor's webhook means, as plain records: the interface between a vendor folder and the webhook core.

``consent.webhook`` owns everything that is the same for every vendor (tenant lookup, the size cap,
replay receipts, the one-transaction ledger and outbox write, answering fast). A vendor folder's
``webhook.py`` owns what is only true of that vendor: how its requests are authenticated and what its
bodies mean. The two meet here, in records that need neither package to import the other.

Flow of one request to ``/hooks/{tenant}/{vendor}{suffix}``:

1. ``admit(request, context)`` before the body is read: refuse an unconfigured tenant or a bad URL
   secret; return True to answer a validation ping (a GET) with 200 and do nothing else;
2. ``verify(request, body, context)``: check a signature over the raw body (raise :class:`Refused`);
3. ``parse(body, context)``: the consent facts and identity changes the body carries, or None.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

from core.errors import InputError

SIGNATURE_WINDOW = timedelta(minutes=5)
EMAIL_MARKETING, PROFILING = "email_marketing", "profiling"


class Refused(Exception):
    """A request refused before anything is written: HTTP status and a reason for the caller."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class HookRequest:
    """The parts of an HTTP request a vendor's checks look at (headers with lower-case names)."""

    method: str
    urls: tuple[str, ...]  # the URL as received, then as the public URL when segsync sits behind a proxy
    path_params: Mapping[str, str]
    headers: Mapping[str, str]
    now: datetime


@dataclass(frozen=True)
class HookContext:
    """What the tenant's config says, for one vendor's webhook."""

    webhook_secret: str
    purposes: Mapping[str, str]  # purpose -> lawful basis
    settings: Mapping[str, str] | None  # the vendor's own webhook settings (None: vendor not configured)
    resolve: Callable[[str, str], str | None] | None = None  # (vendor, vendor id) -> email or None
    normalize: Callable[[Any], str] = str  # the ledger's subject normaliser (raises InputError)

    def basis(self, purpose: str) -> str:
        """The tenant's lawful basis for ``purpose`` (consent when it declares none)."""
        return self.purposes.get(purpose, "consent")

    def email(self, value: Any, where: str) -> str:
        """A normalised email address from a body field, or a 400 naming the field."""
        try:
            email = self.normalize(value)
        except InputError as exc:
            raise Refused(400, f"{where}: {exc}") from None
        if "@" not in email:
            raise Refused(400, f"{where} is not an email address")
        return email


@dataclass(frozen=True)
class HookSignal:
    """One consent fact from a webhook. ``subject`` is an email, or ``vendor:id`` when only the id is known."""

    subject: str
    purpose: str
    state: Literal["granted", "withdrawn"]
    source: str
    occurred_at: datetime
    evidence: dict[str, Any] = field(default_factory=dict)
    receipt: str | None = None  # the vendor's own event key; None = one receipt for the whole body


@dataclass(frozen=True)
class HookAlias:
    """An email change the vendor reports (old -> new)."""

    old: str
    new: str
    occurred_at: datetime
    source: str


@dataclass(frozen=True)
class HookResult:
    """What one body means: consent facts and/or an identity change, and why (for the outbox)."""

    signals: tuple[HookSignal, ...] = ()
    alias: HookAlias | None = None
    reason: str = ""


class WebhookHandler(ABC):
    """One vendor's webhook: mounted at ``/hooks/{tenant}/{vendor}{suffix}`` for each of ``routes``."""

    vendor: ClassVar[str]
    routes: ClassVar[tuple[tuple[str, tuple[str, ...]], ...]]  # (suffix, methods)
    url_hint: ClassVar[str] = ""  # the suffix as `segsync check` shows it (secrets as placeholders)
    secret_in_url: ClassVar[bool] = False  # the URL carries the webhook secret: it must be served over https
    parse_in_thread: ClassVar[bool] = False  # big bodies: parse off the event loop

    def admit(self, request: HookRequest, context: HookContext) -> bool:
        """Checks before the body is read; True answers the request at once (a validation ping)."""
        return False

    def verify(self, request: HookRequest, body: bytes, context: HookContext) -> None:  # noqa: B027 - optional hook
        """Raise :class:`Refused` unless the body is authentic (no-op when ``admit`` authenticated it)."""

    @abstractmethod
    def parse(self, body: bytes, context: HookContext) -> HookResult | None:
        """The consent facts the body carries; None when it changes nothing. :class:`Refused` (400) if malformed."""


__all__ = [
    "EMAIL_MARKETING", "PROFILING", "SIGNATURE_WINDOW", "HookAlias", "HookContext", "HookRequest", "HookResult",
    "HookSignal", "Refused", "WebhookHandler",
]

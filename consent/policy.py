"""The pure rules of consent: normalising a subject, the current state, and what a basis allows.

Nothing here touches a database, so the rules can be property-tested on their own and the
ledger's SQL (which repeats the ordering for speed in :meth:`Ledger.decisions`) can be checked
against them.

The rule, in one place:

* the current state of a purpose is the state of the latest event by ``occurred_at``;
* a withdrawal beats a grant that happened at the same instant (when in doubt, don't);
* basis ``consent``: allowed only when the current state is ``granted`` (unknown = refused);
* basis ``legitimate_interest``: allowed unless the current state is ``withdrawn`` (an objection).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from core.emails import normalize_email
from core.errors import InputError

GRANTED = "granted"
WITHDRAWN = "withdrawn"
State = Literal["granted", "withdrawn"]
STATES: tuple[str, ...] = (GRANTED, WITHDRAWN)

CONSENT = "consent"
LEGITIMATE_INTEREST = "legitimate_interest"
Basis = Literal["consent", "legitimate_interest"]
BASES: tuple[str, ...] = (CONSENT, LEGITIMATE_INTEREST)

EMAIL_MARKETING = "email_marketing"
PROFILING = "profiling"
#: Purposes every tenant has; a tenant's policy may add more.
PURPOSES: tuple[str, ...] = (EMAIL_MARKETING, PROFILING)

#: Which purposes each propagation destination serves: a withdrawal of any of them is pushed
#: there (see :mod:`consent.outbox` for what each destination means). Destinations not listed
#: here receive every withdrawal (the safe default).
DESTINATION_PURPOSES: dict[str, frozenset[str]] = {
    "esp.unsubscribe": frozenset({EMAIL_MARKETING}),
    "crm.optout": frozenset({EMAIL_MARKETING}),
    # segsync's ESP tags/segments are both marketing and the output of profiling
    "esp.tags": frozenset({EMAIL_MARKETING, PROFILING}),
    "crm.segments": frozenset({PROFILING}),
}
#: Every destination, in the order they are enqueued.
DESTINATIONS: tuple[str, ...] = tuple(DESTINATION_PURPOSES)


MAX_EMAIL_LENGTH = 320
MAX_NAME_LENGTH = 64


class HasStateAt(Protocol):
    """Anything with an ``occurred_at`` and a ``state``: a stored event, a test tuple."""

    @property
    def occurred_at(self) -> datetime: ...

    @property
    def state(self) -> str: ...


@dataclass(frozen=True, slots=True)
class PurposeState:
    """The current state of one purpose for one subject, and where it came from."""

    state: str
    occurred_at: datetime
    source: str


@dataclass(frozen=True, slots=True)
class Decision:
    """What one contact may be used for under a tenant's policy, with a reason per purpose."""

    allowed_purposes: frozenset[str]
    reasons: dict[str, str] = field(default_factory=dict)

    def allows(self, purpose: str) -> bool:
        """True when ``purpose`` is allowed."""
        return purpose in self.allowed_purposes


def normalize_subject(email: str | None) -> str:
    """Lower-case and trim an email (or a vendor reference such as ``crm:123``).

    Raises :class:`InputError` for a blank, oversized or NUL-bearing value, because such a value
    cannot be a person and would only poison the ledger.
    """
    if not isinstance(email, str):
        raise InputError("email must be a string")
    value = normalize_email(email)  # the one normaliser; what follows only refuses what cannot be a person
    if not value:
        raise InputError("email is empty")
    if len(value) > MAX_EMAIL_LENGTH:
        raise InputError(f"email is longer than {MAX_EMAIL_LENGTH} characters")
    if "\x00" in value:
        raise InputError("email contains a NUL character")
    _check_utf8(value, "email")
    return value


def _check_utf8(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{what} is not valid Unicode (a lone surrogate)") from None


def subject_key(key: bytes, normalized_email: str) -> str:
    """The pseudonym of a subject: hex HMAC-SHA256 of the normalised email with the tenant key."""
    return hmac.new(key, normalized_email.encode("utf-8"), hashlib.sha256).hexdigest()


def sort_key(event: HasStateAt) -> tuple[datetime, int]:
    """Order events so that the last one is the current state (withdrawals last on ties)."""
    return (event.occurred_at, 1 if event.state == WITHDRAWN else 0)


def current_state(events: Iterable[HasStateAt]) -> str | None:
    """The current state from a subject's events for one purpose; None when there are none.

    Order-independent by construction: the maximum of :func:`sort_key` does not depend on the
    order the events arrive in, which matters because vendor signals arrive late and out of order.
    """
    best: HasStateAt | None = None
    for event in events:
        if best is None or sort_key(event) > sort_key(best):
            best = event
    return None if best is None else best.state


def is_allowed(state: str | None, basis: str) -> bool:
    """Whether a purpose with this current state may be used under ``basis``.

    An unknown basis is refused: a typo in a policy must fail closed, not open.
    """
    if basis == CONSENT:
        return state == GRANTED
    if basis == LEGITIMATE_INTEREST:
        return state != WITHDRAWN
    return False


def reason(state: str | None, basis: str) -> str:
    """A short, stable reason code for a decision (shown in run reports)."""
    if basis not in BASES:
        return f"unknown_basis:{basis}"
    if state == WITHDRAWN:
        return "withdrawn"
    if state == GRANTED:
        return "granted"
    return "no_grant" if basis == CONSENT else "no_objection"


def check_name(value: str, what: str) -> str:
    """Validate a short identifier (purpose, source, basis, tenant id)."""
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH or "\x00" in value:
        raise InputError(f"{what} must be a non-empty string of at most {MAX_NAME_LENGTH} characters")
    _check_utf8(value, what)
    return value


def check_aware(value: datetime, what: str) -> datetime:
    """Require a timezone-aware datetime and return it in UTC."""
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InputError(f"{what} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def destinations_for(purposes: Iterable[str], destinations: Iterable[str]) -> list[str]:
    """The destinations that must hear about the withdrawal of ``purposes``."""
    withdrawn = set(purposes)
    return [
        d for d in destinations if d not in DESTINATION_PURPOSES or DESTINATION_PURPOSES[d] & withdrawn
    ]


def bound_time(
    occurred: datetime, received: datetime, evidence: Mapping[str, Any] | None
) -> tuple[datetime, dict[str, Any] | None]:
    """Bound a claimed event time by the time it reached the ledger: a future time is *clamped*.

    Times come from vendors (an ESP's webhook fire time, a CRM's event time, pull signals) and
    preference centers; the ledger orders events by them, so a subscribe dated 2099 would beat
    every real unsubscribe until then. Clamping (rather than rejecting) keeps a withdrawal with a
    wrong clock: it still counts, as of its receipt. The preference center, which signs its own
    requests, is rejected beyond five minutes ahead instead (:mod:`consent.webhook_events`); what
    is within those minutes is clamped here like everything else. The claimed time stays in the evidence
    (``claimed_occurred_at``) so the record shows what the sender said.
    """
    out = dict(evidence) if evidence else None
    if occurred <= received:
        return occurred, out
    out = out or {}
    out["claimed_occurred_at"] = occurred.astimezone(UTC).isoformat()
    # Whole seconds, the vendors' precision (an ESP's webhook fire time): a real event from the same
    # second then ties with the clamped one, and a withdrawal wins the tie as always.
    return received.replace(microsecond=0), out

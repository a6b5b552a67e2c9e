"""The hosted preference page's logic: links, who a link is for, what they may change, and the write.

A subscriber's choices take the preference-center webhook's path: the same body is validated by
:func:`consent.webhook_events.parse_preferences` (purposes, notice version, provenance), then a
receipt, the ledger events and the outbox withdrawals are written in one transaction, exactly as
``consent.webhook`` writes them. Only the source differs (``preference_page``), so the ledger says
where the choice was made. A resubmitted form finds its receipt and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from consent.ledger import Ledger
from consent.outbox import Outbox
from consent.policy import WITHDRAWN, is_allowed, normalize_subject
from consent.propagate import enqueue_withdrawals
from consent.schema import consent_events, insert_ignoring_conflicts, webhook_receipts
from consent.webhook_events import TenantHooks, parse_preferences
from core.errors import InputError
from sync.config.models import TenantCfg
from sync.pages import tokens
from sync.run.gate import policy_of
from sync.store import Store

SOURCE = "preference_page"
FORM_TTL = timedelta(hours=2)
PURPOSE_TITLES = {"email_marketing": "Marketing email", "profiling": "Personalised recommendations"}
DEFAULT_NOTICES = {
    "email_marketing": (
        "Newsletters, market updates and invitations from {firm} by email. You can stop them at any time."
    ),
    "profiling": "{firm} uses your activity (emails opened, pages visited, account events) to estimate which of its "
    "services may interest you, so what you receive is more relevant. Nothing is inferred about your "
    "health, religion or other sensitive traits.",
}


def link_key(tenant: TenantCfg, purpose: str) -> bytes:
    """The tenant's key for one kind of page token (derived from its webhook secret)."""
    return tokens.derive_key(tenant.consent.webhook_secret.get_secret_value(), purpose)


def find_subject(store: Store, ledger: Ledger, tenant_id: str, subject_key: str) -> str | None:
    """The email behind a pseudonym: from the ledger, else from the contacts the store holds."""
    ev = consent_events.c
    with store.engine.connect() as conn:
        email = conn.execute(sa.select(ev.subject).where(ev.tenant_id == tenant_id, ev.subject_key == subject_key,
                                                         ev.subject.is_not(None)).limit(1)).scalar()
    if email:
        return str(email)
    for addresses in store.addresses(tenant_id).values():
        for address in addresses:
            if address and ledger.pseudonym(tenant_id, address) == subject_key:
                return normalize_subject(address)
    return None


def make_link(tenant: TenantCfg, store: Store, ledger: Ledger, email: str, base_url: str,
              *, now: datetime | None = None) -> tuple[str, datetime]:
    """A signed, expiring preference link for ``email`` (refused for someone segsync does not know)."""
    subject = normalize_subject(email)
    skey = ledger.pseudonym(tenant.id, subject)
    if find_subject(store, ledger, tenant.id, skey) is None:
        raise InputError(f"{subject} is not a contact of tenant {tenant.id!r} (not in its store or consent ledger): "
                         "run `segsync sync` first, or check the address")
    now = now or datetime.now(UTC)
    ttl = timedelta(days=tenant.pages.link_days)
    token = tokens.sign(link_key(tenant, tokens.LINK), tokens.LINK, {"t": tenant.id, "s": skey}, ttl, now=now)
    return f"{base_url.rstrip('/')}/p/{token}", now + ttl


@dataclass(frozen=True)
class Purpose:
    """One purpose as the page shows it."""

    name: str
    title: str
    notice: str
    basis: str
    allowed: bool
    since: datetime | None
    source: str | None


def purposes_of(tenant: TenantCfg, ledger: Ledger, email: str) -> list[Purpose]:
    """Every purpose of the tenant with its notice and the person's current state."""
    firm = tenant.name or tenant.id
    states = ledger.status(tenant.id, email)
    out = []
    for name, basis in sorted(policy_of(tenant).items()):
        state = states.get(name)
        notice = tenant.pages.notices.get(name) or DEFAULT_NOTICES.get(name, name).format(firm=firm)  # type: ignore[call-overload]
        out.append(
            Purpose(
                name,
                PURPOSE_TITLES.get(name, name),
                notice,
                basis,
                is_allowed(state.state if state else None, basis),
                state.occurred_at if state else None,
                state.source if state else None,
            )
        )
    return out


@dataclass(frozen=True)
class Outcome:
    """What a submission did."""

    status: str  # "recorded" | "unchanged" | "duplicate"
    recorded: int
    enqueued: int
    withdrawn: tuple[str, ...]


def record_choices(tenant: TenantCfg, ledger: Ledger, outbox: Outbox, email: str, wanted: dict[str, bool], *,
                   request_id: str, ip: str | None, user_agent: str | None, now: datetime | None = None) -> Outcome:
    """Record the purposes whose state changes, with provenance, through the webhook's path."""
    now = now or datetime.now(UTC)
    current = {p.name: p.allowed for p in purposes_of(tenant, ledger, email)}
    changes = {p: v for p, v in wanted.items() if p in current and current[p] != v}
    if not changes:
        return Outcome("unchanged", 0, 0, ())
    hooks = TenantHooks.from_config(tenant)
    doc: dict[str, Any] = {"email": email, "purposes": changes, "occurred_at": now.isoformat().replace("+00:00", "Z"),
                           "notice_version": tenant.pages.notice_version, "request_id": request_id,
                           "ip": (ip or "")[:512] or None, "user_agent": (user_agent or "")[:512] or None}
    body = json.dumps({k: v for k, v in doc.items() if v is not None}, sort_keys=True).encode()
    receipt = f"{SOURCE}:{hashlib.sha256(request_id.encode()).hexdigest()[:40]}"
    work = parse_preferences(hooks, body, receipt, now)  # the webhook's own validation (raises Reject)
    # The webhook's signals, with the page as their source (its evidence says where the choice was made).
    evidence = {k: v for k, v in dict(work.signals[0].evidence or {}).items() if k != "webhook"}
    signals = [replace(s, source=SOURCE, evidence={**evidence, "page": SOURCE}) for s in work.signals]
    with ledger.engine.begin() as conn:
        fresh = conn.execute(insert_ignoring_conflicts(conn, webhook_receipts).values(
            tenant_id=tenant.id, key=receipt, received_at=now)).rowcount
        if not fresh:
            return Outcome("duplicate", 0, 0, ())
        recorded = ledger.record_many(tenant.id, signals, conn=conn)
        emails = {ledger.pseudonym(tenant.id, email): normalize_subject(email)}
        enqueued = enqueue_withdrawals(
            conn, outbox, tenant.id, recorded, emails, hooks.destinations, reason="preference page"
        )
    withdrawn = tuple(sorted(e.purpose for e in recorded if e.state == WITHDRAWN))
    return Outcome("recorded", len(recorded), enqueued, withdrawn)

"""What webhook bodies mean for the ledger: the tenant's view, the work to write, the preference center's parser.

Vendor bodies are parsed in their vendor's folder (``connectors/<vendor>/webhook.py``) into the plain
records of :mod:`connectors.hooks`; :func:`vendor_work` turns those into :class:`Work`. A parser
raises :class:`Reject` (status and reason) before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors.hooks import SIGNATURE_WINDOW, HookContext, HookResult
from connectors.hooks import Refused as Reject
from consent.policy import DESTINATIONS, GRANTED, WITHDRAWN, normalize_subject
from consent.signals import ConsentSignal
from core.errors import InputError
from core.times import NaiveTimeError, parse_time

PREFERENCE_FIELDS = frozenset({"email", "purposes", "occurred_at", "notice_version", "request_id", "ip", "user_agent"})


@dataclass(frozen=True)
class TenantHooks:
    """What the webhook needs to know about one tenant.

    ``purposes`` maps purpose to lawful basis (recorded with each event); ``destinations`` are the
    outbox destinations a withdrawal is queued for; ``resolve(source, vendor_id)`` returns the
    email of a vendor's contact id, or None. ``vendors`` holds each configured vendor's webhook
    settings (what its config model's ``webhook_settings()`` returns) and ``roles`` its role
    (crm or esp), which decides where a withdrawal known only by a vendor id can go.
    """

    webhook_secret: str
    purposes: Mapping[str, str]
    vendors: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    destinations: tuple[str, ...] = DESTINATIONS
    resolve: Callable[[str, str], str | None] | None = None
    roles: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never print secrets
        return f"TenantHooks(purposes={dict(self.purposes)!r}, destinations={self.destinations!r})"

    @classmethod
    def from_config(
        cls, tenant: Any, *, resolve: Callable[[str, str], str | None] | None = None
    ) -> TenantHooks:
        """Build from a ``sync.config.TenantCfg`` (read by attribute; consent does not import sync)."""
        crm, esp = tenant.crm, getattr(tenant, "esp", None)
        destinations = [d for d in DESTINATIONS if esp is not None or not d.startswith("esp.")]
        vendors: dict[str, Mapping[str, str]] = {}
        roles: dict[str, str] = {}
        for role, cfg in (("crm", crm), ("esp", esp)):
            if cfg is not None:
                settings = getattr(cfg, "webhook_settings", None)
                vendors[cfg.type] = dict(settings()) if callable(settings) else {}
                roles[cfg.type] = role
        return cls(
            webhook_secret=tenant.consent.webhook_secret.get_secret_value(),
            purposes={p: cfg.basis for p, cfg in tenant.consent.purposes.items()},
            vendors=vendors,
            destinations=tuple(destinations),
            resolve=resolve,
            roles=roles,
        )

    def context(self, vendor: str) -> HookContext:
        """What a vendor's webhook handler may know of this tenant."""
        settings = self.vendors.get(vendor)
        return HookContext(self.webhook_secret, self.purposes, settings, self.resolve, normalize_subject)


@dataclass(frozen=True)
class Work:
    """A parsed, authenticated request, ready to be written."""

    # One receipt key per signal (parallel to ``signals``): one key for the whole body, except for
    # vendors whose events carry their own ids. An alias-only request has one key and no signals.
    receipts: tuple[str, ...]
    signals: tuple[ConsentSignal, ...] = ()
    alias: tuple[str, str, datetime] | None = None
    reason: str = ""
    alias_source: str = ""


def vendor_work(hooks: TenantHooks, result: HookResult, body_receipt: Callable[[], str]) -> Work:
    """The ledger's view of a vendor handler's result: receipts, signals with the tenant's basis, alias."""
    receipts = tuple(s.receipt or body_receipt() for s in result.signals) or (body_receipt(),)
    signals = tuple(
        ConsentSignal(s.subject, s.purpose, s.state, _basis(hooks, s.purpose), s.source, s.occurred_at,
                      evidence=dict(s.evidence), idempotency_key=f"{key}:{s.purpose}")
        for s, key in zip(result.signals, receipts, strict=False)
    )
    alias = (result.alias.old, result.alias.new, result.alias.occurred_at) if result.alias else None
    return Work(receipts, signals, alias, result.reason, result.alias.source if result.alias else "")


def _basis(hooks: TenantHooks, purpose: str) -> str:
    return hooks.purposes.get(purpose, "consent")


def parse_preferences(hooks: TenantHooks, body: bytes, receipt: str, now: datetime) -> Work:
    """What a signed preference-center body means: one event per purpose."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Reject(400, "body is not JSON") from None
    if not isinstance(doc, dict):
        raise Reject(400, "body must be a JSON object")
    unknown = sorted(set(doc) - PREFERENCE_FIELDS)
    if unknown:
        raise Reject(400, f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(PREFERENCE_FIELDS))})")
    email = _email(doc.get("email"), "email")
    purposes = doc.get("purposes")
    if not isinstance(purposes, dict) or not purposes:
        raise Reject(400, "purposes must be a non-empty object of purpose: true|false")
    for purpose, allowed in purposes.items():
        if purpose not in hooks.purposes:
            raise Reject(400, f"unknown purpose {purpose!r} (this tenant has {', '.join(sorted(hooks.purposes))})")
        if not isinstance(allowed, bool):
            raise Reject(400, f"purposes.{purpose} must be true or false")
    occurred = _iso_time(doc.get("occurred_at"), "occurred_at")
    if occurred > now + SIGNATURE_WINDOW:
        raise Reject(400, "occurred_at is in the future")
    notice = doc.get("notice_version")
    if notice is not None and (not isinstance(notice, str) or not 0 < len(notice) <= 64 or "\x00" in notice):
        raise Reject(400, "notice_version must be a string of 1..64 characters")
    if notice is None and any(purposes.values()):
        raise Reject(400, "notice_version is required to record a grant (what the person was shown)")
    evidence: dict[str, Any] = {"webhook": "preferences"}
    for key in ("request_id", "ip", "user_agent"):
        value = doc.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > 512:
            raise Reject(400, f"{key} must be a string of at most 512 characters")
        evidence[key] = value
    signals = tuple(
        ConsentSignal(
            email, purpose, GRANTED if allowed else WITHDRAWN, _basis(hooks, purpose), "preference_center",
            occurred, notice, evidence, f"{receipt}:{purpose}",
        )
        for purpose, allowed in sorted(purposes.items())
    )
    return Work((receipt,) * len(signals), signals, reason="preference center")


def _email(value: Any, where: str) -> str:
    try:
        email = normalize_subject(value)
    except InputError as exc:
        raise Reject(400, f"{where}: {exc}") from None
    if "@" not in email:
        raise Reject(400, f"{where} is not an email address")
    return email


def _iso_time(value: Any, where: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise Reject(400, f"{where} must be an ISO 8601 time with a zone, e.g. 2026-11-25T18:00:00Z")
    try:
        return parse_time(value, naive_ok=False)
    except NaiveTimeError:
        raise Reject(400, f"{where} has no time zone (add Z or +00:00)") from None
    except ValueError:
        raise Reject(400, f"{where} must be an ISO 8601 time with a zone, e.g. 2026-11-25T18:00:00Z") from None


__all__ = ["SIGNATURE_WINDOW", "Reject", "TenantHooks", "Work", "parse_preferences", "vendor_work"]

"""Opt-out propagation: the outbox handlers that act on vendors.

``consent`` owns the outbox (what must reach which system, with retries and leases) and only
queues; :class:`Propagator` turns each due action into connector calls for one tenant - unsubscribe
in the ESP, opt out in the CRM, remove segsync's tags, segments and properties - and forgets the
matching last-sent state so the next run does not put them back. A handler returns to confirm the
action and raises to have it retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from connectors.base import CrmConnector, EspConnector, PropertyUpdate, TagChange
from consent.ledger import Ledger
from consent.outbox import DrainReport, Outbox, OutboxAction, drain
from sync.config.models import TenantCfg
from sync.run.gate import key_lookup
from sync.run.plan import CRM, crm_desired
from sync.store.interface import Store

log = logging.getLogger("segsync.consent")


def propagate(store: Store, tenant: TenantCfg, crm: CrmConnector | None, esp: EspConnector | None) -> DrainReport:
    """Drain the tenant's due outbox actions through its connectors (one pass; failures stay queued)."""
    handlers = Propagator(store, tenant, crm, esp).handlers()
    outbox = Outbox(store.engine, mac_key=Ledger(store.engine, key_lookup([tenant])).chain_key)  # status edits re-MACed
    report = drain(outbox, handlers, tenant=tenant.id)
    if report.done or report.failed or report.retrying:
        log.info(
            "outbox for %s: %d done, %d retrying, %d failed", tenant.id, report.done, report.retrying, report.failed
        )
    return report


def queued(store: Store, tenant_id: str) -> int:
    """Opt-out actions of the tenant not yet confirmed by every system (the outbox depth)."""
    return Outbox(store.engine).depth(tenant_id)


class Propagator:
    """Turns outbox actions into connector calls; a handler returns to confirm and raises to retry."""

    def __init__(self, store: Store, tenant: TenantCfg, crm: CrmConnector | None, esp: EspConnector | None) -> None:
        self.store, self.tenant, self.crm, self.esp = store, tenant, crm, esp
        self.tags = [tenant.push.tag_prefix + s.name for s in tenant.segments]
        self.score_names = [s.name for s in tenant.scores if s.kind != "cluster"]
        self._esp_emails: dict[str, str] | None = None
        self._crm_sent: set[str] | None = None
        self._crm_vendor_ids: dict[str, str] | None = None

    def handlers(self) -> Mapping[str, Callable[[OutboxAction], None]]:
        out: dict[str, Callable[[OutboxAction], None]] = {}
        if self.esp is not None:
            out["esp.unsubscribe"] = self.esp_unsubscribe
            out["esp.tags"] = self.esp_tags
        if self.crm is not None:
            out["crm.optout"] = self.crm_optout
            out["crm.segments"] = self.crm_segments
        return out

    def _need_email(self, action: OutboxAction) -> str:
        if not action.email:
            raise LookupError("the action has no email (erased or unresolved); nothing can be sent")
        return action.email

    def _contact(self, email: str) -> str | None:
        return self.store.contact_by_email(self.tenant.id, email)

    def _esp_address(self, email: str, cid: str | None) -> str:
        """The address the ESP knows the person by (it may differ from the one that opted out)."""
        assert self.esp is not None
        if self._esp_emails is None:  # loaded once per drain
            self._esp_emails = self.store.identity_emails(self.tenant.id, self.esp.name)
        return (self._esp_emails.get(cid) if cid else None) or email

    def esp_unsubscribe(self, action: OutboxAction) -> None:
        assert self.esp is not None
        email = self._need_email(action)
        result = self.esp.suppress(self._esp_address(email, self._contact(email)), self.tags)
        if result.outcome == "failed":
            raise RuntimeError(result.message or "the ESP refused the unsubscribe")
        if cid := self._contact(email):
            self.store.forget_sent(self.tenant.id, cid, "esp.")

    def esp_tags(self, action: OutboxAction) -> None:
        assert self.esp is not None
        email = self._need_email(action)
        cid = self._contact(email)
        if cid is None or not any(
            cid in self.store.last_sent(self.tenant.id, d) for d in self.store.destinations(self.tenant.id, "esp.")
        ):
            return  # we never put anything there: nothing to remove
        email = self._esp_address(email, cid)
        results = self.esp.push_tags([TagChange(email=email, inactive=tuple(self.tags))])
        failed = [r for r in results if r.outcome == "failed"]
        if failed:
            raise RuntimeError(failed[0].message or "the ESP refused the tag removal")
        for dest in self.store.destinations(self.tenant.id, "esp.segment:"):
            if cid in self.store.last_sent(self.tenant.id, dest):
                self.esp.sync_segment(dest.split(":", 1)[1], [], [email])
        self.store.forget_sent(self.tenant.id, cid, "esp.")

    def _crm_ids(self) -> dict[str, str]:
        assert self.crm is not None
        if self._crm_vendor_ids is None:  # loaded once per drain
            self._crm_vendor_ids = self.store.vendor_ids(self.tenant.id, self.crm.name)
        return self._crm_vendor_ids

    def _crm_state(self) -> set[str]:
        if self._crm_sent is None:  # loaded once per drain
            self._crm_sent = set(self.store.last_sent(self.tenant.id, CRM))
        return self._crm_sent

    def crm_optout(self, action: OutboxAction) -> None:
        assert self.crm is not None
        email = action.email
        if email is None and action.payload.get("vendor") == self.crm.name:
            # Known only by the CRM's own id (a webhook for a contact we had not pulled yet).
            email = self.store.email_for_vendor_id(self.tenant.id, self.crm.name, str(action.payload.get("vendor_id")))
            if email is None:
                log.info(
                    "crm opt-out for %s: the CRM itself reported it and we hold nothing of theirs",
                    action.payload.get("vendor_ref"),
                )
                return
        email = email or self._need_email(action)
        cid = self._contact(email)
        vendor_id = self._crm_ids().get(cid) if cid else None
        result = self.crm.suppress(email, vendor_id, "")  # the opt-out itself (unsubscribe only)
        if result.outcome == "failed":
            raise RuntimeError(result.message or "the CRM refused the opt-out")
        if cid and vendor_id and cid in self._crm_state():
            # and every segsync property we wrote there (segments and scores) is cleared
            cleared = crm_desired([], {}, self.tenant.push.crm_property, self.score_names, self.tenant.push.crm_scores)
            failed = [
                r for r in self.crm.push_properties([PropertyUpdate(vendor_id, cleared)]) if r.outcome == "failed"
            ]
            if failed:
                raise RuntimeError(failed[0].message or "the CRM refused to clear segsync's properties")
        if cid:
            self.store.forget_sent(self.tenant.id, cid, "crm.")

    def crm_segments(self, action: OutboxAction) -> None:
        assert self.crm is not None
        email = self._need_email(action)
        cid = self._contact(email)
        vendor_id = self._crm_ids().get(cid) if cid else None
        if not cid or not vendor_id or cid not in self._crm_state():
            return
        cleared = crm_desired([], {}, self.tenant.push.crm_property, self.score_names, self.tenant.push.crm_scores)
        results = self.crm.push_properties([PropertyUpdate(vendor_id, cleared)])
        failed = [r for r in results if r.outcome == "failed"]
        if failed:
            raise RuntimeError(failed[0].message or "the CRM refused to clear the properties")
        self.store.forget_sent(self.tenant.id, cid, "crm.")

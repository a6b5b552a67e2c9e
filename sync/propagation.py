"""Opt-out propagation: the outbox handlers that act on vendors.

``consent`` owns the outbox (what must reach which system, with retries and leases) and only
queues; :class:`Propagator` turns each due action into connector calls for one tenant - unsubscribe
in the ESP, opt out in the CRM, remove segsync's tags, segments and properties - and forgets the
matching last-sent state so the next run does not put them back. A handler returns to confirm the
action and raises to have it retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from connectors.base import CrmConnector, EspConnector, PropertyUpdate, TagChange
from consent.ledger import Ledger
from consent.outbox import SUPERSEDED, DrainReport, Outbox, OutboxAction, drain
from consent.policy import GRANTED
from sync.config.models import TenantCfg
from sync.run.gate import key_lookup
from sync.run.plan import CRM, crm_desired
from sync.store.interface import LockLost, Store

log = logging.getLogger("segsync.consent")


def propagate(store: Store, tenant: TenantCfg, crm: CrmConnector | None, esp: EspConnector | None) -> DrainReport:
    """Drain the tenant's due outbox actions through its connectors (one pass; failures stay queued)."""
    ledger = Ledger(store.engine, key_lookup([tenant]))
    propagator = Propagator(store, tenant, crm, esp, ledger)
    outbox = Outbox(store.engine, mac_key=ledger.chain_key)  # status edits re-MACed
    # Claims of up to 500: a batch of opt-outs reaches the CRM in a few batch calls, not one per person.
    # A lost tenant lock (the connectors' fence) stops the drain; it is not a failed delivery.
    report = drain(outbox, propagator.handlers(), tenant=tenant.id, prepare=propagator.prepare, limit=500,
                   abort_on=(LockLost,))
    if report.done or report.failed or report.retrying:
        log.info("outbox for %s: %d done (%d superseded), %d retrying, %d failed", tenant.id, report.done,
                 report.superseded, report.retrying, report.failed)
    return report


def queued(store: Store, tenant_id: str) -> int:
    """Opt-out actions of the tenant not yet confirmed by every system (the outbox depth)."""
    return Outbox(store.engine).depth(tenant_id)


class Propagator:
    """Turns outbox actions into connector calls; a handler returns to confirm and raises to retry."""

    def __init__(self, store: Store, tenant: TenantCfg, crm: CrmConnector | None, esp: EspConnector | None,
                 ledger: Ledger | None = None) -> None:
        self.store, self.tenant, self.crm, self.esp, self.ledger = store, tenant, crm, esp, ledger
        self.tags = [tenant.push.tag_prefix + s.name for s in tenant.segments]
        self.score_names = [s.name for s in tenant.scores if s.kind != "cluster"]
        self._esp_emails: dict[str, str] | None = None
        self._crm_sent: set[str] | None = None
        self._crm_vendor_ids: dict[str, str] | None = None
        self._prepared: dict[int, tuple[str, str | None]] = {}  # crm.optout id -> (why it failed or "", contact)

    def handlers(self) -> Mapping[str, Callable[[OutboxAction], str | None]]:
        out: dict[str, Callable[[OutboxAction], None]] = {}
        if self.esp is not None:
            out["esp.unsubscribe"] = self.esp_unsubscribe
            out["esp.tags"] = self.esp_tags
        if self.crm is not None:
            out["crm.optout"] = self.crm_optout
            out["crm.segments"] = self.crm_segments
        return {dest: self._decided(handler) for dest, handler in out.items()}

    def superseded(self, action: OutboxAction) -> str | None:
        """Why the action need not reach its system: the ledger's decision is no longer a withdrawal.

        Propagation acts on the ledger's current decision, not on the signal that queued it: when every
        purpose the withdrawal was about is granted again by a *later* event (the ledger orders signals by
        their own times, withdrawals winning ties), that withdrawal is superseded and is not propagated.
        When the order cannot be known the ledger says withdrawn, and the action goes everywhere.
        """
        if self.ledger is None or not action.email:
            return None
        purposes = [str(p) for p in action.payload.get("purposes") or []]
        if not purposes:
            return None
        states = self.ledger.status(self.tenant.id, action.email)
        later = [states[p] for p in purposes if p in states and states[p].state == GRANTED]
        if len(later) < len(purposes):
            return None
        grants = ", ".join(f"{p} granted by {s.source} at {s.occurred_at.isoformat()}"
                           for p, s in zip(purposes, later, strict=True))
        return f"{SUPERSEDED} by a later grant ({grants})"

    def _decided(self, handler: Callable[[OutboxAction], None]) -> Callable[[OutboxAction], str | None]:
        def act(action: OutboxAction) -> str | None:
            why = self.superseded(action)
            if why is not None:
                self._prepared.pop(action.id, None)
                log.info("outbox action %s (%s) not propagated: %s", action.id, action.destination, why)
                return why
            handler(action)
            return None
        return act

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
        """Unsubscribe every address the ESP knows the person by: one decision per person, and a person merged
        at the CRM can be two members of one audience. Members already out are read, not written (``suppress``)."""
        assert self.esp is not None
        email = self._need_email(action)
        cid = self._contact(email)
        addresses = (self.store.source_addresses(self.tenant.id, self.esp.name, cid) if cid else []) or \
            [self._esp_address(email, cid)]
        if action.payload.get("source") == self.esp.name:
            addresses = [a for a in addresses if a != email]  # the ESP itself reported this one out
            if not addresses:
                return  # the ESP knows the person by that address only: nothing to do there
        for address in addresses:
            result = self.esp.suppress(address, self.tags)
            if result.outcome == "failed":
                raise RuntimeError(result.message or "the ESP refused the unsubscribe")
        if cid:
            self.store.forget_sent(self.tenant.id, cid, "esp.")

    def esp_tags(self, action: OutboxAction) -> None:
        assert self.esp is not None
        email = self._need_email(action)
        cid = self._contact(email)
        dests = self.store.destinations(self.tenant.id, "esp.")
        if cid is None or not any(cid in self.store.last_sent(self.tenant.id, d) for d in dests):
            return  # we never put anything there: nothing to remove
        email = self._esp_address(email, cid)
        results = self.esp.push_tags([TagChange(email=email, inactive=tuple(self.tags))])
        failed = [r for r in results if r.outcome == "failed"]
        if failed:
            raise RuntimeError(failed[0].message or "the ESP refused the tag removal")
        for dest in self.store.destinations(self.tenant.id, "esp.segment:"):
            if cid in self.store.last_sent(self.tenant.id, dest):
                self.esp.sync_segment(self.tenant.push.tag_prefix + dest.split(":", 1)[1], [], [email])
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

    def _optout_email(self, action: OutboxAction) -> str | None:
        """The address a crm.optout acts on; None when the CRM reported it and we hold nothing of theirs."""
        assert self.crm is not None
        email = action.email
        if email is None and action.payload.get("vendor") == self.crm.name:
            # Known only by the CRM's own id (a webhook for a contact we had not pulled yet).
            email = self.store.email_for_vendor_id(self.tenant.id, self.crm.name, str(action.payload.get("vendor_id")))
            if email is None:
                log.info("crm opt-out for %s: the CRM itself reported it and we hold nothing of theirs",
                         action.payload.get("vendor_ref"))
                return None
        return email or self._need_email(action)

    def prepare(self, batch: Sequence[OutboxAction]) -> None:
        """Act on every crm.optout and crm.segments of a claimed batch in batch calls: one unsubscribe write
        per 100 (person, type) pairs and one property clear per 100 contacts, instead of calls per person."""
        if self.crm is None:
            return
        people: dict[int, tuple[str | None, str | None, str | None]] = {}  # action id -> (email to opt out, cid, vid)
        for action in batch:
            if action.destination not in ("crm.optout", "crm.segments") or self.superseded(action) is not None:
                continue
            try:
                email = self._optout_email(action) if action.destination == "crm.optout" else self._need_email(action)
            except LookupError:
                continue  # the handler records why
            if email is None:
                self._prepared[action.id] = ("", None)
                continue
            cid = self._contact(email)
            people[action.id] = (email if action.destination == "crm.optout" else None, cid,
                                 self._crm_ids().get(cid) if cid else None)
        if len(people) < 2:
            return  # one action: the handler's own calls cost the same
        unsubscribed = self.crm.unsubscribe_many([(e, vid) for e, _, vid in people.values() if e])
        clear = {vid: cid for _, cid, vid in people.values() if cid and vid and cid in self._crm_state()}
        props = crm_desired([], {}, self.tenant.push.crm_property, self.score_names, self.tenant.push.crm_scores)
        updates = [PropertyUpdate(v, props) for v in clear]
        cleared = {r.key: r for r in self.crm.push_properties(updates)} if updates else {}
        for action_id, (email, cid, vid) in people.items():
            refused = unsubscribed.get(email or "")
            problems = []
            if refused is not None and refused.outcome == "failed":
                problems.append(refused.message or "the CRM refused the opt-out")
            done = cleared.get(vid or "")
            if done is not None and done.outcome == "failed":
                problems.append(done.message or "the CRM refused to clear segsync's properties")
            self._prepared[action_id] = ("; ".join(problems), cid)

    def _take_prepared(self, action: OutboxAction) -> bool:
        """Confirm (or fail) an action already acted on with the rest of its batch; False if it was not."""
        if action.id not in self._prepared:
            return False
        problem, cid = self._prepared.pop(action.id)
        if problem:
            raise RuntimeError(problem)
        if cid:
            self.store.forget_sent(self.tenant.id, cid, "crm.")
        return True

    def crm_optout(self, action: OutboxAction) -> None:
        assert self.crm is not None
        if self._take_prepared(action):
            return
        email = self._optout_email(action)
        if email is None:
            return
        cid = self._contact(email)
        vendor_id = self._crm_ids().get(cid) if cid else None
        result = self.crm.suppress(email, vendor_id, "")  # the opt-out itself (unsubscribe only)
        if result.outcome == "failed":
            raise RuntimeError(result.message or "the CRM refused the opt-out")
        if cid and vendor_id and cid in self._crm_state():
            # and every segsync property we wrote there (segments and scores) is cleared
            cleared = crm_desired([], {}, self.tenant.push.crm_property, self.score_names, self.tenant.push.crm_scores)
            results = self.crm.push_properties([PropertyUpdate(vendor_id, cleared)])
            failed = [r for r in results if r.outcome == "failed"]
            if failed:
                raise RuntimeError(failed[0].message or "the CRM refused to clear segsync's properties")
        if cid:
            self.store.forget_sent(self.tenant.id, cid, "crm.")

    def crm_segments(self, action: OutboxAction) -> None:
        assert self.crm is not None
        if self._take_prepared(action):
            return
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

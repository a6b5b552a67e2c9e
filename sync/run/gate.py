"""The sync's view of the consent ledger: record what the pull saw, and decide. It acts on no vendor.

``consent`` owns the ledger and the outbox; this module only adapts them to one tenant's run:

- vendor signals seen during a pull are appended to the ledger (idempotent on the vendor's event
  id) and every fresh withdrawal enqueues suppression at the *other* systems in the same
  transaction, so a crash between the two loses nothing;
- ``decide`` answers, for a batch of emails, whether profiling and email marketing are allowed
  *now* (no record under a ``consent`` basis = refused; a contact without email = refused);
- households (``connectors.base.HOUSEHOLD_PROPERTY``): an opt-out is per person, and a household is never
  emailed through a member who opted out - the household's own record (the contact whose CRM id *is*
  the household id) loses email marketing when any member withdrew it; the other members keep theirs;
- acting on vendors (draining the outbox) is :mod:`sync.propagation`'s job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from connectors.base import HOUSEHOLD_PROPERTY
from consent.keys import KeyFile
from consent.ledger import Ledger
from consent.outbox import Outbox
from consent.policy import DESTINATIONS, EMAIL_MARKETING, PROFILING, WITHDRAWN
from consent.propagate import record_and_enqueue
from consent.signals import ConsentSignal
from core.emails import normalize_email
from sync.config.models import TenantCfg
from sync.store.interface import Store

Verdict = tuple[bool, bool, str]  # (profiling allowed, email_marketing allowed, reason when not)
ESP_UNSUBSCRIBE = "esp.unsubscribe"  # the outbox destination that unsubscribes at the ESP
HOUSEHOLD_OPTED_OUT = "household member opted out of email_marketing"
DECIDE_GROUP = 500  # emails per ledger question: up to the ledger's keyed-lookup limit, a lookup by key


def tenant_key(tenant: TenantCfg) -> bytes:
    """The tenant's pseudonym key: ``consent.pseudonym_key``, else one generated in the key file."""
    if tenant.consent.pseudonym_key is not None:
        return tenant.consent.pseudonym_key.get_secret_value().encode("utf-8")
    return KeyFile(tenant.consent.keys_file).pseudonym_key(tenant.id)


def key_lookup(tenants: Iterable[TenantCfg]) -> Callable[[str], bytes]:
    keys = {t.id: tenant_key(t) for t in tenants}

    def lookup(tenant_id: str) -> bytes:
        try:
            return keys[tenant_id]
        except KeyError:
            raise KeyError(f"unknown tenant {tenant_id!r}") from None

    return lookup


def policy_of(tenant: TenantCfg) -> dict[str, str]:
    return {purpose: cfg.basis for purpose, cfg in tenant.consent.purposes.items()}


@dataclass
class RecordStats:
    recorded: int = 0
    withdrawals: int = 0
    enqueued: int = 0
    already_withdrawn: int = 0  # withdrawals of a person the ledger already holds withdrawn: recorded, not propagated


class ConsentGate:
    def __init__(self, store: Store, tenant: TenantCfg, crm_source: str | None, esp_source: str | None) -> None:
        self.store = store
        self.tenant = tenant
        self.ledger = Ledger(store.engine, key_lookup([tenant]))
        self.outbox = Outbox(store.engine, mac_key=self.ledger.chain_key)
        self.policy = policy_of(tenant)
        self.sources = {"crm": crm_source, "esp": esp_source}
        self._households: tuple[dict[str, str], dict[str, set[str]]] | None = None

    # ------------------------------------------------------------------ pull -> ledger

    def record(self, signals: Sequence[ConsentSignal]) -> RecordStats:
        """Append vendor signals; enqueue propagation of fresh withdrawals to the *other* systems."""
        stats = RecordStats()
        by_source: dict[str, list[ConsentSignal]] = {}
        for s in signals:
            email = normalize_email(s.email)
            if not email or s.purpose not in self.policy:
                continue
            evidence = dict(s.evidence or {})
            if s.reason:
                evidence["reason"] = s.reason
            by_source.setdefault(s.source, []).append(
                ConsentSignal(
                    email,
                    s.purpose,
                    s.state,
                    self.policy[s.purpose],
                    s.source,
                    s.occurred_at,
                    None,
                    evidence or None,
                    f"{s.source}:{s.vendor_event_id}:{s.purpose}" if s.vendor_event_id else None,
                )
            )
        # A vendor repeats what it knows on every re-pull (often under a new event id, e.g. when a
        # member's last_changed moves): only a change of state is recorded and propagated.
        emails = sorted({r.email for rows in by_source.values() for r in rows})
        current = self.ledger.decisions(self.tenant.id, emails, self.policy) if emails else {}
        for source in list(by_source):
            by_source[source] = [
                r
                for r in by_source[source]
                if (current[r.email].reasons.get(r.purpose) if r.email in current else None) != r.state
            ]
        for source, rows in by_source.items():
            if not rows:
                continue
            # The vendor that told us already has it: propagate only to the other side.
            side = next((k for k, v in self.sources.items() if v == source), None)
            dests = [d for d in DESTINATIONS if self._has(d) and (side is None or not d.startswith(side + "."))]
            others = self._other_addresses(rows)
            held = self._held_withdrawn(rows, others)
            # An ESP that reports one member unsubscribed has not unsubscribed the person's other members (a person
            # merged at the CRM can be two, one per address): for a person known by more than one address the
            # drain unsubscribes the others there (``sync.propagation``), and calls nothing when none is a member.
            wider = [*dests, ESP_UNSUBSCRIBE] if side == "esp" and self._has(ESP_UNSUBSCRIBE) else dests
            for batch, to in (([r for r in rows if (r.email, r.purpose) not in held and not others.get(r.email)],
                               dests),
                              ([r for r in rows if (r.email, r.purpose) not in held and others.get(r.email)], wider),
                              ([r for r in rows if (r.email, r.purpose) in held], [])):
                if not batch:
                    continue
                result = record_and_enqueue(
                    self.ledger, self.outbox, self.tenant.id, batch, to, reason=f"opt-out seen at {source}"
                )
                stats.recorded += len(result.recorded)
                stats.withdrawals += sum(1 for e in result.recorded if e.state == WITHDRAWN)
                stats.enqueued += result.enqueued
                stats.already_withdrawn += 0 if to else sum(1 for e in result.recorded if e.state == WITHDRAWN)
        return stats

    def _other_addresses(self, rows: Sequence[ConsentSignal]) -> dict[str, set[str]]:
        """For each email withdrawing in ``rows``: the other addresses the store knows for its person."""
        asked = {r.email for r in rows if r.state == WITHDRAWN}
        people = {e: cid for e in asked if (cid := self.store.contact_by_email(self.tenant.id, e))}
        addresses = self.store.addresses(self.tenant.id, sorted(set(people.values()))) if people else {}
        return {e: set(addresses.get(cid, ())) - {e} for e, cid in people.items()}

    def _held_withdrawn(self, rows: Sequence[ConsentSignal], others: dict[str, set[str]]) -> set[tuple[str, str]]:
        """(email, purpose) of the withdrawals in ``rows`` whose person already withdrew that purpose at another
        address (``others``). One decision per person (``decide_people``: an opt-out on any address wins) was
        already acted on everywhere when that withdrawal was recorded, so this one is recorded as the vendor's
        evidence but propagates nothing. The usual case is our own propagation read back: a person who opted out
        at the CRM is unsubscribed at the ESP under their ESP address, and the ESP's next pull reports that
        address as unsubscribed; propagating it back would write to the CRM again on a run where nothing changed."""
        asked = {(r.email, r.purpose) for r in rows if r.state == WITHDRAWN}
        if not asked or not any(others.values()):
            return set()
        known = self.ledger.decisions(self.tenant.id, sorted(set().union(*others.values())), self.policy)
        return {(e, purpose) for e, purpose in asked
                if any(known[o].reasons.get(purpose) == WITHDRAWN for o in others.get(e, ()) if o in known)}

    def _has(self, destination: str) -> bool:
        side = destination.split(".", 1)[0]
        return self.sources.get(side) is not None

    def link_vendor_refs(self) -> int:
        """Consent recorded for a vendor id before we knew the person (a CRM webhook for a contact
        not pulled yet, stored as ``<vendor>:<id>``) is carried over to the email the store now has."""
        from consent.schema import consent_events

        linked = 0
        for vendor in {v for v in self.sources.values() if v}:
            with self.store.engine.connect() as conn:
                refs = conn.execute(
                    sa.select(consent_events.c.subject).distinct().where(
                        consent_events.c.tenant_id == self.tenant.id, consent_events.c.subject.like(f"{vendor}:%")
                    )
                ).scalars().all()
            for ref in refs:
                email = self.store.email_for_vendor_id(self.tenant.id, vendor, ref.split(":", 1)[1])
                if email:
                    linked += len(self.ledger.link_vendor_ref(self.tenant.id, vendor, ref.split(":", 1)[1], email))
        return linked

    # ------------------------------------------------------------------ decisions

    def _per_email(self, emails: Iterable[str]) -> dict[str, tuple[Verdict, bool]]:
        """``{email: ((profiling, email_marketing, reason), withdrew from email)}`` from the ledger, as of now.

        Asked in groups the ledger looks up by key (a bigger ask reads every consent event of the tenant):
        a run asks chunk by chunk, and a chunk must not cost a read of a million-person ledger.
        """
        wanted = sorted(set(emails))
        decisions: dict[str, Any] = {}
        for i in range(0, len(wanted), DECIDE_GROUP):
            decisions.update(self.ledger.decisions(self.tenant.id, wanted[i : i + DECIDE_GROUP], self.policy))
        out: dict[str, tuple[Verdict, bool]] = {}
        for email in wanted:
            d = decisions[email]
            refused = "; ".join(
                f"{p}: {d.reasons.get(p, 'refused')}" for p in (PROFILING, EMAIL_MARKETING) if not d.allows(p)
            )
            profiling = d.allows(PROFILING) if PROFILING in self.policy else False
            email_ok = d.allows(EMAIL_MARKETING) if EMAIL_MARKETING in self.policy else False
            out[email] = ((profiling, email_ok, refused), d.reasons.get(EMAIL_MARKETING) == WITHDRAWN)
        return out

    def ledger_mark(self) -> int:
        """The tenant's ledger position (its newest event's place in the chain; 0 for none): any record moves it."""
        from consent.schema import consent_events as ce

        with self.store.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(ce.c.seq)).where(ce.c.tenant_id == self.tenant.id))
                       .scalar() or 0)

    def decide_people(self, addresses: Mapping[str, Iterable[str]]) -> dict[str, Verdict]:
        """``{contact id: (profiling, email_marketing, reason)}`` over *all* of a person's addresses. Fails closed.

        An opt-out wins everywhere: a withdrawal on any one address refuses both purposes (someone who
        left marketing email is not kept in marketing segments in the CRM either, as the outbox clears).
        """
        addresses = {cid: sorted(set(emails)) for cid, emails in addresses.items()}
        per_email = self._per_email(e for emails in addresses.values() for e in emails)
        out: dict[str, Verdict] = {}
        for cid, emails in addresses.items():
            if not emails:
                out[cid] = (False, False, "no email to check consent against")
                continue
            found = [per_email[e] for e in emails]
            withdrawn = [v for v, opted_out in found if opted_out]
            if withdrawn:
                out[cid] = (False, False, withdrawn[0][2])
                continue
            out[cid] = (all(v[0] for v, _ in found), any(v[1] for v, _ in found),
                        next((v[2] for v, _ in found if v[2]), ""))
        for cid in self._opted_out_households(addresses):
            profiling, _, reason = out[cid]
            out[cid] = (profiling, False, f"{reason}; {HOUSEHOLD_OPTED_OUT}" if reason else HOUSEHOLD_OPTED_OUT)
        return out

    def households(self) -> tuple[dict[str, str], dict[str, set[str]]]:
        """(household record's contact id -> household id, household id -> its members' contact ids), read
        once per gate from the stored contacts: a household record is the contact whose CRM id is the
        household id (a CRM that keeps households as records); members are the other contacts with that id."""
        if self._households is None:
            crm = self.sources.get("crm")
            # Only contacts with a household are read, and only that one property of each.
            rows = list(self.store.property_values(self.tenant.id, HOUSEHOLD_PROPERTY))
            # Every contact's CRM id only when some contact has a household (a book without any reads none).
            crm_ids = self.store.vendor_ids(self.tenant.id, crm) if crm and rows else {}
            records: dict[str, str] = {}
            members: dict[str, set[str]] = {}
            for contact_id, household in rows:
                if crm_ids.get(contact_id) == str(household):
                    records[contact_id] = str(household)
                else:
                    members.setdefault(str(household), set()).add(contact_id)
            self._households = (records, members)
        return self._households

    def _opted_out_households(self, addresses: Mapping[str, Iterable[str]]) -> list[str]:
        """The household records among ``addresses`` one of whose members withdrew email marketing, now."""
        records, members = self.households()
        asked = {cid: members.get(h, set()) - {cid} for cid, h in records.items() if cid in addresses}
        if not any(asked.values()):
            return []
        wanted = set().union(*asked.values())
        known = {m: set(addresses[m]) for m in wanted if m in addresses}
        fresh = self.store.addresses(self.tenant.id, sorted(wanted - set(known))) if wanted - set(known) else {}
        member_emails = {m: known.get(m, set()) | fresh.get(m, set()) for m in wanted}
        per_email = self._per_email(e for emails in member_emails.values() for e in emails)
        withdrew = {m for m, emails in member_emails.items() if any(per_email[e][1] for e in emails)}
        return [cid for cid, ms in asked.items() if ms & withdrew]

"""Record consent and queue its propagation in one transaction.

An opt-out is worth nothing until every vendor knows, and a crash between "recorded" and
"queued" must not lose it: :func:`record_and_enqueue` appends the events and, for each person
whose record now contains a withdrawal, adds one outbox action per destination, all in one
transaction. :func:`erase_and_enqueue` does the same for an erasure.

Used by the webhook (:mod:`consent.webhook`), the CLI (:mod:`sync.consent_cmds`), and the pipeline
when it records vendor signals seen during a pull.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from consent.ledger import ErasureResult, Ledger, RecordedEvent
from consent.outbox import NewActions, Outbox
from consent.policy import DESTINATIONS, WITHDRAWN, destinations_for, normalize_subject
from consent.signals import ConsentSignal


@dataclass(frozen=True, slots=True)
class Propagation:
    """What one call recorded (new events only; repeats are skipped) and how many actions it queued."""

    recorded: tuple[RecordedEvent, ...] = ()
    enqueued: int = 0
    erasure: ErasureResult | None = None
    skipped: int = field(default=0)


def _vendor_ref(subject: str) -> bool:
    # "vendor:123" - a person known only by a vendor id; there is no email to give the vendor.
    return "@" not in subject and ":" in subject


def enqueue_withdrawals(
    conn: sa.Connection,
    outbox: Outbox,
    tenant: str,
    recorded: Sequence[RecordedEvent],
    emails: dict[str, str],
    destinations: Iterable[str] = DESTINATIONS,
    *,
    reason: str = "",
    scrub_on_done: bool = False,
    now: datetime | None = None,
    roles: Mapping[str, str] | None = None,
) -> int:
    """Queue suppression for every subject with a withdrawal in ``recorded`` (inside ``conn``).

    ``emails`` maps subject_key to the normalised subject. One group of actions per subject,
    keyed on the subject's first withdrawal in this batch, so a retried batch adds nothing.
    ``roles`` ({vendor: "crm" | "esp"}) says whose destinations a vendor reference can reach;
    a vendor not in it is taken for a CRM (an ESP names its members by email).
    """
    actions = withdrawal_actions(recorded, emails, destinations, reason=reason, scrub_on_done=scrub_on_done,
                                 roles=roles)
    return sum(outbox.enqueue_many(conn, tenant, actions, now=now))


def withdrawal_actions(
    recorded: Sequence[RecordedEvent],
    emails: Mapping[str, str],
    destinations: Iterable[str] = DESTINATIONS,
    *,
    reason: str = "",
    scrub_on_done: bool = False,
    roles: Mapping[str, str] | None = None,
) -> list[NewActions]:
    """What :func:`enqueue_withdrawals` queues, without queueing it (the webhook queues a group's at once)."""
    by_subject: dict[str, list[RecordedEvent]] = {}
    for event in recorded:
        if event.state == WITHDRAWN:
            by_subject.setdefault(event.subject_key, []).append(event)
    dests = list(destinations)
    actions = []
    for skey, events in by_subject.items():
        purposes = sorted({e.purpose for e in events})
        targets = destinations_for(purposes, dests)
        if not targets:
            continue
        subject = emails.get(skey)
        payload: dict[str, object] = {"purposes": purposes, "source": events[0].source, "reason": reason}
        email: str | None = subject
        if subject is not None and _vendor_ref(subject):
            # Known only by a vendor id (e.g. "crm:123"): only that vendor can act on it.
            vendor, _, vendor_id = subject.partition(":")
            payload.update(vendor_ref=subject, vendor=vendor, vendor_id=vendor_id)
            email = None
            prefix = f"{(roles or {}).get(vendor, 'crm')}."
            targets = [d for d in targets if d.startswith(prefix)]
            if not targets:
                continue
        actions.append(NewActions(skey, email, tuple(targets), payload, events[0].id, scrub_on_done))
    return actions


def record_and_enqueue(
    ledger: Ledger,
    outbox: Outbox,
    tenant: str,
    signals: Sequence[ConsentSignal],
    destinations: Iterable[str] = DESTINATIONS,
    *,
    reason: str = "",
    conn: sa.Connection | None = None,
    now: datetime | None = None,
) -> Propagation:
    """Append ``signals`` and queue suppression for their withdrawals, atomically.

    Signals whose idempotency key was seen before are skipped (and queue nothing again).
    """
    emails = {ledger.pseudonym(tenant, s.email): normalize_subject(s.email) for s in signals}
    if conn is None:
        with ledger.engine.begin() as own:
            return record_and_enqueue(ledger, outbox, tenant, signals, destinations, reason=reason, conn=own, now=now)
    recorded = ledger.record_many(tenant, signals, conn=conn)
    added = enqueue_withdrawals(conn, outbox, tenant, recorded, emails, destinations, reason=reason, now=now)
    return Propagation(tuple(recorded), added, None, len(signals) - len(recorded))


def erase_and_enqueue(
    ledger: Ledger,
    outbox: Outbox,
    tenant: str,
    email: str,
    destinations: Iterable[str] = DESTINATIONS,
    *,
    conn: sa.Connection | None = None,
    now: datetime | None = None,
) -> Propagation:
    """Erase a person from the ledger and queue the same suppression at every vendor, atomically.

    The queued actions keep the email only until each is delivered (or given up on).
    """
    subject = normalize_subject(email)
    if conn is None:
        with ledger.engine.begin() as own:
            return erase_and_enqueue(ledger, outbox, tenant, subject, destinations, conn=own, now=now)
    result = ledger.erase(tenant, subject, conn=conn)
    added = enqueue_withdrawals(
        conn, outbox, tenant, list(result.withdrawals), {result.subject_key: subject}, destinations,
        reason="erasure", scrub_on_done=True, now=now,
    )
    return Propagation(result.withdrawals, added, result)

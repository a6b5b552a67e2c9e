"""What a group of webhook requests writes, decided the same way by both group writes.

The general write (``consent.webhook``, any store) and the pipelined one (``consent.webhook_pg``,
PostgreSQL) differ only in how they talk to the database; which request a new receipt belongs to
and which outbox actions a withdrawal queues are decided here, once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from consent.ledger import Ledger
from consent.outbox import NewActions
from consent.policy import normalize_subject
from consent.propagate import withdrawal_actions
from consent.records import RecordedEvent
from consent.signals import ConsentSignal
from consent.webhook_events import TenantHooks, Work

Item = tuple[str, TenantHooks, Work]  # tenant, its hooks, the parsed request
Outcome = tuple[str, int, int]  # status, events recorded, actions queued
DUPLICATE: Outcome = ("duplicate", 0, 0)


def claim_receipts(
    items: Sequence[Item], fresh_keys: set[tuple[str, str]]
) -> tuple[dict[int, set[str]], dict[int, list[ConsentSignal]]]:
    """Which items write something: per item, its receipts that are new to the store (a receipt new to the
    store belongs to the first item of the group that has it) and the signals they carry (a partly replayed
    batch of vendor events keeps the new ones). An item missing from both is a duplicate (a replay)."""
    claimed: set[tuple[str, str]] = set()
    fresh_of: dict[int, set[str]] = {}
    signals_of: dict[int, list[ConsentSignal]] = {}
    for i, (tenant, _hooks, work) in enumerate(items):
        fresh = {k for k in work.receipts if (tenant, k) in fresh_keys and (tenant, k) not in claimed}
        claimed.update((tenant, k) for k in fresh)
        if not fresh:
            continue
        fresh_of[i] = fresh
        signals_of[i] = [s for s, key in zip(work.signals, work.receipts, strict=False) if key in fresh]
    return fresh_of, signals_of


def withdrawals_of(
    ledger: Ledger, items: Sequence[Item], signals_of: Mapping[int, list[ConsentSignal]],
    recorded_of: Mapping[int, list[RecordedEvent]], tenant: str | None = None,
) -> list[tuple[int, NewActions]]:
    """The outbox actions of every item's recorded withdrawals (of ``tenant``'s items only, when given),
    each with its item, in item order."""
    queued: list[tuple[int, NewActions]] = []
    for i, recorded in recorded_of.items():
        item_tenant, hooks, work = items[i]
        if tenant is not None and item_tenant != tenant:
            continue
        emails = {ledger.pseudonym(item_tenant, s.email): normalize_subject(s.email) for s in signals_of[i]}
        if work.alias is not None:  # a withdrawal carried to the new address is pushed for it
            emails[ledger.pseudonym(item_tenant, work.alias[1])] = work.alias[1]
        actions = withdrawal_actions(recorded, emails, hooks.destinations, reason=work.reason, roles=hooks.roles)
        queued.extend((i, a) for a in actions)
    return queued


__all__ = ["DUPLICATE", "Item", "Outcome", "claim_receipts", "withdrawals_of"]

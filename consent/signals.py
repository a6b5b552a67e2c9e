"""The one consent-signal type: a consent fact to record, from any source (plain data, standard library only).

A connector makes one when a pull shows a consent fact (an unsubscribe, an opt-in record) and leaves
``basis`` empty: the tenant's policy, applied by the pipeline's gate, decides the lawful basis and turns
``vendor_event_id`` into the ledger's ``idempotency_key``. The CLI, the webhook and the ledger make them
complete. Connectors may import this module (it is part of the shared vocabulary, with ``core``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# What a connector puts in ``basis``: it cannot know the tenant's policy; the gate fills it in.
BASIS_FROM_POLICY = ""


@dataclass(frozen=True, slots=True)
class ConsentSignal:
    """One consent event (the arguments of ``Ledger.record`` as data, plus what a vendor said about it).

    ``reason`` and ``vendor_event_id`` are what a vendor reported; the gate keeps the reason as evidence
    and derives the idempotency key from the event id, so a re-pulled fact is recorded once.
    """

    email: str
    purpose: str
    state: str
    basis: str
    source: str
    occurred_at: datetime
    notice_version: str | None = None
    evidence: Mapping[str, Any] | None = None
    idempotency_key: str | None = None
    reason: str = field(default="", kw_only=True)
    vendor_event_id: str = field(default="", kw_only=True)

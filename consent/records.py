"""The plain records the ledger takes and returns (frozen dataclasses, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as appended to the chain."""

    id: int
    tenant_id: str
    seq: int
    subject_key: str
    purpose: str
    state: str
    basis: str
    source: str
    occurred_at: datetime
    recorded_at: datetime
    hash: str


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One row of a subject's history, evidence merged back together (personal part if kept)."""

    id: int
    seq: int
    purpose: str
    state: str
    basis: str
    source: str
    occurred_at: datetime
    recorded_at: datetime
    notice_version: str | None
    evidence: dict[str, Any]
    erased: bool


@dataclass(frozen=True, slots=True)
class ErasureResult:
    """What :meth:`Ledger.erase` did. ``outbox_pending`` rows keep the email until delivered."""

    tenant_id: str
    subject_key: str
    events_scrubbed: int
    withdrawals: tuple[RecordedEvent, ...]
    outbox_scrubbed: int
    outbox_pending: int
    aliases_scrubbed: int


@dataclass(frozen=True, slots=True)
class Alias:
    """An email change (an ESP's email-change event, a CRM merge): old -> new, per tenant."""

    old_subject_key: str
    new_subject_key: str
    old_email: str | None
    new_email: str | None
    source: str
    occurred_at: datetime


def recorded_from_row(row: Mapping[str, Any]) -> RecordedEvent:
    return RecordedEvent(
        id=row["id"], tenant_id=row["tenant_id"], seq=row["seq"], subject_key=row["subject_key"],
        purpose=row["purpose"], state=row["state"], basis=row["basis"], source=row["source"],
        occurred_at=row["occurred_at"], recorded_at=row["recorded_at"], hash=row["hash"],
    )


__all__ = ["Alias", "ErasureResult", "HistoryEvent", "RecordedEvent", "recorded_from_row"]

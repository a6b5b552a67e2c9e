"""Tamper evidence for the outbox: a keyed MAC on every row, checked by ``verify``.

An outbox row says a vendor must be (or was) told that a person withdrew. Marking a pending row
``done`` by hand would silently drop that propagation, so each row carries
``mac = HMAC-SHA256(chain_key, canonical_json(what the row promises + its status))``, rewritten by
:class:`consent.outbox.Outbox` with every status change. The MAC covers the tenant, pseudonym,
destination, source event, payload, status and ``done_at``; not the email (scrubbed on erasure),
attempts, last error or next attempt time (bookkeeping that says nothing about delivery).

Rows written before revision 0003 have no MAC; the tenant's chain head records from which outbox
id on a MAC is required (``outbox_keyed_from_id``), and a checkpoint records that marker too.

Deleted rows. A signed row also names the tenant's row before it (``payload.prev_outbox_id``,
covered by the MAC), so deleting any row but the newest breaks its successor's link, checkpoint
or not. A checkpoint counts the rows up to its ``outbox_max_id``, so deleting rows it counted is
found against it. What remains: deleting the newest rows written *after* the last checkpoint (a
whole tail, nothing after it) leaves a consistent outbox that nothing can tell from one where
they were never written. Its exposure is bounded: those rows' withdrawals stay in the keyed
ledger chain, and segsync's push re-checks consent from the ledger before every batch, so segsync
never pushes to those people; what is lost is telling the vendor (unsubscribe, CRM opt-out) for
the rows written since the last checkpoint. Taking a checkpoint after every run bounds it to one
run's opt-outs.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from consent.chain import BrokenLink, canonical_json
from consent.schema import consent_chain_heads, consent_outbox

ob = consent_outbox.c
PREV_LINK = "prev_outbox_id"  # in a signed row's payload: the id of the tenant's row before it (0: none)


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="microseconds")


def outbox_mac(key: bytes, row: Mapping[str, Any] | sa.RowMapping) -> str:
    """The MAC of an outbox row (``key`` is the tenant's chain key)."""
    content = {
        "tenant_id": row["tenant_id"],
        "subject_key": row["subject_key"],
        "destination": row["destination"],
        "source_event": int(row["source_event"]),
        "payload": row["payload"],
        "status": row["status"],
        "done_at": _ts(row["done_at"]),
    }
    return hmac.new(key, canonical_json(content).encode("utf-8"), hashlib.sha256).hexdigest()


def outbox_keyed_from(conn: sa.Connection, tenant: str) -> int:
    """The outbox id from which this tenant's rows must carry a MAC (0 = all of them)."""
    value = conn.execute(
        sa.select(consent_chain_heads.c.outbox_keyed_from_id).where(consent_chain_heads.c.tenant_id == tenant)
    ).scalar_one_or_none()
    return 0 if value is None else int(value)


def check_outbox(conn: sa.Connection, tenant: str, chain_key: bytes) -> BrokenLink | None:
    """The first outbox row of ``tenant`` whose MAC is missing or wrong, or None."""
    since = outbox_keyed_from(conn, tenant)
    rows = conn.execute(
        sa.select(consent_outbox).where(ob.tenant_id == tenant, ob.id >= since).order_by(ob.id)
    ).mappings().all()
    before = conn.execute(sa.select(sa.func.max(ob.id)).where(ob.tenant_id == tenant, ob.id < since)).scalar()
    prev = int(before or 0)
    for r in rows:
        if r["mac"] is None or not hmac.compare_digest(r["mac"], outbox_mac(chain_key, r)):
            return BrokenLink(
                tenant, None,
                f"outbox row {r['id']} ({r['destination']}, status {r['status']}): its MAC does not match "
                "(status or content edited outside segsync)",
            )
        link = r["payload"].get(PREV_LINK) if isinstance(r["payload"], dict) else None
        if link is not None and link != prev:
            return BrokenLink(
                tenant, None,
                f"outbox row {r['id']} ({r['destination']}): it was written after row {link}, but the row before "
                f"it is {prev or 'none'} (outbox rows were deleted)",
            )
        prev = int(r["id"])
    return None


__all__ = ["PREV_LINK", "check_outbox", "outbox_keyed_from", "outbox_mac"]

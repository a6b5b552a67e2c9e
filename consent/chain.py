"""The per-tenant hash chain: canonical row hashing, serialised appends, and verification.

``hash = sha256(canonical_json(content) + "|" + prev_hash)`` where ``content`` holds the fields
that say what happened (tenant, seq, subject_key, purpose, state, basis, source, times, notice
version, non-personal evidence, the keyed digest of personal evidence, idempotency key). The
email is *not* part of it - the keyed ``subject_key`` stands in for it - so erasure can null the
email without breaking the chain.

Appends for one tenant are serialised on the tenant's row in ``consent_chain_heads``: it is
created if missing (INSERT ... ON CONFLICT DO NOTHING) and then locked (SELECT ... FOR UPDATE on
PostgreSQL). On SQLite the INSERT is the transaction's first write and takes the database write
lock, which serialises writers the same way. ``UNIQUE(tenant_id, seq)`` is the backstop: a
broken lock makes an append fail, never fork the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from consent.policy import subject_key
from consent.schema import consent_chain_heads, consent_events, insert_ignoring_conflicts

GENESIS = "0" * 64

#: Evidence keys that carry no personal data; everything else counts as personal and is scrubbed
#: on erasure. A whitelist, so a new vendor field is personal until someone decides otherwise.
NON_PERSONAL_EVIDENCE = frozenset(
    {
        "request_id", "vendor", "vendor_event_id", "event_id", "subscription_type", "object_id",
        "hubspot_object_id", "portal_id", "app_id", "list_id", "reason", "type", "action",
        "change_source", "notice_url", "receipt", "carried_from", "carried_event", "erasure_requested",
        "property_name", "property_value", "webhook", "import_batch", "operator",
    }
)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the same data always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def split_evidence(evidence: dict[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Split evidence into (non-personal, personal); each is None when empty.

    The round trip through JSON makes the stored value exactly what was hashed (tuples become
    lists, and anything that cannot be stored fails here rather than in the database).
    """
    if not evidence:
        return None, None
    normal = json.loads(canonical_json(evidence))
    public = {k: v for k, v in normal.items() if k in NON_PERSONAL_EVIDENCE}
    personal = {k: v for k, v in normal.items() if k not in NON_PERSONAL_EVIDENCE}
    return public or None, personal or None


def personal_digest(key: bytes, personal: dict[str, Any] | None) -> str | None:
    """Keyed digest of personal evidence: commits it to the chain without making it guessable."""
    if personal is None:
        return None
    return hmac.new(key, canonical_json(personal).encode("utf-8"), hashlib.sha256).hexdigest()


def row_hash(row: dict[str, Any] | sa.RowMapping, prev_hash: str) -> str:
    """The chain hash of an event row (only its content fields are used)."""
    content = {
        "tenant_id": row["tenant_id"],
        "seq": int(row["seq"]),
        "subject_key": row["subject_key"],
        "purpose": row["purpose"],
        "state": row["state"],
        "basis": row["basis"],
        "source": row["source"],
        "occurred_at": _ts(row["occurred_at"]),
        "recorded_at": _ts(row["recorded_at"]),
        "notice_version": row["notice_version"],
        "evidence": row["evidence"],
        "personal_digest": row["personal_digest"],
        "idempotency_key": row["idempotency_key"],
    }
    return hashlib.sha256((canonical_json(content) + "|" + prev_hash).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Head:
    """The locked end of a tenant's chain."""

    last_id: int
    last_seq: int
    last_hash: str


def lock_head(conn: sa.Connection, tenant: str) -> Head:
    """Create (if missing) and lock the tenant's chain head for the rest of the transaction."""
    conn.execute(
        insert_ignoring_conflicts(conn, consent_chain_heads).values(
            tenant_id=tenant, last_id=0, last_seq=0, last_hash=GENESIS
        )
    )
    row = conn.execute(
        sa.select(consent_chain_heads).where(consent_chain_heads.c.tenant_id == tenant).with_for_update()
    ).one()
    return Head(int(row.last_id), int(row.last_seq), row.last_hash)


def append_rows(conn: sa.Connection, tenant: str, head: Head, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chain ``rows`` after ``head``, insert them and move the head. Returns rows with ids.

    The caller holds the head lock (:func:`lock_head`) in the same transaction.
    """
    if not rows:
        return []
    prev, seq = head.last_hash, head.last_seq
    for row in rows:
        seq += 1
        row["seq"] = seq
        row["prev_hash"] = prev
        row["hash"] = prev = row_hash(row, prev)
    result = conn.execute(
        sa.insert(consent_events).returning(consent_events.c.id, sort_by_parameter_order=True), rows
    )
    for row, inserted in zip(rows, result.all(), strict=True):
        row["id"] = int(inserted.id)
    conn.execute(
        sa.update(consent_chain_heads)
        .where(consent_chain_heads.c.tenant_id == tenant)
        .values(last_id=rows[-1]["id"], last_seq=seq, last_hash=prev)
    )
    return rows


@dataclass(frozen=True, slots=True)
class BrokenLink:
    """The first row at which a chain stops verifying."""

    tenant_id: str
    id: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of :func:`verify_chains`: ``checked`` rows, and the first broken link if any."""

    ok: bool
    checked: int
    first_broken: BrokenLink | None = None


def _check_tenant(
    conn: sa.Connection, tenant: str, key: bytes | None
) -> tuple[int, BrokenLink | None]:
    ev = consent_events.c
    rows = conn.execution_options(yield_per=2000).execute(
        sa.select(consent_events).where(ev.tenant_id == tenant).order_by(ev.seq)
    )
    try:
        return _walk(conn, tenant, key, rows)
    finally:
        rows.close()  # a server-side cursor on PostgreSQL, maybe left mid-way by an early return


def _walk(
    conn: sa.Connection, tenant: str, key: bytes | None, rows: sa.CursorResult[Any]
) -> tuple[int, BrokenLink | None]:
    checked, prev_hash, prev_seq, prev_id = 0, GENESIS, 0, None
    for r in rows.mappings():
        checked += 1
        where = f"id {r['id']}"
        if r["seq"] != prev_seq + 1:
            return checked, BrokenLink(
                tenant, r["id"], f"{where}: seq {r['seq']} follows seq {prev_seq} (a row was deleted or reordered)"
            )
        if r["prev_hash"] != prev_hash:
            after = f"id {prev_id}" if prev_id is not None else "the start of the chain"
            return checked, BrokenLink(
                tenant, r["id"], f"{where}: prev_hash does not match {after} (a row was deleted, edited or reordered)"
            )
        if row_hash(r, r["prev_hash"]) != r["hash"]:
            return checked, BrokenLink(tenant, r["id"], f"{where}: content does not match its hash (edited)")
        if r["evidence_personal"] is not None:
            if key is not None and personal_digest(key, r["evidence_personal"]) != r["personal_digest"]:
                return checked, BrokenLink(tenant, r["id"], f"{where}: personal evidence was edited")
        elif r["personal_digest"] is not None and r["erased_at"] is None:
            return checked, BrokenLink(tenant, r["id"], f"{where}: personal evidence removed outside an erasure")
        if r["subject"] is not None and key is not None and subject_key(key, r["subject"]) != r["subject_key"]:
            return checked, BrokenLink(tenant, r["id"], f"{where}: email does not match its subject_key (edited)")
        prev_hash, prev_seq, prev_id = r["hash"], r["seq"], r["id"]
    head = conn.execute(
        sa.select(consent_chain_heads).where(consent_chain_heads.c.tenant_id == tenant)
    ).one_or_none()
    if head is not None and (head.last_seq != prev_seq or head.last_hash != prev_hash):
        return checked, BrokenLink(
            tenant,
            prev_id,
            f"chain ends at seq {prev_seq} (id {prev_id}) but its head records seq {head.last_seq} "
            f"(id {head.last_id}): rows were deleted from the end",
        )
    if head is None and checked:
        return checked, BrokenLink(tenant, None, "events exist but the chain head row is missing")
    return checked, None


def verify_chains(
    conn: sa.Connection, tenants: Iterable[str] | None, key_for_tenant: Callable[[str], bytes | None] | None
) -> VerifyResult:
    """Walk each tenant's chain in seq order; stop at the first broken link."""
    if tenants is None:
        found = conn.execute(sa.select(consent_events.c.tenant_id).distinct()).scalars().all()
        heads = conn.execute(sa.select(consent_chain_heads.c.tenant_id)).scalars().all()
        tenants = sorted(set(found) | set(heads))
    total = 0
    for tenant in tenants:
        key = key_for_tenant(tenant) if key_for_tenant else None
        checked, broken = _check_tenant(conn, tenant, key)
        total += checked
        if broken is not None:
            return VerifyResult(False, total, broken)
    return VerifyResult(True, total, None)

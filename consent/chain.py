"""The per-tenant hash chain: canonical row hashing, serialised appends, and verification.

``hash = HMAC-SHA256(chain_key, canonical_json(content) + "|" + prev_hash)`` where ``content``
holds the fields that say what happened (tenant, seq, subject_key, purpose, state, basis, source,
times, notice version, non-personal evidence, the keyed digest of personal evidence, idempotency
key). The email is *not* part of it - the keyed ``subject_key`` stands in for it - so erasure can
null the email without breaking the chain.

The chain key is derived from the tenant's pseudonym key (:func:`chain_key`), which lives outside
the database (``consent.keys``): someone who can write SQL but not read the key file can neither
forge a row nor recompute the chain after an edit. Chains written before revision 0003 were
plain SHA-256; their rows stay verifiable as they were (``keyed_from_seq`` on the chain head says
where the keyed part starts), and only a checkpoint taken at upgrade protects that older part
against recomputation. Rows cut from the end together with the head, and a tenant wiped
entirely, leave no trace inside the database at all: those are caught by a checkpoint kept
outside it (:mod:`consent.checkpoint`).

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
        "portal_id", "app_id", "list_id", "reason", "type", "action",
        "change_source", "notice_url", "receipt", "carried_from", "carried_event", "erasure_requested",
        "property_name", "property_value", "webhook", "import_batch", "operator", "claimed_occurred_at",
    }
)
#: A vendor's own record id (``<vendor>_object_id``) is pseudonymous like ``object_id``: kept on erasure.
NON_PERSONAL_SUFFIX = "_object_id"


def _public(key: str) -> bool:
    return key in NON_PERSONAL_EVIDENCE or key.endswith(NON_PERSONAL_SUFFIX)


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
    public = {k: v for k, v in normal.items() if _public(k)}
    personal = {k: v for k, v in normal.items() if not _public(k)}
    return public or None, personal or None


def personal_digest(key: bytes, personal: dict[str, Any] | None) -> str | None:
    """Keyed digest of personal evidence: commits it to the chain without making it guessable."""
    if personal is None:
        return None
    return hmac.new(key, canonical_json(personal).encode("utf-8"), hashlib.sha256).hexdigest()


def chain_key(pseudonym_key: bytes) -> bytes:
    """The tenant's chain key, derived from its pseudonym key (domain-separated, never stored)."""
    return hmac.new(pseudonym_key, b"segsync/consent-chain/v2", hashlib.sha256).digest()


def row_hash(row: dict[str, Any] | sa.RowMapping, prev_hash: str, key: bytes | None) -> str:
    """The chain hash of an event row (only its content fields are used).

    ``key`` is the chain key; None gives the unkeyed SHA-256 of chains written before revision 0003.
    """
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
    message = (canonical_json(content) + "|" + prev_hash).encode("utf-8")
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def key_check(ckey: bytes) -> str:
    """A fingerprint of the chain key, kept on the chain head to recognise a wrong key."""
    return hmac.new(ckey, b"segsync/key-check", hashlib.sha256).hexdigest()


def key_problem(conn: sa.Connection, tenant: str, key: bytes) -> str | None:
    """Why ``key`` (a pseudonym key) is not the one this tenant's ledger was written with, or None.

    A wrong key would make every pseudonym miss: a withdrawn person would look unknown, and under
    ``legitimate_interest`` unknown means allowed. So a mismatch stops everything with this message.
    Chains from before revision 0003 have no fingerprint yet; their newest row with an email is
    checked instead.
    """
    hint = ("the consent key does not match the one this ledger was written with (a different key file, or "
            "consent.pseudonym_key changed; ledgers from before revision 0003 used consent.webhook_secret: "
            "set consent.pseudonym_key to that old value)")
    stored = conn.execute(
        sa.select(consent_chain_heads.c.key_check).where(consent_chain_heads.c.tenant_id == tenant)
    ).scalar_one_or_none()
    if stored is not None:
        return None if hmac.compare_digest(stored, key_check(chain_key(key))) else hint
    ev = consent_events.c
    row = conn.execute(
        sa.select(ev.subject, ev.subject_key)
        .where(ev.tenant_id == tenant, ev.subject.is_not(None))
        .order_by(ev.seq.desc()).limit(1)
    ).one_or_none()
    if row is not None and subject_key(key, row.subject) != row.subject_key:
        return hint
    return None


@dataclass(frozen=True, slots=True)
class Head:
    """The locked end of a tenant's chain."""

    last_id: int
    last_seq: int
    last_hash: str
    keyed_from_seq: int = 1


def lock_head(conn: sa.Connection, tenant: str) -> Head:
    """Create (if missing) and lock the tenant's chain head for the rest of the transaction."""
    locked = sa.select(consent_chain_heads).where(consent_chain_heads.c.tenant_id == tenant).with_for_update()
    # PostgreSQL: the row lock is the serialisation, so lock an existing head in one statement. SQLite:
    # the INSERT must come first - the transaction's first write takes the database write lock, where
    # a read first would take a shared lock that cannot be upgraded while another writer waits.
    row = conn.execute(locked).one_or_none() if conn.dialect.name == "postgresql" else None
    if row is None:
        conn.execute(
            insert_ignoring_conflicts(conn, consent_chain_heads).values(
                tenant_id=tenant, last_id=0, last_seq=0, last_hash=GENESIS
            )
        )
        row = conn.execute(locked).one()
    return Head(int(row.last_id), int(row.last_seq), row.last_hash, int(row.keyed_from_seq))


def recorded_keys(conn: sa.Connection, tenant: str, keys: list[str]) -> set[str]:
    """The idempotency keys among ``keys`` already recorded for ``tenant`` (looked up 500 at a time)."""
    ev = consent_events.c
    seen: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        seen.update(conn.execute(
            sa.select(ev.idempotency_key).where(ev.tenant_id == tenant, ev.idempotency_key.in_(chunk))).scalars())
    return seen


def link_rows(head: Head, rows: list[dict[str, Any]], key: bytes) -> tuple[int, str]:
    """Give ``rows`` their place after ``head``: ``seq``, ``prev_hash`` and ``hash`` (keyed with ``key``).
    Returns the new end of the chain (seq, hash). Shared by :func:`append_rows` and the pipelined
    PostgreSQL write (:mod:`consent.pgwrite`), so both chain rows identically."""
    prev, seq = head.last_hash, head.last_seq
    for row in rows:
        seq += 1
        row["seq"] = seq
        row["prev_hash"] = prev
        row["hash"] = prev = row_hash(row, prev, key)
    return seq, prev


def append_rows(
    conn: sa.Connection, tenant: str, head: Head, rows: list[dict[str, Any]], key: bytes
) -> list[dict[str, Any]]:
    """Chain ``rows`` after ``head`` (keyed with ``key``), insert them and move the head. Returns rows with ids.

    The caller holds the head lock (:func:`lock_head`) in the same transaction.
    """
    if not rows:
        return []
    seq, prev = link_rows(head, rows, key)
    result = conn.execute(
        sa.insert(consent_events).returning(consent_events.c.id, sort_by_parameter_order=True), rows
    )
    for row, inserted in zip(rows, result.all(), strict=True):
        row["id"] = int(inserted.id)
    conn.execute(
        sa.update(consent_chain_heads)
        .where(consent_chain_heads.c.tenant_id == tenant)
        .values(last_id=rows[-1]["id"], last_seq=seq, last_hash=prev, key_check=key_check(key))
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
    head = conn.execute(
        sa.select(consent_chain_heads).where(consent_chain_heads.c.tenant_id == tenant)
    ).one_or_none()
    # yield_per on the statement, not the connection: Connection.execution_options() changes the
    # connection itself, and every later query on it would open a server-side cursor too.
    rows = conn.execute(
        sa.select(consent_events).where(ev.tenant_id == tenant).order_by(ev.seq).execution_options(yield_per=2000)
    )
    try:
        return _walk(tenant, key, head, rows)
    finally:
        rows.close()  # a server-side cursor on PostgreSQL, maybe left mid-way by an early return


def _check_row(r: sa.RowMapping, key: bytes | None, ckey: bytes | None, keyed_from: int) -> str | None:
    """What is wrong with one row on its own (its hash, its personal data), or None."""
    if r["seq"] >= keyed_from:
        if ckey is not None and row_hash(r, r["prev_hash"], ckey) != r["hash"]:
            return "content does not match its keyed hash (edited, or forged without the key)"
    elif row_hash(r, r["prev_hash"], None) != r["hash"]:
        return "content does not match its hash (edited)"
    if r["evidence_personal"] is not None:
        if key is not None and personal_digest(key, r["evidence_personal"]) != r["personal_digest"]:
            return "personal evidence was edited"
    elif r["personal_digest"] is not None and r["erased_at"] is None:
        return "personal evidence removed outside an erasure"
    if r["subject"] is None and r["erased_at"] is None:
        return "email removed (subject is NULL) outside an erasure"
    if r["subject"] is not None and key is not None and subject_key(key, r["subject"]) != r["subject_key"]:
        return "email does not match its subject_key (edited)"
    return None


def _walk(
    tenant: str, key: bytes | None, head: Any, rows: sa.CursorResult[Any]
) -> tuple[int, BrokenLink | None]:
    ckey = chain_key(key) if key is not None else None
    keyed_from = int(head.keyed_from_seq) if head is not None else 1
    checked, prev_hash, prev_seq, prev_id = 0, GENESIS, 0, None
    erasures: set[tuple[str, datetime]] = set()  # (subject_key, time) of every chained erasure
    erased: list[tuple[int, str, datetime]] = []  # rows whose personal data is gone: need an erasure
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
        problem = _check_row(r, key, ckey, keyed_from)
        if problem is not None:
            return checked, BrokenLink(tenant, r["id"], f"{where}: {problem}")
        if r["source"] == "erasure" and r["basis"] == "erasure":
            erasures.add((r["subject_key"], r["occurred_at"]))
        if r["erased_at"] is not None:
            erased.append((r["id"], r["subject_key"], r["erased_at"]))
        prev_hash, prev_seq, prev_id = r["hash"], r["seq"], r["id"]
    for row_id, skey, when in erased:
        # An erasure appends its own chained withdrawals dated the moment it scrubbed the rows:
        # a row marked erased without them was scrubbed by hand (a fake erasure).
        if (skey, when) not in erasures:
            return checked, BrokenLink(tenant, row_id, f"id {row_id}: marked erased, but no erasure is chained for it")
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


def tenants_in(conn: sa.Connection) -> list[str]:
    """Every tenant with an event or a chain head, sorted."""
    found = conn.execute(sa.select(consent_events.c.tenant_id).distinct()).scalars().all()
    heads = conn.execute(sa.select(consent_chain_heads.c.tenant_id)).scalars().all()
    return sorted(set(found) | set(heads))


def verify_chains(
    conn: sa.Connection, tenants: Iterable[str] | None, key_for_tenant: Callable[[str], bytes | None] | None
) -> VerifyResult:
    """Walk each tenant's chain in seq order; stop at the first broken link.

    ``key_for_tenant`` gives the tenant's *pseudonym* key (None when unknown: the keyed checks
    are skipped, the links and unkeyed hashes are still checked).
    """
    if tenants is None:
        tenants = tenants_in(conn)
    total = 0
    for tenant in tenants:
        key = key_for_tenant(tenant) if key_for_tenant else None
        checked, broken = _check_tenant(conn, tenant, key)
        total += checked
        if broken is not None:
            return VerifyResult(False, total, broken)
    return VerifyResult(True, total, None)


def fresh_rows(
    rows: list[dict[str, Any]], owner: list[int], seen: set[str]
) -> tuple[list[dict[str, Any]], list[int]]:
    """The rows to append: those whose idempotency key is not in ``seen`` (recorded before) nor repeats
    one earlier in ``rows``; with the group (``owner``) of each. ``seen`` grows with the kept keys."""
    fresh, fresh_owner = [], []
    for row, index in zip(rows, owner, strict=True):
        k = row["idempotency_key"]
        if k is not None and k in seen:
            continue  # recorded before, or earlier in this append
        if k is not None:
            seen.add(k)
        fresh.append(row)
        fresh_owner.append(index)
    return fresh, fresh_owner

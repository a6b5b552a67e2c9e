"""Erasure: remove a person's personal data from the ledger and outbox, keep the pseudonymous proof.

The proof is the chain itself: an erasure appends a keyed-chained withdrawal per purpose (source
and basis ``erasure``) dated the moment it scrubs the older rows, and every scrubbed row gets that
same moment as ``erased_at``. ``verify`` accepts a row without email only when such an erasure is
chained for its subject at its ``erased_at`` - so a row scrubbed by hand (a "fake erasure", e.g. to
hide who a record was about) is reported.

Copies of the address outside the ledger's own columns are scrubbed too: outbox ``last_error``
texts (vendors quote the address in their errors) and, through :func:`scrub_json_column`, any
JSON document the caller names (the sync's run reports).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from consent.chain import append_rows, chain_key, lock_head
from consent.policy import PURPOSES, WITHDRAWN, check_name, normalize_subject, subject_key
from consent.records import ErasureResult, recorded_from_row
from consent.schema import consent_aliases, consent_events, consent_outbox

ERASED = "[erased]"
ev, ob, al = consent_events.c, consent_outbox.c, consent_aliases.c


def redact(text: str, email: str) -> str:
    """``text`` with every copy of ``email`` (any case) replaced by ``[erased]``."""
    return re.sub(re.escape(email), ERASED, text, flags=re.IGNORECASE)


def erase_subject(
    c: sa.Connection, tenant: str, key: bytes, email: str, purposes: Iterable[str], now: datetime
) -> ErasureResult:
    """Erase one person inside the caller's transaction (see :meth:`consent.ledger.Ledger.erase`)."""
    subject = normalize_subject(email)
    skey = subject_key(key, subject)
    head = lock_head(c, tenant)
    scrubbed = c.execute(
        sa.update(consent_events)
        .where(ev.tenant_id == tenant, ev.subject_key == skey, ev.erased_at.is_(None))
        .values(subject=None, evidence_personal=None, erased_at=now)
    ).rowcount
    known = c.execute(
        sa.select(ev.purpose).where(ev.tenant_id == tenant, ev.subject_key == skey).distinct()
    ).scalars().all()
    rows = [
        {
            "tenant_id": tenant, "subject": None, "subject_key": skey, "purpose": purpose,
            "state": WITHDRAWN, "basis": "erasure", "source": "erasure", "occurred_at": now,
            "recorded_at": now, "notice_version": None, "evidence": {"erasure_requested": True},
            "evidence_personal": None, "personal_digest": None, "idempotency_key": None,
            "erased_at": now,
        }
        for purpose in sorted(set(known) | set(PURPOSES) | {check_name(p, "purpose") for p in purposes})
    ]
    appended = append_rows(c, tenant, head, rows, chain_key(key))
    outbox_scrubbed = c.execute(
        sa.update(consent_outbox)
        .where(ob.tenant_id == tenant, ob.subject_key == skey, ob.status != "pending", ob.email.is_not(None))
        .values(email=None)
    ).rowcount
    pending = c.execute(
        sa.update(consent_outbox)
        .where(ob.tenant_id == tenant, ob.subject_key == skey, ob.status == "pending")
        .values(scrub_on_done=True)
    ).rowcount
    _scrub_errors(c, tenant, subject)
    aliases = c.execute(
        sa.update(consent_aliases).where(al.tenant_id == tenant, al.old_subject_key == skey).values(old_email=None)
    ).rowcount
    aliases += c.execute(
        sa.update(consent_aliases).where(al.tenant_id == tenant, al.new_subject_key == skey).values(new_email=None)
    ).rowcount
    return ErasureResult(
        tenant, skey, scrubbed, tuple(recorded_from_row(r) for r in appended), outbox_scrubbed, pending, aliases
    )


def _scrub_errors(c: sa.Connection, tenant: str, subject: str) -> None:
    # Any row of the tenant: a vendor may name the address in an error about a batch or an alias.
    found = c.execute(
        sa.select(ob.id, ob.last_error).where(
            ob.tenant_id == tenant, sa.func.lower(ob.last_error).contains(subject, autoescape=True)
        )
    ).all()
    for row_id, text in found:
        c.execute(sa.update(consent_outbox).where(ob.id == row_id).values(last_error=redact(text, subject)))


def _scrub(value: Any, email: str) -> Any:
    if isinstance(value, str):
        return redact(value, email) if email in value.lower() else value
    if isinstance(value, list):
        return [_scrub(v, email) for v in value]
    if isinstance(value, dict):
        return {_scrub(k, email): _scrub(v, email) for k, v in value.items()}
    return value


def scrub_json_column(
    c: sa.Connection, table: sa.Table, column: str, tenant: str, email: str, *, tenant_column: str = "tenant_id"
) -> int:
    """Replace ``email`` in every JSON document of ``table.column`` for ``tenant``; returns rows changed.

    For copies the ledger does not own (the sync's run reports): the caller passes its table, so
    ``consent`` stays independent of ``sync``.
    """
    subject = normalize_subject(email)
    col, key_cols = table.c[column], list(table.primary_key.columns)
    changed = 0
    for row in c.execute(sa.select(*key_cols, col).where(table.c[tenant_column] == tenant, col.is_not(None))):
        doc = row[-1]
        clean = _scrub(doc, subject)
        if clean != doc:
            where = [k == row[i] for i, k in enumerate(key_cols)]
            c.execute(sa.update(table).where(*where).values({column: clean}))
            changed += 1
    return changed


__all__ = ["ERASED", "erase_subject", "redact", "scrub_json_column"]

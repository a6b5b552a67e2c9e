"""Checkpoints: signed chain heads that leave the database, and the check against one.

A hash chain cannot show what was cut from its end together with its head, nor a tenant deleted
outright, nor a pre-0003 (unkeyed) part recomputed: the database holds nothing to compare with.
A checkpoint is that something, kept by the operator (a file, a log, a ticket)::

    {"format": "segsync-consent-checkpoint", "version": 1, "created_at": "...",
     "tenants": {"harbor": {"seq": 812, "hash": "...", "keyed_from_seq": 1,
                            "outbox_keyed_from_id": 0, "outbox_rows": 40, "outbox_max_id": 77,
                            "mac": "<HMAC-SHA256(chain key, the entry without mac)>"}}}

``segsync consent checkpoint`` writes one; ``segsync consent verify --against FILE`` checks that
every tenant it names still exists, that the row at its ``seq`` still has its ``hash`` (so nothing
up to there was cut, edited or recomputed), that the markers of the keyed part did not move, and
that no outbox row it counted was deleted. The MAC means a checkpoint cannot be forged either
without the tenant's key. Nothing personal is in it: it can be stored anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from consent.chain import BrokenLink, canonical_json, chain_key, tenants_in
from consent.schema import consent_chain_heads, consent_events, consent_outbox
from core.errors import InputError

FORMAT = "segsync-consent-checkpoint"
_FIELDS = ("seq", "hash", "keyed_from_seq", "outbox_keyed_from_id", "outbox_rows", "outbox_max_id")


def _entry_mac(ckey: bytes, tenant: str, entry: Mapping[str, Any]) -> str:
    body = {"tenant": tenant, **{k: entry[k] for k in _FIELDS}}
    return hmac.new(ckey, canonical_json(body).encode("utf-8"), hashlib.sha256).hexdigest()


def _outbox_counts(conn: sa.Connection, tenant: str, max_id: int | None = None) -> tuple[int, int]:
    ob = consent_outbox.c
    query = sa.select(sa.func.count(), sa.func.coalesce(sa.func.max(ob.id), 0)).where(ob.tenant_id == tenant)
    if max_id is not None:
        query = query.where(ob.id <= max_id)
    count, top = conn.execute(query).one()
    return int(count), int(top)


def make_checkpoint(
    conn: sa.Connection, tenants: Iterable[str] | None, key_for_tenant: Callable[[str], bytes], now: datetime
) -> dict[str, Any]:
    """A signed checkpoint of every tenant's chain head (``tenants`` None = every tenant stored)."""
    names = tenants_in(conn) if tenants is None else sorted(tenants)
    entries: dict[str, Any] = {}
    for tenant in names:
        head = conn.execute(
            sa.select(consent_chain_heads).where(consent_chain_heads.c.tenant_id == tenant)
        ).one_or_none()
        if head is None:
            continue  # nothing recorded yet: nothing to anchor
        rows, top = _outbox_counts(conn, tenant)
        entry: dict[str, Any] = {
            "seq": int(head.last_seq), "hash": head.last_hash, "keyed_from_seq": int(head.keyed_from_seq),
            "outbox_keyed_from_id": int(head.outbox_keyed_from_id), "outbox_rows": rows, "outbox_max_id": top,
        }
        entry["mac"] = _entry_mac(chain_key(key_for_tenant(tenant)), tenant, entry)
        entries[tenant] = entry
    return {"format": FORMAT, "version": 1, "created_at": now.astimezone(UTC).isoformat(), "tenants": entries}


def write_checkpoint(path: str | os.PathLike[str], doc: Mapping[str, Any]) -> Path:
    """Write ``doc`` to ``path`` atomically (a temporary file, then rename)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and shape-check a checkpoint file; a clear :class:`InputError` when it is not one."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the checkpoint ({exc.strerror})") from None
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"{path}: the checkpoint is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("tenants"), dict):
        raise InputError(f"{path}: not a segsync consent checkpoint (format {FORMAT!r} expected)")
    for tenant, entry in doc["tenants"].items():
        ok = isinstance(entry, dict) and all(
            isinstance(entry.get(k), int) and not isinstance(entry.get(k), bool) for k in _FIELDS if k != "hash"
        )
        if not ok or not isinstance(entry.get("hash"), str) or not isinstance(entry.get("mac"), str):
            raise InputError(f"{path}: tenants.{tenant} is malformed (needs {', '.join(_FIELDS)} and mac)")
    return doc


def check_checkpoint(
    conn: sa.Connection, doc: Mapping[str, Any], key_for_tenant: Callable[[str], bytes | None]
) -> BrokenLink | None:
    """The first way the database disagrees with checkpoint ``doc``, or None."""
    ev = consent_events.c
    for tenant, cp in sorted(doc["tenants"].items()):
        key = key_for_tenant(tenant)
        if key is None:
            return BrokenLink(tenant, None, "checkpoint: no key for this tenant, so its checkpoint cannot be checked")
        if not hmac.compare_digest(cp["mac"], _entry_mac(chain_key(key), tenant, cp)):
            return BrokenLink(tenant, None, "checkpoint: its signature does not match (the file was edited)")
        head = conn.execute(
            sa.select(consent_chain_heads).where(consent_chain_heads.c.tenant_id == tenant)
        ).one_or_none()
        if head is None:
            return BrokenLink(tenant, None, f"checkpoint: the tenant had {cp['seq']} events and now has none "
                                            "(the tenant's ledger was deleted)")
        row = conn.execute(
            sa.select(ev.id, ev.hash).where(ev.tenant_id == tenant, ev.seq == cp["seq"])
        ).one_or_none()
        if row is None:
            return BrokenLink(tenant, None, f"checkpoint: event seq {cp['seq']} is gone (the chain was truncated)")
        if row.hash != cp["hash"]:
            return BrokenLink(tenant, row.id, f"checkpoint: event seq {cp['seq']} has another hash "
                                              "(the chain up to it was rewritten)")
        if (
            int(head.keyed_from_seq) != cp["keyed_from_seq"]
            or int(head.outbox_keyed_from_id) != cp["outbox_keyed_from_id"]
        ):
            return BrokenLink(
                tenant, None, "checkpoint: the start of the keyed chain moved (a downgrade to unkeyed rows)"
            )
        rows, _ = _outbox_counts(conn, tenant, cp["outbox_max_id"])
        if rows != cp["outbox_rows"]:
            return BrokenLink(tenant, None, f"checkpoint: {cp['outbox_rows']} outbox rows up to id "
                                            f"{cp['outbox_max_id']}, now {rows} (outbox rows were deleted)")
    return None


__all__ = ["FORMAT", "check_checkpoint", "load_checkpoint", "make_checkpoint", "write_checkpoint"]

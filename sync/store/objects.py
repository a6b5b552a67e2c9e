"""The vendor-objects aggregate: which tags, segments and properties at a vendor are segsync's.

A connector records an object before it asks the vendor to create it and again with the vendor's id once
created (see :class:`connectors.base.ObjectLedger`); adoption (a config key, or the upgrade rule of an
install that predates this record) is recorded the same way. :class:`TenantObjects` is the ledger one
tenant's connector gets, bound to the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from connectors.base import ObjectLedger, VendorObject
from core.times import now as utcnow
from sync.store import schema as t
from sync.store.sqlcore import upsert

if TYPE_CHECKING:
    from sync.store.interface import Store


class ObjectRecords:
    """Vendor objects segsync owns (mixed into :class:`sync.store.sql.SqlStore`)."""

    engine: Engine

    def vendor_objects(self, tenant_id: str, system: str, kind: str, scope: str) -> dict[str, VendorObject]:
        """Recorded objects of one kind in one scope at one vendor, by name."""
        v = t.vendor_objects.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(v.name, v.vendor_id, v.how, v.note).where(
                v.tenant_id == tenant_id, v.system == system, v.kind == kind, v.scope == scope))
            return {r.name: VendorObject(kind, scope, r.name, r.vendor_id, r.how, r.note) for r in rows}

    def record_vendor_object(self, tenant_id: str, system: str, obj: VendorObject) -> None:
        """Insert or update one object's row (committed when this returns)."""
        row = {"tenant_id": tenant_id, "system": system, "kind": obj.kind, "scope": obj.scope, "name": obj.name,
               "vendor_id": obj.vendor_id, "how": obj.how, "note": obj.note, "recorded_at": utcnow()}
        with self.engine.begin() as conn:
            upsert(conn, t.vendor_objects, [row], ["tenant_id", "system", "kind", "scope", "name"])


class TenantObjects(ObjectLedger):
    """One tenant's record of one vendor's objects, in the store."""

    def __init__(self, store: Store, tenant_id: str, system: str,
                 sent_to: Callable[[str, str], set[str] | None] | None = None) -> None:
        self.store, self.tenant_id, self.system = store, tenant_id, system
        self._sent_to = sent_to

    def objects(self, kind: str, scope: str) -> dict[str, VendorObject]:
        return self.store.vendor_objects(self.tenant_id, self.system, kind, scope)

    def record(self, obj: VendorObject) -> None:
        self.store.record_vendor_object(self.tenant_id, self.system, obj)

    def sent_to(self, kind: str, name: str) -> set[str] | None:
        return self._sent_to(kind, name) if self._sent_to is not None else None

"""The sync store: the :class:`Store` interface, its SQLAlchemy implementation by aggregate
(``identity``, ``state``, ``runs``, composed in ``sql``), the schema and the Alembic migrations."""

from sync.store.interface import LockLost, PageResult, Store, TenantBusy, TenantLease
from sync.store.sql import SqlStore


def open_store(url: str, migrate: bool = True) -> Store:
    """Open the store at ``url`` (``sqlite:///...`` or ``postgresql+psycopg://...``), migrated unless told not to."""
    return SqlStore.open(url, migrate=migrate)


__all__ = ["LockLost", "PageResult", "SqlStore", "Store", "TenantBusy", "TenantLease", "open_store"]

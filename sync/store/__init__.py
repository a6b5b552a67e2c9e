"""The sync store: its interface, the SQLAlchemy implementation, the schema and the Alembic migrations."""

from sync.store.sql import Store, TenantBusy

__all__ = ["Store", "TenantBusy"]

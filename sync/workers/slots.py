"""Vendor accounts shared by tenants, and a cap on the runs that use one account at the same time.

Several firms of an agency can sit on one CRM portal or one email-platform account: their runs share that
account's rate limit, so running all of them at once only makes each slower (and risks a 429 storm). A
run holds one of ``per_account`` slots of every account it uses; a slot is a PostgreSQL session advisory
lock, taken with ``pg_try_advisory_lock`` on a connection of its own, so a worker that dies frees its
slots with its session. procrastinate has no semaphore of its own; its ``lock`` would only express N=1.

An account is named by a fingerprint of the connector block (type, base URL and secrets), never by a
secret itself: the fingerprint is a truncated SHA-256 and is what logs and job arguments carry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, SecretStr

from core.errors import SegsyncError
from sync.config.models import TenantCfg
from sync.store.runs import KEEPALIVES, advisory_key


class AccountBusy(SegsyncError):
    """Every slot of a vendor account this run needs is taken by runs of other tenants: try again later."""


def account_fingerprint(block: BaseModel | None) -> str | None:
    """A stable id of the vendor account a connector block uses (None when it uses none: a CSV file).

    Two tenants with the same type, base URL and credentials share an account. Only a hash prefix is
    kept, so the id can be logged and stored without revealing the credential.
    """
    if block is None:
        return None
    secrets = sorted(f"{name}={value.get_secret_value()}" for name, value in _fields(block)
                     if isinstance(value, SecretStr))
    if not secrets:
        return None
    base_url = str(getattr(block, "base_url", "") or "")
    raw = "\n".join([str(getattr(block, "type", "")), base_url.rstrip("/"), *secrets])
    return f"{getattr(block, 'type', 'vendor')}:{hashlib.sha256(raw.encode()).hexdigest()[:16]}"


def _fields(block: BaseModel) -> Iterator[tuple[str, Any]]:
    for name in type(block).model_fields:
        yield name, getattr(block, name)


def tenant_accounts(tenant: TenantCfg) -> list[str]:
    """The vendor accounts one run of the tenant talks to, sorted (slots are always taken in this order)."""
    return sorted({fp for fp in (account_fingerprint(tenant.crm), account_fingerprint(tenant.esp)) if fp})


class AccountSlots:
    """At most ``per_account`` concurrent runs per vendor account, across every worker sharing the database."""

    def __init__(self, engine: sa.Engine, per_account: int) -> None:
        self.engine = engine
        self.per_account = per_account
        with engine.connect() as conn:
            self.schema = str(conn.execute(sa.text("select current_schema()")).scalar())

    def key(self, account: str, slot: int) -> int:
        return advisory_key(self.schema, f"account:{account}:{slot}")

    @contextmanager
    def hold(self, accounts: list[str]) -> Iterator[dict[str, int]]:
        """Hold one slot of each account for the block (yields account -> slot), or raise :class:`AccountBusy`."""
        if not accounts:
            yield {}
            return
        engine = sa.create_engine(self.engine.url, poolclass=sa.pool.NullPool, connect_args=KEEPALIVES)
        try:
            with engine.connect() as conn, ExitStack() as held:
                taken: dict[str, int] = {}
                for account in accounts:
                    slot = self._take(conn, account)
                    if slot is None:
                        raise AccountBusy(f"vendor account {account}: all {self.per_account} slot(s) are in use "
                                          "by other tenants' runs")
                    taken[account] = slot
                    held.callback(self._release, conn, self.key(account, slot))
                yield taken
        finally:
            engine.dispose()

    def _take(self, conn: sa.Connection, account: str) -> int | None:
        for slot in range(self.per_account):
            got = conn.execute(sa.text("select pg_try_advisory_lock(:k)"), {"k": self.key(account, slot)}).scalar()
            conn.commit()
            if got:
                return slot
        return None

    @staticmethod
    def _release(conn: sa.Connection, key: int) -> None:
        try:
            conn.execute(sa.text("select pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()
        except sa.exc.SQLAlchemyError:
            pass  # the session is gone, and its locks with it

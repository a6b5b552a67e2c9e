"""The Redtail subject: :class:`~connectors.redtail.RedtailConnector` over the Redtail simulator (real HTTP)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox.redtail import DO_NOT_EMAIL
from tests.contract.subject import ARCHIVE, FAST, MERGE, PROP, WEBHOOKS, Subject


class RedtailSubject(Subject):
    name = "redtail"
    kind = "crm"
    vendor = "redtail"
    lacks = {
        ARCHIVE: "Redtail's listings simply drop a deleted contact (no deleted flag in /contacts, no deletions feed; "
                 "INFERRED, see sandbox.redtail): a pull cannot tell deleted from never seen",
        MERGE: "Redtail's public API reports no merges (a merged-away contact just leaves the listings)",
        WEBHOOKS: "Redtail's public API v1 documents no webhooks",
    }
    probe_routes = {"/authentication": {"authenticated_user": {"user_key": "scripted-user-key"}},
                    "/contacts": {"contacts": [], "meta": {"total_records": 0, "total_pages": 0}},
                    # the end of every pass lists the opt-out group's members: a firm without one here
                    "/tag_groups": {"tag_groups": [], "meta": {"total_records": 0, "total_pages": 0}}}
    probe_target = "/contacts"
    credential = "crm.api_key"
    paced_options = {"requests_per_second": 10.0}
    scopes = ("reading contacts",)  # Redtail has roles, not scopes: a 403 names the permission the role lacks

    def __init__(self, make_sandbox: Any, tmp_path: Path) -> None:
        super().__init__(make_sandbox, tmp_path)
        self.sb = make_sandbox(contacts=300, seed=23)
        self.rt = self.sb.redtail  # the same book; stopped with the sandbox
        self.sim = self.rt.sim
        self.secrets = [self.rt.api_key, self.rt.password, self.sim.user_key]
        self.optouts_at_start = self._optouts()

    def connect(self, **options: Any) -> Any:
        return self.connect_to(self.rt.url, **options)

    def connect_to(self, base_url: str, **options: Any) -> Any:
        from connectors.redtail import RedtailConnector

        api_key = options.pop("token", self.rt.api_key)
        kw = {"requests_per_second": 0.0, "retry": FAST, **options}
        return RedtailConnector(api_key, self.rt.username, self.rt.password, base_url, **kw)

    def live_ids(self) -> set[str]:
        with self.sim.db.lock:
            return {str(c.id) for c in self.sim.db.contacts.values() if not c.deleted}

    def modify(self, ids: Sequence[str]) -> None:
        time.sleep(0.002)  # after the run started: updated_at moves past it
        with self.sim.db.lock:
            for i in ids:
                self.sim.db.contacts[int(i)].updated_at = datetime.now(UTC)
        time.sleep(0.002)

    def prepare(self, conn: Any) -> None:
        conn.ensure_schema(PROP, ["a"], [])

    def push_keys(self, n: int) -> list[str]:
        return sorted(self.live_ids(), key=int)[:n]

    def refuse(self, keys: Sequence[str]) -> None:
        with self.sim.db.lock:  # gone from the database: Redtail answers 404 "Contact not found" for them
            for k in keys:
                self.sim.db.contacts.pop(int(k))

    def email_of(self, key: str) -> str:
        with self.sim.db.lock:
            return str(self.sim.db.contacts[int(key)].emails[0]["address"])

    def mark(self) -> None:
        self.rt.calls.clear()

    def write_sizes(self, conn: Any) -> list[tuple[str, int, int]]:
        # Redtail has no batch write: each write carries one membership or one field value of one contact.
        return [(f"{c.method} {c.path}", 1, conn.limits.batch_size) for c in self.rt.calls.writes("redtail")]

    def _optouts(self) -> dict[int, int]:
        """Membership id -> contact id of every membership of the firm's "Do Not Email" tag group."""
        with self.sim.db.lock:
            group = {t["id"] for t in self.sim.db.tags.values() if t["name"] == DO_NOT_EMAIL}
            return {mid: c.id for c in self.sim.db.contacts.values() for mid, tid in c.tag_memberships.items()
                    if tid in group}

    def subscribe_requests(self) -> list[str]:
        # Redtail has no subscription status: taking someone out of the opt-out tag group is the resubscribe.
        gone = {mid for mid in self.optouts_at_start if mid not in self._optouts()}
        return [f"{c.method} {c.path}" for c in self.rt.calls.writes("redtail")
                if c.method == "DELETE" and c.path.rsplit("/", 1)[-1].isdigit() and int(c.path.rsplit("/", 1)[-1])
                in gone] + [f"membership {mid} of the opt-out group is gone" for mid in sorted(gone)]

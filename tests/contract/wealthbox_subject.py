"""The Wealthbox connector over its simulator (``sandbox.wealthbox``, real HTTP on loopback), on a clock the
subject moves: Wealthbox stamps records to the second, so a run start and a change never share one."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests.contract.subject import FAST, MERGE, PARTIAL_FAILURE, PROP, WEBHOOKS, Clock, Subject


class WealthboxSubject(Subject):
    name = "wealthbox"
    kind = "crm"
    vendor = "wealthbox"
    lacks = {
        PARTIAL_FAILURE: "Wealthbox has no batch write: each contact is its own PUT, refused or accepted alone",
        MERGE: "Wealthbox's API documents no contact merge (a merged-away contact is listed as deleted)",
        WEBHOOKS: "Wealthbox sends no opt-out webhooks (its opt-outs are read as the Do Not Email tag on pull)",
    }
    probe_routes = {"/contacts": {"contacts": [], "meta": {"current_page": 1, "total_pages": 0, "total_count": 0}}}
    probe_target = "/contacts"
    credential = "crm.access_token"
    scopes = ("data",)
    paced_options = {"rate_limit": 300}

    def __init__(self, make_sandbox: Any, tmp_path: Path) -> None:
        from sandbox.book import generate_book
        from sandbox.wealthbox import start_wealthbox

        super().__init__(make_sandbox, tmp_path)
        book = generate_book(contacts=300, seed=21)
        self.clock = Clock(book.as_of + timedelta(days=1))
        self.wb = start_wealthbox(book=book, seed=21, clock=self.clock)
        weakref.finalize(self, self.wb.stop)
        self.sim = self.wb.sim
        self.sb = SimpleNamespace(faults={"wealthbox": self.wb.faults})
        self.secrets = [self.wb.access_token]
        self.key_of = {v: k for k, v in self.sim.ws.by_person.items()}

    def started(self) -> datetime:
        self.clock.now += timedelta(seconds=1)
        return self.clock.now

    def connect(self, **options: Any) -> Any:
        return self.connect_to(self.wb.url, **options)

    def connect_to(self, base_url: str, **options: Any) -> Any:
        from connectors.wealthbox import WealthboxConnector

        token = options.pop("token", self.wb.access_token)
        return WealthboxConnector(token, base_url, **{"rate_limit": None, "retry": FAST, **options})

    def live_ids(self) -> set[str]:
        with self.sim.ws.lock:
            return {str(r.id) for r in self.sim.ws.contacts.values() if r.type == "Person" and r.deleted_at is None}

    def modify(self, ids: Sequence[str]) -> None:
        self.clock.now += timedelta(seconds=1)
        for i in ids:
            self.sim.touch(self.key_of[int(i)], self.clock.now)

    def archive(self, vendor_id: str) -> None:
        self.clock.now += timedelta(seconds=1)
        self.sim.delete(self.key_of[int(vendor_id)], self.clock.now)

    def prepare(self, conn: Any) -> None:
        conn.ensure_schema(PROP, ["a"], [])

    def push_keys(self, n: int) -> list[str]:
        return sorted(self.live_ids(), key=int)[:n]

    def email_of(self, key: str) -> str:
        with self.sim.ws.lock:
            return str(self.sim.ws.contacts[int(key)].fields["email_addresses"][0]["address"])

    def mark(self) -> None:
        self.wb.calls.clear()

    def write_sizes(self, conn: Any) -> list[tuple[str, int, int]]:
        return [(f"{c.method} {c.path}", c.inputs, conn.limits.batch_size) for c in self.wb.calls.writes("wealthbox")]

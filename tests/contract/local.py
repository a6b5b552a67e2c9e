"""Subjects that need no HTTP: the CSV connector over temp files, and the test fakes in tests/fakes.py."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.contract.subject import (
    ARCHIVE,
    HTTP,
    INCREMENTAL,
    LIVE_SOURCE,
    MERGE,
    NO_HTTP,
    NO_WEBHOOKS,
    PARTIAL_FAILURE,
    RETRY_AFTER,
    WEBHOOKS,
    Subject,
)

# --------------------------------------------------------------------------- CSV


class CsvSubject(Subject):
    name = "csv"
    kind = "crm"
    lacks = {
        LIVE_SOURCE: "a CSV export does not change under its reader (a new export is a new file)",
        RETRY_AFTER: NO_HTTP,
        WEBHOOKS: "an export file sends no webhooks",
        INCREMENTAL: "an export has no change dates: a changed file is read whole, an unchanged one not at all",
        ARCHIVE: "an export lists only the contacts that exist",
        MERGE: "an export lists only the contacts that exist",
        PARTIAL_FAILURE: "the output file is rewritten whole or not at all",
        HTTP: NO_HTTP,
    }

    def __init__(self, make_sandbox: Any, tmp_path: Path) -> None:
        super().__init__(make_sandbox, tmp_path)
        self.contacts = tmp_path / "contacts.csv"
        self.ids = [str(1000 + i) for i in range(2_500)]  # three 1,000-row pages
        self._write(self.ids)
        self.output = tmp_path / "out.csv"
        self.secrets = []
        self._writes_at_mark = 0
        self.conn: Any = None

    def _write(self, ids: Sequence[str]) -> None:
        with self.contacts.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "email", "firstname"])
            writer.writerows([i, f"p{i}@example.com", "P"] for i in ids)

    def connect(self, **options: Any) -> Any:
        from connectors.csvfile import CsvConnector

        self.conn = CsvConnector(self.contacts, output=self.output, **options)
        return self.conn

    def live_ids(self) -> set[str]:
        return set(self.ids)

    def push_keys(self, n: int) -> list[str]:
        return self.ids[:n]

    def email_of(self, key: str) -> str:
        return f"p{key}@example.com"

    def mark(self) -> None:
        self._writes_at_mark = self.conn.stats()["write_calls"] if self.conn else 0

    def write_sizes(self, conn: Any) -> list[tuple[str, int, int]]:
        new = conn.stats()["write_calls"] - self._writes_at_mark
        return [("output rewrite", len(self.ids), conn.limits.batch_size)] * new


# --------------------------------------------------------------------------- the test fakes


class FakeSubject(Subject):
    """A test fake: in memory, no HTTP; it records the records each write call carried."""

    fake: Any
    write_call: str = ""
    _sizes_at_mark = 0
    secrets: list[str] = []

    def connect(self, **options: Any) -> Any:
        return self.fake

    def mark(self) -> None:
        self._sizes_at_mark = len(self.fake.batch_sizes)

    def write_sizes(self, conn: Any) -> list[tuple[str, int, int]]:
        return [(self.write_call, n, conn.limits.batch_size) for n in self.fake.batch_sizes[self._sizes_at_mark:]]


FAKE_LACKS = {HTTP: NO_HTTP, RETRY_AFTER: NO_HTTP, WEBHOOKS: NO_WEBHOOKS}


class FakeCrmSubject(FakeSubject):
    name = "fakecrm"
    kind = "crm"
    write_call = "batch_update"
    lacks = {
        INCREMENTAL: "the fake re-reads everything until its cursor passes the end",
        ARCHIVE: "the fake keeps no archived contacts",
        MERGE: "the fake keeps no merged contacts",
        **FAKE_LACKS,
    }

    def __init__(self, make_sandbox: Any, tmp_path: Path) -> None:
        from tests.fakes import FakeCrm, make_book

        super().__init__(make_sandbox, tmp_path)
        people, events = make_book(n=600, seed=5)
        self.fake = FakeCrm(people, events)

    def live_ids(self) -> set[str]:
        return set(self.fake.people)

    def modify(self, ids: Sequence[str]) -> None:
        for vid in ids:
            self.fake.people[vid]["props"]["tier"] = "changed"

    def push_keys(self, n: int) -> list[str]:
        return list(self.fake.people)[:n]

    def email_of(self, key: str) -> str:
        return str(self.fake.people[key]["email"])

    def refuse(self, keys: Sequence[str]) -> None:
        self.fake.fail_keys.update({k: "refused by the fake" for k in keys})



class FakeEspSubject(FakeSubject):
    name = "fakeesp"
    kind = "esp"
    write_call = "tags_batch"
    lacks = {
        INCREMENTAL: "the fake reads its members once, then nothing",
        ARCHIVE: "the fake keeps no archived members",
        MERGE: "an ESP has no merges",
        **FAKE_LACKS,
    }

    def __init__(self, make_sandbox: Any, tmp_path: Path) -> None:
        from tests.fakes import FakeEsp, make_book

        super().__init__(make_sandbox, tmp_path)
        people, _ = make_book(n=1_100, seed=6)
        self.fake = FakeEsp(people)
        self.fake.strict = False  # the contract asks it what a vendor is asked, and checks it answers the same

    def live_ids(self) -> set[str]:
        return set(self.fake.members)

    def modify(self, ids: Sequence[str]) -> None:
        for email in ids:
            self.fake.members[email]["opt"] = self.fake.members[email]["opt"] + timedelta(seconds=1)

    def push_keys(self, n: int) -> list[str]:
        return [e for e, m in self.fake.members.items() if m["status"] == "subscribed"][:n]

    def refuse(self, keys: Sequence[str]) -> None:
        for email in keys:
            del self.fake.members[email]


    def subscribe_requests(self) -> list[str]:
        return [f"{email} -> {status}" for email, status in self.fake.status_writes if status != "unsubscribed"]

"""In-memory CRM and ESP connectors for fast pipeline tests (the sandbox tests cover the real wire).

They keep vendor-side state the way the vendors do (properties per contact, tags and status per
member) and count every write call, so a test can compare vendor state with the plan and prove
"a re-run makes zero write calls" without HTTP. A seeded book gives the models real signal:
upgrades follow pricing-page visits.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.base import (
    Contact,
    CrmConnector,
    EngagementEvent,
    EspConnector,
    Limits,
    PropertyUpdate,
    PullPage,
    RecordResult,
    TagChange,
)
from consent.signals import BASIS_FROM_POLICY, ConsentSignal

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def make_book(n: int = 900, seed: int = 3) -> tuple[dict[str, dict[str, Any]], list[EngagementEvent]]:
    rng = random.Random(seed)
    people: dict[str, dict[str, Any]] = {}
    events: list[EngagementEvent] = []
    for i in range(n):
        vid = str(1000 + i)
        intent = rng.random()
        people[vid] = {
            "email": f"person{i}@example.com",
            "props": {"tier": rng.choice(["core", "plus"])},
            "intent": intent,
        }
        for d in range(0, 360, 15):
            day = NOW - timedelta(days=360 - d)
            if rng.random() < 0.2 + 0.6 * intent:
                events.append(
                    EngagementEvent(
                        "fakecrm",
                        vid,
                        "page_view",
                        day,
                        None,
                        f"pv-{vid}-{d}",
                        attributes={"url": "/pricing" if rng.random() < intent else "/blog"},
                    )
                )
            if rng.random() < 0.3:
                events.append(
                    EngagementEvent("fakecrm", vid, "email_open", day + timedelta(hours=2), None, f"eo-{vid}-{d}")
                )
            if rng.random() < 0.04 * intent * 4:
                events.append(
                    EngagementEvent("fakecrm", vid, "upgrade", day + timedelta(hours=5), 1000.0, f"up-{vid}-{d}")
                )
    return people, events


class FakeCrm(CrmConnector):
    name = "fakecrm"
    limits = Limits(batch_size=100, requests_per_window=100, window_seconds=10, page_size=250)

    def __init__(self, people: dict[str, dict[str, Any]], events: list[EngagementEvent]) -> None:
        self.people = people
        self.events = events
        self.props: dict[str, dict[str, str]] = {vid: {} for vid in people}
        self.optout: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.fail_keys: dict[str, str] = {}  # vendor id -> error message for push_properties
        self.crash_after_batches: int | None = None
        self.batch_sizes: list[int] = []  # records per write call, checked against ``limits`` by the contract

    def writes(self) -> int:
        return sum(n for k, n in self.calls.items() if k != "read")

    def pull_contacts(self, cursor: str | None, run_started: datetime) -> Iterator[PullPage]:
        self.calls["read"] += 1
        start = 0 if cursor is None else int(cursor.removeprefix("page")) + 250  # resume after the stored page
        contacts = [
            Contact("fakecrm", vid, p["email"], dict(p["props"]), NOW, NOW - timedelta(days=400))
            for vid, p in self.people.items()
        ]
        for i in range(start, len(contacts), 250):
            yield PullPage(contacts=contacts[i : i + 250], cursor=f"page{i}")

    def pull_engagement(self, cursor: str | None, run_started: datetime) -> Iterator[PullPage]:
        if cursor is not None:
            return
        yield PullPage(events=list(self.events), cursor="all")

    def ensure_schema(self, property_name: str, segment_names: Sequence[str], score_names: Sequence[str]) -> None:
        self.calls["schema"] += 0  # schema creation is idempotent and not a data write here

    def push_properties(self, updates: Sequence[PropertyUpdate]) -> list[RecordResult]:
        if self.crash_after_batches is not None:
            if self.crash_after_batches == 0:
                raise SystemExit("simulated crash in the middle of the push")
            self.crash_after_batches -= 1
        out = []
        for n in range(0, len(updates), self.limits.batch_size):  # one write call per batch, as a vendor counts
            self.calls["batch_update"] += 1
            self.batch_sizes.append(len(updates[n:n + self.limits.batch_size]))
        for u in updates:
            if u.key in self.fail_keys:
                out.append(RecordResult(u.key, "failed", self.fail_keys[u.key]))
                continue
            self.props[u.key].update(u.properties)
            out.append(RecordResult(u.key, "sent"))
        return out

    def suppress(self, email: str, vendor_id: str | None, property_name: str) -> RecordResult:
        self.calls["suppress"] += 1
        if vendor_id:
            self.optout.add(vendor_id)
            if property_name:
                self.props[vendor_id][property_name] = ""
        return RecordResult(email, "sent")


class FakeEsp(EspConnector):
    name = "fakeesp"
    limits = Limits(batch_size=500, requests_per_window=10, window_seconds=1, page_size=1000)

    def __init__(
        self, people: dict[str, dict[str, Any]], unsubscribed: set[str] = frozenset(), missing: set[str] = frozenset()
    ) -> None:
        self.members: dict[str, dict[str, Any]] = {}
        for p in people.values():
            if p["email"] in missing:
                continue
            status = "unsubscribed" if p["email"] in unsubscribed else "subscribed"
            self.members[p["email"]] = {"status": status, "tags": set(), "opt": NOW - timedelta(days=500)}
        self.segments: dict[str, set[str]] = {}
        self.calls: Counter[str] = Counter()
        self.status_writes: list[tuple[str, str]] = []
        self.batch_sizes: list[int] = []  # records per write call, checked against ``limits`` by the contract
        self.before_batch = None  # callable run before each tag batch (mid-run events)
        self.tagged_unsubscribed: list[str] = []  # tag changes asked for unsubscribed members (refused)
        self.strict = True  # False (the connector contract): refuse such a change as Mailchimp does, do not assert

    def writes(self) -> int:
        return sum(n for k, n in self.calls.items() if k != "read")

    def pull_members(self, cursor: str | None, run_started: datetime) -> Iterator[PullPage]:
        self.calls["read"] += 1
        if cursor is not None:
            return
        members = list(self.members.items())
        size = self.limits.page_size
        for i in range(0, max(len(members), 1), size):  # pages as declared; the cursor rides on the last one
            contacts, consent = [], []
            for email, m in members[i : i + size]:
                props = {"timestamp_opt": m["opt"].isoformat()} if m["opt"] else {}
                contacts.append(Contact("fakeesp", email, email, props, NOW, m["opt"], status=m["status"]))
                if m["status"] == "unsubscribed":
                    consent.append(
                        ConsentSignal(
                            email,
                            "email_marketing",
                            "withdrawn",
                            BASIS_FROM_POLICY,
                            "fakeesp",
                            NOW - timedelta(days=10),
                            reason="unsubscribed",
                            evidence={},
                            vendor_event_id=f"unsub-{email}",
                        )
                    )
            yield PullPage(contacts=contacts, consent=consent, cursor="members" if i + size >= len(members) else None)

    def push_tags(self, changes: Sequence[TagChange]) -> list[RecordResult]:
        if self.before_batch:
            self.before_batch()
        out = []
        for n in range(0, len(changes), self.limits.batch_size):  # one write call per batch, as a vendor counts
            self.calls["tags_batch"] += 1
            self.batch_sizes.append(len(changes[n:n + self.limits.batch_size]))
        for c in changes:
            m = self.members.get(c.email)
            if m is None:
                out.append(RecordResult(c.email, "suppressed", "not in the audience"))
                continue
            if m["status"] == "unsubscribed" and c.active:  # as Mailchimp: a member in compliance state gets nothing
                # Pipeline tests keep the fake strict: the gate must never even ask.
                assert not self.strict, f"tagged an unsubscribed member {c.email}"
                self.tagged_unsubscribed.append(c.email)
                out.append(RecordResult(c.email, "suppressed", "unsubscribed at the ESP"))
                continue
            m["tags"] |= set(c.active)
            m["tags"] -= set(c.inactive)
            out.append(RecordResult(c.email, "sent"))
        return out

    def sync_segment(self, name: str, add: Sequence[str], remove: Sequence[str]) -> list[RecordResult]:
        self.calls["segment_batch"] += 1
        seg = self.segments.setdefault(name, set())
        seg |= set(add)
        seg -= set(remove)
        return [RecordResult(e, "sent") for e in [*add, *remove]]

    def suppress(self, email: str, tag_names: Sequence[str]) -> RecordResult:
        self.calls["suppress"] += 1
        m = self.members.get(email)
        if m is None:
            return RecordResult(email, "skipped", "not in the audience")
        m["status"] = "unsubscribed"
        self.status_writes.append((email, "unsubscribed"))
        m["tags"] -= set(tag_names)
        for seg in self.segments.values():
            seg.discard(email)
        return RecordResult(email, "sent")

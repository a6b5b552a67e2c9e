"""One small adapter per connector the contract runs against: how to build it against its simulator,
what records the simulator holds, and how to make the simulator change or misbehave.

Adding a connector to the contract = writing one :class:`Subject` here and adding it to ``SUBJECTS``.
A case that cannot apply to a connector is named in its ``lacks`` with the reason; the contract
reports that reason instead of running the case.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from connectors.base import CrmConnector, EspConnector, PropertyUpdate, PullPage, RecordResult, TagChange
from connectors.kit import RetrySettings

PROP = "segsync_segments"
TAG = "segsync:contract"
FAST = RetrySettings(max_attempts=4, initial_wait=0.0, max_wait=30.0, total_budget=60.0)

# Capabilities a case may need. A subject that lacks one says why in ``lacks``.
LIVE_SOURCE = "records change while a pull pages"
INCREMENTAL = "an incremental pull reads only what changed"
ARCHIVE = "archived records"
MERGE = "merged records"
PARTIAL_FAILURE = "per-record refusals inside an accepted batch"
HTTP = "an HTTP API (status codes, retries, rate limits, credentials)"
RETRY_AFTER = "a Retry-After header on its 429s"
WEBHOOKS = "webhooks"
NO_WEBHOOKS = "it sends no webhooks"

NO_HTTP = "it makes no HTTP calls: no status codes, rate limits, retries or credentials"


class Clock:
    """A simulator clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Subject:
    """Base adapter. ``kind`` is "crm" or "esp"; keys are vendor ids (CRM) or emails (ESP)."""

    name: ClassVar[str]
    kind: ClassVar[str]
    lacks: ClassVar[dict[str, str]] = {}
    vendor: ClassVar[str] = ""  # the sandbox vendor name, for HTTP subjects

    def __init__(self, make_sandbox: Any, tmp_path: Path) -> None:
        self.make_sandbox = make_sandbox
        self.tmp_path = tmp_path

    # ---- building and pulling
    def connect(self, **options: Any) -> CrmConnector | EspConnector:
        raise NotImplementedError

    def started(self) -> datetime:
        """A run start: now, on the simulator's clock."""
        return datetime.now(UTC)

    def pull(self, conn: Any, cursor: str | None, started: datetime) -> Iterator[PullPage]:
        return conn.pull_contacts(cursor, started) if self.kind == "crm" else conn.pull_members(cursor, started)

    def live_ids(self) -> set[str]:
        """Vendor ids of every record a full pull must return."""
        raise NotImplementedError

    def modify(self, ids: Sequence[str]) -> None:
        """Change these records at the vendor, after the run started."""
        raise NotImplementedError(self.lacks.get(LIVE_SOURCE, ""))

    def archive(self, vendor_id: str) -> None:
        raise NotImplementedError

    def merge(self, survivor: str, loser: str) -> None:
        raise NotImplementedError

    # ---- pushing
    def prepare(self, conn: Any) -> None:
        """Create what pushes write to (idempotent)."""

    def push_keys(self, n: int) -> list[str]:
        raise NotImplementedError

    def email_of(self, key: str) -> str:
        """The email address of the record ``key`` (an ESP's keys are emails)."""
        return key

    def push(self, conn: Any, keys: Sequence[str]) -> list[RecordResult]:
        if self.kind == "crm":
            return conn.push_properties([PropertyUpdate(k, {PROP: "a"}) for k in keys])
        return conn.push_tags([TagChange(k, active=(TAG,)) for k in keys])

    def refuse(self, keys: Sequence[str]) -> None:
        """Make the vendor refuse these records inside an otherwise accepted batch."""
        raise NotImplementedError

    def mark(self) -> None:
        """Forget the write calls so far."""

    def write_sizes(self, conn: Any) -> list[tuple[str, int, int]]:
        """(what, records carried, declared limit for that call) per write call since :meth:`mark`."""
        raise NotImplementedError

    def subscribe_requests(self) -> list[str]:
        """Requests that set anyone subscribed (or resubscribed) at the vendor."""
        return []

    # ---- HTTP subjects
    secrets: list[str]

    def connect_to(self, base_url: str, **options: Any) -> Any:
        """The connector against any server (a scripted one that misbehaves)."""
        raise NotImplementedError

    def probe(self, conn: Any) -> None:
        """One pull through the connector's public interface (the scripted server answers it)."""
        list(self.pull(conn, None, datetime.now(UTC)))

    def webhook(self, tenant: str, secret: str, list_id: str, valid: bool) -> tuple[str, bytes, dict[str, str]]:
        """One opt-out webhook as the vendor sends it: (path, body, headers); ``valid=False`` signs it wrongly."""
        raise NotImplementedError

    paced_options: ClassVar[dict[str, Any]] = {}  # connect() options under which the client paces to a real plan
    probe_routes: ClassVar[dict[str, Any]] = {}  # path -> happy JSON answer, for the scripted server
    probe_target: ClassVar[str] = ""  # the path the scripted faults hit


# --------------------------------------------------------------------------- HubSpot


class HubSpotSubject(Subject):
    name = "hubspot"
    kind = "crm"
    vendor = "hubspot"
    probe_routes = {"/communication-preferences/v3/definitions": {"subscriptionDefinitions": []},
                    "/crm/v3/objects/contacts": {"results": []}}
    probe_target = "/crm/v3/objects/contacts"
    credential = "access token"
    paced_options = {"plan": "starter"}
    scopes = ("crm.objects.contacts.read",)

    def __init__(self, make_sandbox: Any, tmp_path: Path) -> None:
        super().__init__(make_sandbox, tmp_path)
        self.sb = make_sandbox(contacts=300, seed=21, search_per_second=None)
        self.sim = self.sb.hubspot
        self.secrets = [self.sb.hubspot_token]

    def connect(self, **options: Any) -> Any:
        return self.connect_to(self.sb.hubspot_url, **options)

    def connect_to(self, base_url: str, **options: Any) -> Any:
        from connectors.hubspot import HubSpotConnector

        token = options.pop("token", self.sb.hubspot_token)
        kw = {"plan": "unlimited", "settle_seconds": 0, "sweep_every": 1, "search_per_second": None, "retry": FAST,
              **options}
        return HubSpotConnector(token, base_url, **kw)

    def live_ids(self) -> set[str]:
        return {r.id for r in self.sim.contacts.live()}

    def modify(self, ids: Sequence[str]) -> None:
        time.sleep(0.002)  # after the run started: lastmodifieddate moves past it
        self.sim.touch_contacts(ids)
        time.sleep(0.002)

    def archive(self, vendor_id: str) -> None:
        self.sim.archive_contacts([vendor_id])
        time.sleep(0.002)

    def merge(self, survivor: str, loser: str) -> None:
        self.sim.merge(survivor, loser)
        time.sleep(0.002)

    def prepare(self, conn: Any) -> None:
        conn.ensure_schema(PROP, ["a"], [])

    def push_keys(self, n: int) -> list[str]:
        live = sorted(self.live_ids(), key=int)
        if len(live) < n:
            live += self.sim.add_contacts([{"email": f"extra{i}@example.com"} for i in range(n - len(live))])
        return live[:n]

    def refuse(self, keys: Sequence[str]) -> None:
        self.sim.fail_batch_inputs(ids=keys)

    def email_of(self, key: str) -> str:
        return str(self.sim.contacts.records[key].properties["email"])

    def mark(self) -> None:
        self.sb.calls.clear()

    def write_sizes(self, conn: Any) -> list[tuple[str, int, int]]:
        return [(f"{c.method} {c.path}", c.inputs, conn.limits.batch_size) for c in self.sb.calls.writes("hubspot")]

    def webhook(self, tenant: str, secret: str, list_id: str, valid: bool) -> tuple[str, bytes, dict[str, str]]:
        from sandbox.webhooks import hubspot_event, hubspot_v3_signature

        body = json.dumps([hubspot_event("contact.propertyChange", 101, property_name="hs_email_optout",
                                         property_value="true", event_id=7)]).encode()
        path, stamp = f"/hooks/{tenant}/hubspot", int(time.time() * 1000)
        key = self.sb.hubspot_client_secret if valid else "not-the-app-client-secret"
        return path, body, {"Content-Type": "application/json", "X-HubSpot-Request-Timestamp": str(stamp),
                            "X-HubSpot-Signature-v3": hubspot_v3_signature(key, "POST", f"http://testserver{path}",
                                                                           body, stamp)}

    def subscribe_requests(self) -> list[str]:
        return [f"{c.method} {c.path}" for c in self.sb.calls.writes("hubspot")
                if "subscribe" in c.path.lower() and "unsubscribe" not in c.path.lower()]


# --------------------------------------------------------------------------- Mailchimp


def _subscribed_in(value: Any, path: str = "") -> list[str]:
    """Paths in a request body (JSON strings inside it included) that set a status to subscribed."""
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("status", "status_if_new") and item == "subscribed":
                found.append(f"{path}.{key}")
            found += _subscribed_in(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _subscribed_in(item, f"{path}[{i}]")
    return found


class MailchimpSubject(Subject):
    name = "mailchimp"
    kind = "esp"
    vendor = "mailchimp"
    lacks = {
        MERGE: "Mailchimp has no merges (an email change keeps the member's id)",
        RETRY_AFTER: "Mailchimp sends no rate headers (VENDORS.md) and its SDK drops response headers: a 429 backs "
                     "off exponentially",
    }
    credential = "esp.api_key"
    scopes = ()  # an API key has no scopes: the key's user either reaches the audience or not

    def __init__(self, make_sandbox: Any, tmp_path: Path) -> None:
        super().__init__(make_sandbox, tmp_path)
        self.clock = Clock(datetime(2026, 1, 5, 12, 0, tzinfo=UTC))  # after every seeded change in the book
        self.sb = make_sandbox(contacts=300, seed=22, mailchimp_clock=self.clock)
        self.state = self.sb.mailchimp.state
        self.secrets = [self.sb.mailchimp_key]
        with self.state.lock:  # more than one 1,000-member page
            for i in range(1_200):
                self.state.add(f"bulk{i}@example.com", "subscribed", {"FNAME": "B"},
                               last_changed=self.clock.now - timedelta(days=2))
        list_id = self.sb.mailchimp_list_id
        self.probe_routes = {f"/3.0/lists/{list_id}": {"id": list_id, "name": "Clients"},
                             f"/3.0/lists/{list_id}/members": {"members": [], "total_items": 0}}
        self.probe_target = f"/3.0/lists/{list_id}/members"

    def connect(self, **options: Any) -> Any:
        return self.connect_to(self.sb.mailchimp_url, **options)

    def connect_to(self, base_url: str, **options: Any) -> Any:
        from connectors.mailchimp import MailchimpConnector

        key = options.pop("token", self.sb.mailchimp_key)
        base_url = base_url if base_url.endswith("/3.0") else f"{base_url}/3.0"  # a scripted vendor's bare host
        kw = {"retry": FAST, "sleep": lambda _s: None, **options}
        return MailchimpConnector(key, self.sb.mailchimp_list_id, base_url, **kw)

    def started(self) -> datetime:
        return self.clock.now

    def live_ids(self) -> set[str]:
        with self.state.lock:
            return {m.unique_email_id for m in self.state.members.values()}

    def _members(self, ids: Sequence[str]) -> list[Any]:
        return [self.state.members[i] for i in ids]

    def modify(self, ids: Sequence[str]) -> None:
        self.clock.now += timedelta(minutes=1)  # a change after the run started
        with self.state.lock:
            for n, member in enumerate(self._members(ids)):
                self.state.update(member, {"merge_fields": {"FNAME": f"Changed{n}"}})
        self.clock.now += timedelta(minutes=1)

    def archive(self, vendor_id: str) -> None:
        self.clock.now += timedelta(minutes=1)
        with self.state.lock:
            self.state.set_status(self.state.members[vendor_id], "archived")
        self.clock.now += timedelta(minutes=1)

    def push_keys(self, n: int) -> list[str]:
        with self.state.lock:
            emails = [m.email for m in self.state.members.values() if m.status == "subscribed"]
            for i in range(max(0, n - len(emails))):
                emails.append(self.state.add(f"push{i}@example.com", "subscribed").email)
        return emails[:n]

    def refuse(self, keys: Sequence[str]) -> None:
        with self.state.lock:  # gone from the audience: the segment update names them in its errors
            for email in keys:
                self.state.delete_permanently(self.state.get(email))

    def mark(self) -> None:
        self.sb.calls.clear()

    def write_sizes(self, conn: Any) -> list[tuple[str, int, int]]:
        out = []
        for c in self.sb.calls.writes("mailchimp"):
            body = c.body if isinstance(c.body, dict) else {}
            if c.path.endswith("/batches"):
                out.append((c.path, len(body.get("operations") or []), conn.limits.job_size))
            elif "members_to_add" in body or "members_to_remove" in body:  # two lists, each under the limit
                out.append((c.path, max(len(body.get("members_to_add") or []),
                                        len(body.get("members_to_remove") or [])), conn.limits.batch_size))
            else:
                out.append((c.path, c.inputs, conn.limits.batch_size))
        return out

    def webhook(self, tenant: str, secret: str, list_id: str, valid: bool) -> tuple[str, bytes, dict[str, str]]:
        from urllib.parse import urlencode

        from sandbox.webhooks import mailchimp_form

        body = urlencode(mailchimp_form("unsubscribe", "ann@example.com", list_id, reason="abuse")).encode()
        path = f"/hooks/{tenant}/mailchimp/{secret if valid else 'not-the-webhook-secret-000000'}"
        return path, body, {"Content-Type": "application/x-www-form-urlencoded"}

    def subscribe_requests(self) -> list[str]:
        found = [f"{c.method} {c.path} {where}" for c in self.sb.calls.writes("mailchimp")
                 for where in _subscribed_in(c.body)]
        return found + [str(a) for a in self.sb.mailchimp.subscribe_attempts]


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


class FakeCrmSubject(Subject):
    name = "fakecrm"
    kind = "crm"
    lacks = {
        INCREMENTAL: "the fake re-reads everything until its cursor passes the end",
        ARCHIVE: "the fake keeps no archived contacts",
        MERGE: "the fake keeps no merged contacts",
        HTTP: NO_HTTP,
        RETRY_AFTER: NO_HTTP,
        WEBHOOKS: NO_WEBHOOKS,
    }

    def __init__(self, make_sandbox: Any, tmp_path: Path) -> None:
        from tests.fakes import FakeCrm, make_book

        super().__init__(make_sandbox, tmp_path)
        people, events = make_book(n=600, seed=5)
        self.fake = FakeCrm(people, events)
        self.secrets = []
        self._sizes_at_mark = 0

    def connect(self, **options: Any) -> Any:
        return self.fake

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

    def mark(self) -> None:
        self._sizes_at_mark = len(self.fake.batch_sizes)

    def write_sizes(self, conn: Any) -> list[tuple[str, int, int]]:
        return [("batch_update", n, conn.limits.batch_size) for n in self.fake.batch_sizes[self._sizes_at_mark:]]


class FakeEspSubject(Subject):
    name = "fakeesp"
    kind = "esp"
    lacks = {
        INCREMENTAL: "the fake reads its members once, then nothing",
        ARCHIVE: "the fake keeps no archived members",
        MERGE: "an ESP has no merges",
        HTTP: NO_HTTP,
        RETRY_AFTER: NO_HTTP,
        WEBHOOKS: NO_WEBHOOKS,
    }

    def __init__(self, make_sandbox: Any, tmp_path: Path) -> None:
        from tests.fakes import FakeEsp, make_book

        super().__init__(make_sandbox, tmp_path)
        people, _ = make_book(n=1_100, seed=6)
        self.fake = FakeEsp(people)
        self.fake.strict = False  # the contract asks it what a vendor is asked, and checks it answers the same
        self.secrets = []
        self._sizes_at_mark = 0

    def connect(self, **options: Any) -> Any:
        return self.fake

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

    def mark(self) -> None:
        self._sizes_at_mark = len(self.fake.batch_sizes)

    def write_sizes(self, conn: Any) -> list[tuple[str, int, int]]:
        return [("tags_batch", n, conn.limits.batch_size) for n in self.fake.batch_sizes[self._sizes_at_mark:]]

    def subscribe_requests(self) -> list[str]:
        return [f"{email} -> {status}" for email, status in self.fake.status_writes if status != "unsubscribed"]


def needs(subject: Subject, *capabilities: str) -> None:
    """Run the case only where it applies; elsewhere say which declared capability is missing, and why."""
    import pytest

    for capability in capabilities:
        if capability in subject.lacks:
            pytest.skip(f"does not apply to {subject.name}, which lacks '{capability}': {subject.lacks[capability]}")


SUBJECTS: list[type[Subject]] = [HubSpotSubject, MailchimpSubject, CsvSubject, FakeCrmSubject, FakeEspSubject]

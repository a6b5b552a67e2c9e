"""Subjects for the HTTP vendors, each over its sandbox simulator (real HTTP on loopback)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.contract.subject import FAST, MERGE, PROP, RETRY_AFTER, Clock, Subject

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

    def merge(self, survivor: str, loser: str) -> str:
        merged = self.sim.merge(survivor, loser).id
        time.sleep(0.002)
        return str(merged)

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


def subscribed_in(value: Any, path: str = "") -> list[str]:
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
            found += subscribed_in(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += subscribed_in(item, f"{path}[{i}]")
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
                 for where in subscribed_in(c.body)]
        return found + [str(a) for a in self.sb.mailchimp.subscribe_attempts]

"""Webhooks leave the sandbox in the vendors' wire formats, with signatures a receiver can verify independently."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, parse_qsl

import pytest
import requests

from sandbox.book import generate_book
from sandbox.common import CallLog, Faults, ServerThread, instrument
from sandbox.mailchimp import MailchimpSim, subscriber_hash
from sandbox.webhooks import (
    hubspot_event,
    hubspot_v3_signature,
    mailchimp_form,
    preference_body,
    segsync_signature,
    send_hubspot,
    send_mailchimp,
    send_segsync,
    validate_mailchimp_url,
    verify_hubspot_v3,
    verify_segsync,
)

KEY = "fedcba9876543210fedcba9876543210-us6"
LIST = "f00dfeed42"


class Receiver:
    """A loopback HTTP endpoint that records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.arrived = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.arrived:
                    outer.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                           "body": raw})
                    outer.arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _record

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.closed = False

    def posts(self) -> list[dict]:
        return [r for r in self.requests if r["method"] == "POST"]

    def wait_for(self, n: int, timeout: float = 5.0) -> list[dict]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.posts()) >= n, timeout)
        return self.posts()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def form(req: dict) -> dict[str, str]:
    assert req["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    pairs = parse_qsl(req["body"].decode(), keep_blank_values=True)
    assert len(pairs) == len({k for k, _ in pairs}), "no key may repeat"
    return dict(pairs)


# ---- Mailchimp format -----------------------------------------------------------------------------
def test_mailchimp_unsubscribe_is_form_encoded_like_mailchimp(receiver):
    fired = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)
    resp = send_mailchimp(receiver.url + "/hooks/mailchimp?secret=s3", "unsubscribe", "Ann@Example.com", LIST,
                          fired_at=fired, merges={"FNAME": "Ann"}, campaign_id="cmp1")
    assert resp.status_code == 200
    (req,) = receiver.posts()
    assert req["path"] == "/hooks/mailchimp?secret=s3"
    assert req["headers"]["User-Agent"] == "MailChimp.com"
    fields = form(req)
    assert fields == {
        "type": "unsubscribe", "fired_at": "2026-03-01 12:30:05", "data[action]": "unsub", "data[reason]": "manual",
        "data[id]": fields["data[id]"], "data[email]": "Ann@Example.com", "data[email_type]": "html",
        "data[ip_opt]": "", "data[web_id]": "", "data[campaign_id]": "cmp1", "data[list_id]": LIST,
        "data[merges][EMAIL]": "Ann@Example.com", "data[merges][FNAME]": "Ann", "data[merges][LNAME]": "",
    }
    assert len(fields["data[id]"]) == 10
    # nested keys decode the PHP way: data -> merges -> FNAME
    assert parse_qs(req["body"].decode())["data[merges][FNAME]"] == ["Ann"]


def test_mailchimp_other_event_types_carry_their_own_keys():
    keys = {t: [k for k, _ in mailchimp_form(t, "new@example.com", LIST, old_email="old@example.com")
                if k.startswith("data[")] if t == "upemail" else
            [k for k, _ in mailchimp_form(t, "new@example.com", LIST) if k.startswith("data[")]
            for t in ("subscribe", "profile", "cleaned", "upemail")}
    assert keys["upemail"] == ["data[new_id]", "data[new_email]", "data[old_email]", "data[list_id]"]
    assert keys["cleaned"] == ["data[campaign_id]", "data[reason]", "data[email]", "data[list_id]"]
    assert "data[ip_signup]" in keys["subscribe"] and "data[ip_signup]" not in keys["profile"]
    assert "data[merges][EMAIL]" in keys["profile"]
    upemail = dict(mailchimp_form("upemail", "new@example.com", LIST, old_email="old@example.com"))
    assert upemail["data[new_email]"] == "new@example.com" and upemail["data[old_email]"] == "old@example.com"
    with pytest.raises(ValueError, match="old_email"):
        mailchimp_form("upemail", "new@example.com", LIST)
    with pytest.raises(ValueError, match="must be one of"):
        mailchimp_form("bounce", "a@example.com", LIST)


def test_mailchimp_url_validation_is_a_plain_get(receiver):
    assert validate_mailchimp_url(receiver.url + "/hooks/mailchimp").status_code == 200
    (req,) = receiver.requests
    assert req["method"] == "GET" and req["body"] == b""
    assert req["headers"]["User-Agent"] == "MailChimp.com WebHook Validator"


# ---- HubSpot format ---------------------------------------------------------------------------------
def test_hubspot_v3_signature_verifies_independently(receiver):
    secret = "client-secret-123"
    url = receiver.url + "/hooks/hubspot?portal=62515&note=a%3Ab"
    events = [hubspot_event("contact.propertyChange", 101, property_name="hs_email_optout", property_value="true"),
              hubspot_event("contact.merge", 102, primaryObjectId=102, mergedObjectIds=[103])]
    resp = send_hubspot(url, events, secret)
    assert resp.status_code == 200
    (req,) = receiver.posts()
    headers, raw = req["headers"], req["body"]
    assert headers["Content-Type"] == "application/json"
    body = json.loads(raw)
    assert isinstance(body, list) and [e["subscriptionType"] for e in body] == ["contact.propertyChange",
                                                                               "contact.merge"]
    assert {"eventId", "subscriptionId", "portalId", "appId", "occurredAt", "attemptNumber", "objectId",
            "changeSource"} <= set(body[0])
    assert body[0]["propertyName"] == "hs_email_optout" and body[1]["mergedObjectIds"] == [103]
    ts = headers["X-HubSpot-Request-Timestamp"]
    assert abs(int(ts) - time.time() * 1000) < 60_000
    # HubSpot's recipe, written out here: METHOD + URI (with %3A etc. decoded) + body + timestamp
    uri = f"{receiver.url}/hooks/hubspot?portal=62515&note=a:b"
    expected = base64.b64encode(hmac.new(secret.encode(), f"POST{uri}{raw.decode()}{ts}".encode(),
                                         hashlib.sha256).digest()).decode()
    assert headers["X-HubSpot-Signature-v3"] == expected
    assert headers["X-HubSpot-Signature"] == hashlib.sha256(f"{secret}{raw.decode()}".encode()).hexdigest()
    assert headers["X-HubSpot-Signature-Version"] == "v1"
    assert verify_hubspot_v3(secret, "POST", url, raw, ts, expected)
    assert not verify_hubspot_v3("wrong", "POST", url, raw, ts, expected)
    assert not verify_hubspot_v3(secret, "POST", url, raw + b" ", ts, expected)
    stale = int(ts) - 301_000
    assert not verify_hubspot_v3(secret, "POST", url, raw, stale, hubspot_v3_signature(secret, "POST", url, raw, stale))
    assert not verify_hubspot_v3(secret, "POST", url, raw, "not-a-number", expected)


# ---- segsync preference center ------------------------------------------------------------------------
def test_segsync_preference_webhook_is_signed_over_timestamp_and_body(receiver):
    secret = "whsec-abc"
    occurred = datetime(2026, 5, 2, 9, 0, tzinfo=UTC)
    resp = send_segsync(receiver.url + "/webhooks/preferences", secret, "ann@example.com",
                        {"email_marketing": False, "profiling": True}, occurred_at=occurred, notice_version="v7")
    assert resp.status_code == 200
    (req,) = receiver.posts()
    raw, headers = req["body"], req["headers"]
    assert json.loads(raw) == {"email": "ann@example.com", "purposes": {"email_marketing": False, "profiling": True},
                               "occurred_at": "2026-05-02T09:00:00Z", "notice_version": "v7"}
    ts = headers["X-Segsync-Timestamp"]
    assert abs(int(ts) - time.time()) < 60
    digest = hmac.new(secret.encode(), ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
    assert headers["X-Segsync-Signature"] == f"sha256={digest}"
    assert verify_segsync(secret, ts, raw, headers["X-Segsync-Signature"])
    assert not verify_segsync(secret, ts, raw.replace(b"false", b"true "), headers["X-Segsync-Signature"])
    assert not verify_segsync(secret, int(ts) - 600, raw, segsync_signature(secret, int(ts) - 600, raw))
    assert preference_body("a@b.co", {"email_marketing": 0})["purposes"] == {"email_marketing": False}


# ---- the simulator fires list webhooks --------------------------------------------------------------
@pytest.fixture
def mc() -> Iterator[tuple[MailchimpSim, str]]:
    sim = MailchimpSim(KEY, LIST)
    sim.load(generate_book(contacts=80, seed=5))
    server = ServerThread(instrument(sim.app(), "mailchimp", CallLog(), Faults(), sim.rate_limited_response))
    yield sim, server.url + "/3.0"
    server.stop()


def test_sim_fires_mailchimp_webhooks_for_registered_urls(mc, receiver):
    sim, url = mc
    auth = ("x", KEY)
    hook_url = receiver.url + "/hooks/mailchimp?secret=abc"
    resp = requests.post(f"{url}/lists/{LIST}/webhooks", auth=auth, timeout=10,
                         json={"url": hook_url, "events": {"unsubscribe": True, "upemail": True, "cleaned": True},
                               "sources": {"user": True, "admin": True, "api": False}})
    assert resp.status_code == 200, resp.text
    hook = resp.json()
    assert hook["events"]["subscribe"] is False and hook["sources"]["api"] is False
    assert [r["method"] for r in receiver.requests] == ["GET"]  # the URL was validated first
    listed = requests.get(f"{url}/lists/{LIST}/webhooks", auth=auth, timeout=10).json()
    assert [w["id"] for w in listed["webhooks"]] == [hook["id"]]

    members = [m for m in sim.state.members.values() if m.status == "subscribed"]
    person, api_victim, mover = members[0], members[1], members[2]
    sim.unsubscribe(person.email)
    # an unsubscribe made through the API does not echo back while sources.api is off
    requests.patch(f"{url}/lists/{LIST}/members/{api_victim.id}", json={"status": "unsubscribed"}, auth=auth,
                   timeout=10).raise_for_status()
    old = mover.email
    sim.change_email(old, "moved@example.com")
    assert sim.wait_for_webhooks()
    posts = receiver.wait_for(2)
    assert len(posts) == 2
    unsub, upemail = (form(p) for p in posts)
    assert posts[0]["path"] == "/hooks/mailchimp?secret=abc"
    assert unsub["type"] == "unsubscribe" and unsub["data[email]"] == person.email
    assert unsub["data[list_id]"] == LIST and unsub["data[action]"] == "unsub"
    assert unsub["data[merges][FNAME]"] == person.merge_fields["FNAME"]
    assert upemail == {"type": "upemail", "fired_at": upemail["fired_at"], "data[new_id]": mover.unique_email_id,
                       "data[new_email]": "moved@example.com", "data[old_email]": old, "data[list_id]": LIST}
    assert [(d["type"], d["status"]) for d in sim.webhook_deliveries] == [("unsubscribe", 200), ("upemail", 200)]

    # turning the API source on makes API writes fire too
    requests.patch(f"{url}/lists/{LIST}/webhooks/{hook['id']}", json={"sources": {"api": True}}, auth=auth,
                   timeout=10).raise_for_status()
    requests.patch(f"{url}/lists/{LIST}/members/{subscriber_hash(members[3].email)}",
                   json={"status": "unsubscribed"}, auth=auth, timeout=10).raise_for_status()
    sim.clean(members[4].email)
    assert sim.wait_for_webhooks()
    api_unsub, cleaned = (form(p) for p in receiver.wait_for(4)[2:])
    assert api_unsub["type"] == "unsubscribe" and api_unsub["data[email]"] == members[3].email
    assert cleaned == {"type": "cleaned", "fired_at": cleaned["fired_at"], "data[campaign_id]": "",
                       "data[reason]": "hard", "data[email]": members[4].email, "data[list_id]": LIST}


def test_sim_webhook_registration_errors(mc, receiver):
    sim, url = mc
    auth = ("x", KEY)
    dead = "http://127.0.0.1:9/nothing-listens-here"
    resp = requests.post(f"{url}/lists/{LIST}/webhooks", json={"url": dead}, auth=auth, timeout=15)
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "url"
    bad = requests.post(f"{url}/lists/{LIST}/webhooks", json={"url": receiver.url, "events": {"nope": True}},
                        auth=auth, timeout=10)
    assert bad.status_code == 400 and bad.headers["content-type"].startswith("application/problem+json")
    assert requests.post(f"{url}/lists/wrong/webhooks", json={"url": receiver.url}, auth=auth,
                         timeout=10).status_code == 404
    hook_id = sim.add_webhook(receiver.url + "/down")
    receiver.close()  # the endpoint goes away: the delivery is recorded as failed, the API is unaffected
    sim.unsubscribe(next(m.email for m in sim.state.members.values() if m.status == "subscribed"))
    assert sim.wait_for_webhooks(timeout=15)
    (delivery,) = sim.webhook_deliveries
    assert delivery["status"] is None and "ConnectionError" in delivery["error"]
    assert requests.delete(f"{url}/lists/{LIST}/webhooks/{hook_id}", auth=auth, timeout=10).status_code == 204


def test_sim_subscriber_actions_fire_subscribe_and_profile(mc, receiver):
    sim, _ = mc
    pending = next((m for m in sim.state.members.values() if m.status == "pending"), None)
    if pending is None:  # the book decides; make one if it has none
        pending = sim.state.add("waiting@example.com", "pending", ip="203.0.113.9")
    hook_id = sim.add_webhook(receiver.url + "/hooks/mc")  # defaults: every event, user and admin sources
    sim.confirm_opt_in(pending.email)
    sim.update_profile(pending.email, FNAME="Renamed")
    sim.update_profile(pending.email, FNAME="Renamed")  # no change, no event
    assert sim.wait_for_webhooks()
    subscribe, profile = (form(p) for p in receiver.wait_for(2))
    assert subscribe["type"] == "subscribe" and subscribe["data[email]"] == pending.email
    assert subscribe["data[ip_signup]"] == pending.ip_signup and subscribe["data[id]"] == pending.unique_email_id
    assert profile["type"] == "profile" and profile["data[merges][FNAME]"] == "Renamed"
    assert "data[ip_signup]" not in profile
    assert sim.status(pending.email) == "subscribed" and len(sim.webhook_deliveries) == 2
    with pytest.raises(ValueError, match="not pending"):
        sim.confirm_opt_in(pending.email)
    assert hook_id

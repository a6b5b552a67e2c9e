"""The Mailchimp simulator answers like Mailchimp: paging, upserts, batches, compliance state, 429s, problem+json.

Driven with the official SDK (``mailchimp-marketing``, only its host changed) and with raw HTTP.
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import mailchimp_marketing as mc_sdk
import pytest
import requests
from mailchimp_marketing.api_client import ApiClientError

from sandbox.book import generate_book
from sandbox.common import CallLog, Faults, ServerThread, instrument
from sandbox.mailchimp import MailchimpSim, subscriber_hash

KEY = "0123456789abcdef0123456789abcdef-us6"
LIST = "a1b2c3d4e5"
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}


@dataclass
class Served:
    sim: MailchimpSim
    url: str  # http://127.0.0.1:P/3.0
    log: CallLog
    faults: Faults

    def call(self, method: str, path: str, key: str | None = KEY, **kw) -> requests.Response:
        auth = ("anystring", key) if key is not None else None
        return requests.request(method, self.url + path, auth=auth, timeout=10, **kw)

    def sdk(self) -> mc_sdk.Client:
        client = mc_sdk.Client()
        client.set_config({"api_key": KEY, "server": "us6"})
        client.api_client.host = self.url  # the only change from production use
        return client


@pytest.fixture(scope="module")
def book():
    return generate_book(contacts=300, seed=11)


def _serve(book, **options) -> Iterator[Served]:
    sim = MailchimpSim(KEY, LIST, **options)
    sim.load(book)
    log, faults = CallLog(), Faults()
    server = ServerThread(instrument(sim.app(), "mailchimp", log, faults, sim.rate_limited_response))
    try:
        yield Served(sim, server.url + "/3.0", log, faults)
    finally:
        server.stop()


@pytest.fixture
def mc(book) -> Iterator[Served]:
    yield from _serve(book)


def assert_problem(resp: requests.Response, status: int, title: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == status and body["title"] == title
    assert body["type"].startswith("https://mailchimp.com/developer/")
    return body


def unsubscribed_email(sim: MailchimpSim, status: str = "unsubscribed") -> str:
    return next(m.email for m in sim.state.members.values() if m.status == status)


# ---- paging and filters -----------------------------------------------------------------------
def test_sdk_paging_returns_every_member_exactly_once(mc):
    client = mc.sdk()
    seen: list[str] = []
    offset = 0
    while True:
        page = client.lists.get_list_members_info(LIST, count=70, offset=offset)
        seen += [m["id"] for m in page["members"]]
        offset += 70
        if offset >= page["total_items"]:
            break
    assert len(seen) == len(set(seen)) == len(mc.sim.state.members) > 250
    assert set(seen) == {m.id for m in mc.sim.state.members.values()}
    assert all(s == subscriber_hash(e) for s, e in
               ((m["id"], m["email_address"]) for m in client.lists.get_list_members_info(LIST, count=5)["members"]))


def test_count_is_capped_at_1000_and_paging_by_last_changed_is_stable(mc):
    members = [{"email_address": f"bulk{i}@example.org", "status": "pending"} for i in range(500)]
    for batch in range(2):
        body = {"members": [dict(m, email_address=f"b{batch}-{m['email_address']}") for m in members]}
        assert mc.call("POST", f"/lists/{LIST}", json=body).json()["total_created"] == 500
    total = len(mc.sim.state.members)
    assert total > 1000
    first = mc.call("GET", f"/lists/{LIST}/members", params={"count": 5000}).json()
    assert len(first["members"]) == 1000 and first["total_items"] == total
    ids: list[str] = []
    for offset in range(0, total, 400):
        page = mc.call("GET", f"/lists/{LIST}/members", params={"count": 400, "offset": offset,
                                                               "sort_field": "last_changed"}).json()
        ids += [m["id"] for m in page["members"]]
    assert len(ids) == len(set(ids)) == total


def test_since_last_changed_status_filter_and_fields(mc):
    client = mc.sdk()
    victim = next(m.email for m in mc.sim.state.members.values() if m.status == "subscribed")
    mc.sim.unsubscribe(victim)
    changed_at = mc.sim.member(victim)["last_changed"]
    page = client.lists.get_list_members_info(LIST, since_last_changed=changed_at, count=1000)
    assert [m["email_address"] for m in page["members"]] == [victim]
    unsubs = mc.call("GET", f"/lists/{LIST}/members", params={"status": "unsubscribed", "count": 1000}).json()
    assert victim in {m["email_address"] for m in unsubs["members"]}
    assert {m["status"] for m in unsubs["members"]} == {"unsubscribed"}
    assert unsubs["total_items"] == sum(1 for m in mc.sim.state.members.values() if m.status == "unsubscribed")
    slim = mc.call("GET", f"/lists/{LIST}/members", params={"fields": "members.email_address,total_items",
                                                            "count": 3}).json()
    assert set(slim) == {"members", "total_items"} and all(set(m) == {"email_address"} for m in slim["members"])
    cut = mc.call("GET", f"/lists/{LIST}/members", params={"exclude_fields": "members.merge_fields,_links"}).json()
    assert "merge_fields" not in cut["members"][0] and "status" in cut["members"][0]
    statuses = {m.status for m in mc.sim.state.members.values()}
    assert {"subscribed", "unsubscribed", "cleaned", "transactional"} <= statuses
    assert_problem(mc.call("GET", f"/lists/{LIST}/members", params={"since_last_changed": "yesterday"}),
                   400, "Invalid Resource")


# ---- member upsert ----------------------------------------------------------------------------
def test_member_get_put_patch_by_subscriber_hash(mc):
    client = mc.sdk()
    email = "New.Person@Example.com"
    h = subscriber_hash(email)
    assert h == subscriber_hash("new.person@example.com")
    created = client.lists.set_list_member(LIST, h, {"email_address": email, "status_if_new": "pending",
                                                     "merge_fields": {"FNAME": "New"}})
    assert created["id"] == h and created["status"] == "pending" and created["merge_fields"]["FNAME"] == "New"
    again = client.lists.set_list_member(LIST, h, {"email_address": email, "status_if_new": "pending"})
    assert again["unique_email_id"] == created["unique_email_id"]
    patched = client.lists.update_list_member(LIST, h, {"merge_fields": {"LNAME": "Person"}})
    assert patched["merge_fields"] == {"FNAME": "New", "LNAME": "Person"}
    assert client.lists.get_list_member(LIST, h)["last_changed"] >= created["last_changed"]
    assert_problem(mc.call("GET", f"/lists/{LIST}/members/{'0' * 32}"), 404, "Resource Not Found")
    assert_problem(mc.call("PUT", f"/lists/{LIST}/members/{h}", json={"email_address": "other@example.com",
                                                                       "status_if_new": "pending"}),
                   400, "Invalid Resource")
    assert_problem(mc.call("PATCH", f"/lists/{LIST}/members/{h}", data=b"{not json",
                           headers={"Content-Type": "application/json"}), 400, "JSON Parse Exception")
    assert_problem(mc.call("PUT", f"/lists/{LIST}/members/{h}", json={"email_address": email, "status": "gone"}),
                   400, "Invalid Resource")


# ---- compliance state and the subscribe audit -----------------------------------------------
def test_resubscribe_refused_in_compliance_state_everywhere(mc):
    sim = mc.sim
    unsub, cleaned = unsubscribed_email(sim), unsubscribed_email(sim, "cleaned")
    client = mc.sdk()
    for email in (unsub, cleaned):
        with pytest.raises(ApiClientError) as err:
            client.lists.set_list_member(LIST, subscriber_hash(email), {"email_address": email,
                                                                        "status": "subscribed"})
        assert err.value.status_code == 400
        assert json.loads(err.value.text)["title"] == "Member In Compliance State"
    h = subscriber_hash(unsub)
    body = assert_problem(mc.call("PATCH", f"/lists/{LIST}/members/{h}", json={"status": "subscribed"}),
                          400, "Member In Compliance State")
    assert unsub in body["detail"]
    assert_problem(mc.call("PUT", f"/lists/{LIST}/members/{h}",
                           json={"email_address": unsub, "status_if_new": "subscribed"}),
                   400, "Member In Compliance State")
    batch = mc.call("POST", f"/lists/{LIST}", json={"members": [{"email_address": unsub, "status": "subscribed"}],
                                                    "update_existing": True}).json()
    assert batch["error_count"] == 1 and batch["total_updated"] == 0
    assert sim.status(unsub) == "unsubscribed" and sim.status(cleaned) == "cleaned"
    # the sanctioned way back is a double opt-in
    assert mc.call("PATCH", f"/lists/{LIST}/members/{h}", json={"status": "pending"}).json()["status"] == "pending"
    paths = [p for _, p in sim.subscribe_attempts]
    assert [e for e, _ in sim.subscribe_attempts] == [unsub, cleaned, unsub, unsub, unsub]
    assert paths[:2] == [f"/lists/{LIST}/members/{h}", f"/lists/{LIST}/members/{subscriber_hash(cleaned)}"]
    assert paths[-1] == f"/lists/{LIST}"


def test_subscribe_attempts_record_accepted_writes_and_batch_operations(mc):
    sim = mc.sim
    assert sim.subscribe_attempts == []
    mc.call("PATCH", f"/lists/{LIST}/members/{subscriber_hash('x@example.com')}", json={"status": "pending"})
    assert sim.subscribe_attempts == []  # a 404 that did not ask for subscribed is not an attempt
    ok = mc.call("PUT", f"/lists/{LIST}/members/{subscriber_hash('fresh@example.com')}",
                 json={"email_address": "fresh@example.com", "status_if_new": "subscribed"})
    assert ok.status_code == 200 and ok.json()["status"] == "subscribed"
    ops = [{"method": "PUT", "path": f"/lists/{LIST}/members/{subscriber_hash('op@example.com')}",
            "body": json.dumps({"email_address": "op@example.com", "status_if_new": "subscribed"})}]
    job = mc.call("POST", "/batches", json={"operations": ops}).json()
    mc.call("GET", f"/batches/{job['id']}")
    assert sim.subscribe_attempts == [
        ("fresh@example.com", f"/lists/{LIST}/members/{subscriber_hash('fresh@example.com')}"),
        ("op@example.com", f"/lists/{LIST}/members/{subscriber_hash('op@example.com')}"),
    ]


def test_archive_keeps_compliance_state_and_members_resolve_by_email_or_contact_id(mc):
    unsub = unsubscribed_email(mc.sim)
    member = mc.sim.member(unsub)
    by_email = mc.call("GET", f"/lists/{LIST}/members/{unsub.upper()}").json()
    by_contact = mc.call("GET", f"/lists/{LIST}/members/{member['contact_id']}").json()
    assert by_email["id"] == by_contact["id"] == subscriber_hash(unsub)
    assert mc.call("DELETE", f"/lists/{LIST}/members/{member['id']}").status_code == 204
    assert mc.sim.status(unsub) == "archived"
    assert_problem(mc.call("PUT", f"/lists/{LIST}/members/{member['id']}",
                           json={"email_address": unsub, "status": "subscribed"}), 400, "Member In Compliance State")
    assert mc.call("PUT", f"/lists/{LIST}/members/{member['id']}",
                   json={"email_address": unsub, "status": "pending"}).json()["status"] == "pending"
    cleaned = unsubscribed_email(mc.sim, "cleaned")
    h = subscriber_hash(cleaned)
    assert mc.call("POST", f"/lists/{LIST}/members/{h}/actions/delete-permanent").status_code == 204
    assert_problem(mc.call("GET", f"/lists/{LIST}/members/{h}"), 404, "Resource Not Found")
    assert_problem(mc.call("PUT", f"/lists/{LIST}/members/{h}", json={"email_address": cleaned,
                                                                       "status_if_new": "pending"}),
                   400, "Forgotten Email Not Subscribed")


# ---- batches -----------------------------------------------------------------------------------
def test_batch_subscribe_limits_and_results(mc):
    over = {"members": [{"email_address": f"p{i}@example.net", "status": "pending"} for i in range(501)]}
    assert_problem(mc.call("POST", f"/lists/{LIST}", json=over), 400, "Invalid Resource")
    assert not mc.sim.member("p0@example.net")
    existing = next(iter(mc.sim.state.members.values())).email
    body = {"members": [{"email_address": "p1@example.net", "status": "pending", "merge_fields": {"FNAME": "P"}},
                        {"email_address": "not-an-email", "status": "pending"},
                        {"email_address": existing, "merge_fields": {"FNAME": "Renamed"}}]}
    res = mc.sdk().lists.batch_list_members(LIST, body)
    assert [m["email_address"] for m in res["new_members"]] == ["p1@example.net"]
    assert res["updated_members"] == [] and res["error_count"] == 2
    assert {e["email_address"] for e in res["errors"]} == {"not-an-email", existing}
    res = mc.sdk().lists.batch_list_members(LIST, dict(body, members=body["members"][2:], update_existing=True))
    assert res["total_updated"] == 1 and mc.sim.member(existing)["merge_fields"]["FNAME"] == "Renamed"


def test_async_batch_operations_finish_after_polling_with_readable_results(mc):
    sim = mc.sim
    unsub = unsubscribed_email(sim)
    ops = [{"method": "PUT", "path": f"/lists/{LIST}/members/{subscriber_hash(f'op{i}@example.com')}",
            "operation_id": f"op-{i}", "body": json.dumps({"email_address": f"op{i}@example.com",
                                                           "status_if_new": "pending"})} for i in range(3)]
    ops.append({"method": "PATCH", "path": f"/3.0/lists/{LIST}/members/{subscriber_hash(unsub)}",
                "operation_id": "resub", "body": json.dumps({"status": "subscribed"})})
    ops.append({"method": "POST", "path": f"/lists/{LIST}/members/{subscriber_hash('op0@example.com')}/tags",
                "operation_id": "tag", "body": json.dumps({"tags": [{"name": "vip", "status": "active"}]})})
    client = mc.sdk()
    job = client.batches.start({"operations": ops})
    assert job["status"] == "pending" and job["response_body_url"] == ""
    assert sim.member("op0@example.com") is None  # nothing runs before the first poll
    polls = [client.batches.status(job["id"]) for _ in range(2)]
    assert [p["status"] for p in polls] == ["started", "finished"]
    done = polls[-1]
    assert done["total_operations"] == done["finished_operations"] == 5 and done["errored_operations"] == 1
    calls_before = len(mc.log.calls)
    archive = requests.get(done["response_body_url"], timeout=10)  # pre-signed style: no key
    assert archive.status_code == 200
    assert len(mc.log.calls) == calls_before  # a storage download, not an API call
    results = []
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                results += json.load(tar.extractfile(member))  # type: ignore[arg-type]
    by_id = {r["operation_id"]: r for r in results}
    assert {by_id[f"op-{i}"]["status_code"] for i in range(3)} == {200}
    assert by_id["tag"]["status_code"] == 204
    assert by_id["resub"]["status_code"] == 400
    assert json.loads(by_id["resub"]["response"])["title"] == "Member In Compliance State"
    assert sim.status("op2@example.com") == "pending" and sim.tags("op0@example.com") == {"vip"}
    assert_problem(mc.call("POST", "/batches", json={"operations": [{"method": "FETCH", "path": "/x"}]}),
                   400, "Invalid Resource")
    assert_problem(mc.call("GET", "/batches/nope"), 404, "Resource Not Found")


# ---- tags, segments, engagement -------------------------------------------------------------
def test_tags_and_static_segments(mc):
    sim = mc.sim
    emails = [m.email for m in sim.state.members.values() if m.status == "subscribed"][:6]
    h = subscriber_hash(emails[0])
    client = mc.sdk()
    client.lists.update_list_member_tags(LIST, h, {"tags": [{"name": "churn_watch", "status": "active"},
                                                            {"name": "vip", "status": "active"}]})
    assert sim.tags(emails[0]) == {"churn_watch", "vip"}
    mc.call("POST", f"/lists/{LIST}/members/{h}/tags", json={"tags": [{"name": "vip", "status": "inactive"}]})
    assert sim.tags(emails[0]) == {"churn_watch"}
    assert_problem(mc.call("POST", f"/lists/{LIST}/members/{h}/tags", json={"tags": [{"name": "x", "status": "on"}]}),
                   400, "Invalid Resource")

    seg = client.lists.create_segment(LIST, {"name": "high_upgrade_intent", "static_segment": emails[:2]})
    assert seg["member_count"] == 2 and seg["type"] == "static"
    assert_problem(mc.call("POST", f"/lists/{LIST}/segments", json={"name": "high_upgrade_intent",
                                                                     "static_segment": []}), 400, "Invalid Resource")
    assert "static_segment" in assert_problem(mc.call("POST", f"/lists/{LIST}/segments", json={"name": "x"}),
                                              400, "Invalid Resource")["detail"]
    listed = client.lists.list_segments(LIST, count=1000)
    assert [s["id"] for s in listed["segments"] if s["name"] == "high_upgrade_intent"] == [seg["id"]]
    res = client.lists.batch_segment_members({"members_to_add": [*emails[2:5], "ghost@example.com"],
                                              "members_to_remove": [emails[0]]}, LIST, seg["id"])
    assert res["total_added"] == 3 and res["total_removed"] == 1 and res["error_count"] == 1
    assert sim.segment_members("high_upgrade_intent") == set(emails[1:5])
    page = client.lists.get_segment_members_list(LIST, seg["id"], count=1000)
    assert {m["email_address"] for m in page["members"]} == set(emails[1:5]) and page["total_items"] == 4
    sim.unsubscribe(emails[4])
    visible = client.lists.get_segment_members_list(LIST, seg["id"], count=1000)
    assert {m["email_address"] for m in visible["members"]} == set(emails[1:4])
    everyone = mc.call("GET", f"/lists/{LIST}/segments/{seg['id']}/members", params={"include_unsubscribed": "true"})
    assert everyone.json()["total_items"] == 4
    renamed = mc.call("PATCH", f"/lists/{LIST}/segments/{seg['id']}", json={"name": "renamed",
                                                                            "static_segment": emails[:1]}).json()
    assert renamed["name"] == "renamed" and sim.segment_members("renamed") == {emails[0]}
    too_many = {"members_to_add": [f"x{i}@example.com" for i in range(501)]}
    assert_problem(mc.call("POST", f"/lists/{LIST}/segments/{seg['id']}", json=too_many), 400, "Invalid Resource")
    assert_problem(mc.call("GET", f"/lists/{LIST}/segments/999999"), 404, "Resource Not Found")


def test_engagement_from_campaign_reports_and_member_activity(mc, book):
    client = mc.sdk()
    campaigns = client.campaigns.list(count=1000, status="sent")
    assert campaigns["total_items"] == len(book.campaigns) > 0
    assert client.campaigns.list(list_id=LIST)["total_items"] == len(book.campaigns)
    assert client.campaigns.list(list_id="another")["total_items"] == 0
    opened = {e.person_key for e in book.events if e.type == "email_open"}
    assert opened
    total_opens = 0
    for c in campaigns["campaigns"]:
        report = client.reports.get_email_activity_for_campaign(c["id"], count=1000)
        assert report["total_items"] == c["emails_sent"]
        total_opens += sum(1 for e in report["emails"] for a in e["activity"] if a["action"] == "open")
    assert total_opens == sum(1 for e in book.events if e.type == "email_open"
                              and mc.sim.state.campaigns.get(e.campaign_id or "") is not None
                              and any(p.key == e.person_key and p.in_esp and p.esp_email for p in book.people))
    member = next(m for m in mc.sim.state.members.values() if any(a["activity_type"] == "open" for a in m.activity))
    feed = mc.call("GET", f"/lists/{LIST}/members/{member.id}/activity-feed", params={"count": 1000}).json()
    assert any(a["activity_type"] == "open" for a in feed["activity"])
    legacy = mc.call("GET", f"/lists/{LIST}/members/{member.id}/activity").json()
    assert legacy["activity"] and {"action", "timestamp", "campaign_id", "title"} <= set(legacy["activity"][0])
    assert_problem(mc.call("GET", "/reports/nope/email-activity"), 404, "Resource Not Found")


# ---- auth, errors, connection limit -------------------------------------------------------------
def test_auth_and_problem_json_shapes(mc):
    body = assert_problem(mc.call("GET", f"/lists/{LIST}/members", key="wrong-us6"), 401, "API Key Invalid")
    assert "API key" in body["detail"]
    assert_problem(mc.call("GET", f"/lists/{LIST}/members", key=None), 401, "API Key Missing")
    assert requests.get(mc.url + "/ping", headers={"Authorization": f"Bearer {KEY}"}, timeout=5).status_code == 200
    body = assert_problem(mc.call("GET", "/lists/0000000000/members"), 404, "Resource Not Found")
    assert body["detail"] == "The requested resource could not be found."
    assert_problem(mc.call("GET", "/no/such/endpoint"), 404, "Resource Not Found")
    with pytest.raises(ApiClientError) as err:
        mc.sdk().lists.get_list("0000000000")
    assert err.value.status_code == 404 and json.loads(err.value.text)["title"] == "Resource Not Found"
    mc.faults.set(storm=1)
    assert_problem(mc.call("GET", f"/lists/{LIST}"), 429, "Too Many Requests")
    assert mc.call("GET", f"/lists/{LIST}").status_code == 200


def test_more_than_ten_simultaneous_connections_get_429(book):
    for served in _serve(book, delay=3.0):  # long enough that all 14 overlap even on a loaded machine
        barrier = threading.Barrier(14)
        results: list[requests.Response] = []
        lock = threading.Lock()

        # Defaults bind this iteration's objects (the threads are joined before the loop moves on).
        def hit(barrier: threading.Barrier = barrier, served: Served = served, lock: threading.Lock = lock,
                results: list[requests.Response] = results) -> None:
            barrier.wait()
            resp = served.call("GET", f"/lists/{LIST}/members", params={"count": 1})
            with lock:
                results.append(resp)

        threads = [threading.Thread(target=hit) for _ in range(14)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        codes = sorted(r.status_code for r in results)
        assert codes.count(200) == 10 and codes.count(429) == 4, codes
        limited = next(r for r in results if r.status_code == 429)
        body = assert_problem(limited, 429, "Too Many Requests")
        assert "10 simultaneous connections" in body["detail"]
        assert not any(h.lower().startswith("x-ratelimit") for h in limited.headers)
        assert served.sim.peak_in_flight == 10 and served.sim.rejected == 4
        assert served.call("GET", f"/lists/{LIST}").status_code == 200  # slots are released


def test_sandbox_contract_passes_mailchimp_options(make_sandbox):
    sb = make_sandbox(contacts=60, seed=3, mailchimp_batch_polls=1, mailchimp_strict_status_if_new=False)
    assert sb.mailchimp.batches.polls_to_finish == 1 and sb.mailchimp.state.strict_status_if_new is False
    resp = requests.get(f"{sb.mailchimp_url}/lists/{sb.mailchimp_list_id}/members", auth=("x", sb.mailchimp_key),
                        timeout=10)
    assert resp.status_code == 200 and resp.json()["total_items"] == len(sb.mailchimp.state.members)
    assert sb.calls.count(vendor="mailchimp", method="GET") == 1


@pytest.mark.parametrize(("method", "path", "body"), [
    ("PATCH", "/lists/{L}/members/{H}", {"email_address": ["x"]}),
    ("PATCH", "/lists/{L}/members/{H}", {"merge_fields": "FNAME=x"}),
    ("PUT", "/lists/{L}/members/{H}", {"email_address": "{E}", "status_if_new": "maybe"}),
    ("POST", "/lists/{L}/members/{H}/tags", {"tags": ["vip"]}),
    ("POST", "/lists/{L}/segments", {"name": 7, "static_segment": []}),
    ("POST", "/lists/{L}/segments", {"name": "s", "static_segment": [1, 2]}),
    ("POST", "/lists/{L}", {"members": [{"email_address": "n@example.com", "status": "pending", "tags": "a"}]}),
    ("POST", "/lists/{L}", {"members": "everyone"}),
    ("POST", "/batches", {"operations": [{"method": "GET", "path": "/lists", "params": "count=5"}]}),
    ("POST", "/lists/{L}/webhooks", {"url": "ftp://example.com/hook"}),
], ids=["email-list", "merge-string", "bad-status", "tag-strings", "segment-name", "segment-emails", "batch-tags",
        "members-string", "op-params", "webhook-scheme"])
def test_malformed_bodies_get_problem_json_not_500(mc, method, path, body):
    member = next(iter(mc.sim.state.members.values()))
    fill = {"{L}": LIST, "{H}": member.id, "{E}": member.email}
    for k, v in fill.items():
        path = path.replace(k, v)
    body = json.loads(json.dumps(body).replace("{E}", member.email))
    before = mc.sim.member(member.email)
    resp = mc.call(method, path, json=body)
    if resp.status_code == 200:  # batch subscribe reports per-member errors in a 200
        assert resp.json()["error_count"] >= 1 and resp.json()["total_created"] == 0
    else:
        assert_problem(resp, 400, "Invalid Resource")
    assert mc.sim.member(member.email) == before

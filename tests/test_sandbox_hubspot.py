"""The HubSpot simulator answers like HubSpot: paging, batches, 207s, search limits, 429s, 401, 409, archive."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from hubspot import HubSpot
from hubspot.crm.contacts import ApiException, BatchInputSimplePublicObjectBatchInput, PublicObjectSearchRequest

from sandbox import start_sandbox
from sandbox.book import generate_book
from sandbox.common import CallLog, Faults, ServerThread, instrument
from sandbox.hubspot import HubSpotSim

TOKEN = "pat-test-token"


@pytest.fixture(scope="module")
def book():
    return generate_book(contacts=300, seed=11)


@pytest.fixture
def hub(book) -> Iterator[tuple[HubSpotSim, str, CallLog, Faults]]:
    """A HubSpot simulator alone (no Mailchimp), generous search bucket so tests are not throttled."""
    sim = HubSpotSim(TOKEN, search_per_second=1000)
    sim.load(book)
    log, faults = CallLog(), Faults()
    server = ServerThread(instrument(sim.app(), "hubspot", log, faults, sim.rate_limited_response,
                                     sim.server_error_response))
    yield sim, server.url, log, faults
    server.stop()


def api(url: str, method: str, path: str, token: str = TOKEN, **kw) -> requests.Response:
    return requests.request(method, url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10, **kw)


def test_paging_returns_every_live_contact_once_via_sdk(hub):
    sim, url, log, _ = hub
    client = HubSpot(access_token=TOKEN, host=url)
    seen: list[str] = []
    after = None
    while True:
        page = client.crm.contacts.basic_api.get_page(limit=100, after=after, properties=["email", "aum"])
        seen += [c.id for c in page.results]
        assert all(set(c.properties) == {"email", "aum", "createdate", "lastmodifieddate", "hs_object_id"}
                   for c in page.results)
        if page.paging is None:
            break
        after = page.paging.next.after
    live = {r.id for r in sim.contacts.live()}
    assert len(seen) == len(set(seen)) == len(live)
    assert set(seen) == live
    assert log.count(vendor="hubspot", path_prefix="/crm/v3/objects/contacts") == -(-len(live) // 100)


def test_batch_limits_and_partial_failure(hub):
    sim, url, log, _ = hub
    ids = [r.id for r in sim.contacts.live()[:4]]
    too_many = {"inputs": [{"id": ids[0], "properties": {"aum": "1"}}] * 101}
    r = api(url, "POST", "/crm/v3/objects/contacts/batch/update", json=too_many)
    assert r.status_code == 400 and r.json()["category"] == "VALIDATION_ERROR"
    assert log.calls[-1].inputs == 101

    body = {"inputs": [
        {"id": ids[0], "properties": {"account_tier": "premier"}},
        {"id": ids[1], "properties": {"account_tier": "platinum"}},  # not a declared option
        {"id": ids[2], "properties": {"email": "not-an-email"}},
        {"id": "999999", "properties": {"aum": "5"}},
        {"id": ids[3], "properties": {"no_such_property": "x"}},
    ]}
    r = api(url, "POST", "/crm/v3/objects/contacts/batch/update", json=body)
    assert r.status_code == 207
    out = r.json()
    assert out["status"] == "COMPLETE" and out["numErrors"] == 4 and len(out["results"]) == 1
    assert {e["category"] for e in out["errors"]} == {"VALIDATION_ERROR", "OBJECT_NOT_FOUND"}
    assert sorted(i for e in out["errors"] for i in e["context"]["ids"]) == sorted([ids[1], ids[2], "999999", ids[3]])
    dup = api(url, "POST", "/crm/v3/objects/contacts/batch/update", json={"inputs": body["inputs"][:1] * 2})
    assert dup.status_code == 400 and "Duplicate IDs" in dup.json()["message"]
    assert sim.properties_of(ids[0])["account_tier"] == "premier"
    assert sim.properties_of(ids[1])["account_tier"] != "platinum"

    # The SDK decodes the same 207 into a BatchResponseSimplePublicObjectWithErrors.
    client = HubSpot(access_token=TOKEN, host=url)
    res = client.crm.contacts.batch_api.update(BatchInputSimplePublicObjectBatchInput(inputs=[
        {"id": ids[0], "properties": {"aum": "123"}}, {"id": "424242", "properties": {"aum": "1"}}]))
    assert res.num_errors == 1 and res.errors[0].category == "OBJECT_NOT_FOUND"


def test_batch_shares_one_timestamp_and_upsert_creates(hub):
    sim, url, _, _ = hub
    ids = [r.id for r in sim.contacts.live()[:5]]
    r = api(url, "POST", "/crm/v3/objects/contacts/batch/update",
            json={"inputs": [{"id": i, "properties": {"aum": "10"}} for i in ids]})
    assert r.status_code == 200
    assert len({sim.properties_of(i)["lastmodifieddate"] for i in ids}) == 1
    r = api(url, "POST", "/crm/v3/objects/contacts/batch/upsert", json={"inputs": [
        {"id": "New.Person@Example.com", "idProperty": "email", "properties": {"firstname": "New"}},
        {"id": sim.properties_of(ids[0])["email"].upper(), "idProperty": "email", "properties": {"aum": "11"}}]})
    assert r.status_code == 200
    assert [x["new"] for x in r.json()["results"]] == [True, False]
    assert sim.contact_by_email("new.person@example.com")["properties"]["firstname"] == "New"
    twice = api(url, "POST", "/crm/v3/objects/contacts/batch/create", json={"inputs": [
        {"properties": {"email": "twin@example.com"}}, {"properties": {"email": "Twin@Example.com"}}]})
    assert twice.status_code == 207 and twice.json()["errors"][0]["category"] == "CONFLICT"
    assert len([r for r in sim.contacts.live() if r.properties["email"].lower() == "twin@example.com"]) == 1


def test_search_refuses_the_10001st_result(book):
    sim = HubSpotSim(TOKEN, search_per_second=1000)
    sim.add_contacts([{"email": f"bulk{i}@example.com", "firstname": "Bulk"} for i in range(10_050)])
    server = ServerThread(instrument(sim.app(), "hubspot", CallLog(), Faults(), sim.rate_limited_response))
    try:
        client = HubSpot(access_token=TOKEN, host=server.url)
        page = client.crm.contacts.search_api.do_search(PublicObjectSearchRequest(
            filter_groups=[{"filters": [{"propertyName": "firstname", "operator": "EQ", "value": "Bulk"}]}],
            limit=200, after="9800"))
        assert page.total == 10_050 and len(page.results) == 200 and page.paging.next.after == "10000"
        with pytest.raises(ApiException) as err:
            client.crm.contacts.search_api.do_search(PublicObjectSearchRequest(
                filter_groups=[{"filters": [{"propertyName": "firstname", "operator": "EQ", "value": "Bulk"}]}],
                limit=200, after="10000"))
        assert err.value.status == 400 and '"category":"VALIDATION_ERROR"' in err.value.body.replace(" ", "")
        # The documented workaround (page by hs_object_id) reaches every record.
        r = api(server.url, "POST", "/crm/v3/objects/contacts/search", json={
            "filterGroups": [{"filters": [{"propertyName": "hs_object_id", "operator": "GT", "value": "10000"}]}],
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}], "limit": 200})
        assert r.json()["total"] == 10_050 - (10_000 - 101 + 1)
    finally:
        server.stop()


def test_search_filters_and_own_rate_bucket(book):
    sim = HubSpotSim(TOKEN, plan="starter", search_per_second=2)
    sim.load(book)
    server = ServerThread(instrument(sim.app(), "hubspot", CallLog(), Faults(), sim.rate_limited_response))
    try:
        query = {"filterGroups": [{"filters": [
            {"propertyName": "account_tier", "operator": "IN", "values": ["premier", "private"]},
            {"propertyName": "aum", "operator": "GTE", "value": "100000"}]}], "properties": ["aum", "account_tier"],
            "limit": 200}
        statuses = [api(server.url, "POST", "/crm/v3/objects/contacts/search", json=query) for _ in range(6)]
        assert [r.status_code for r in statuses[:2]] == [200, 200]
        limited = [r for r in statuses if r.status_code == 429]  # 2 per second: some of the next four are refused
        assert limited and limited[0].json()["policyName"] == "SECONDLY"
        assert limited[0].json()["errorType"] == "RATE_LIMIT"
        assert "X-HubSpot-RateLimit-Max" not in statuses[0].headers  # search answers carry no rate headers
        assert api(server.url, "GET", "/crm/v3/objects/contacts").headers["X-HubSpot-RateLimit-Max"] == "100"
        expected = {r.id for r in sim.contacts.live() if r.properties["account_tier"] in ("premier", "private")
                    and float(r.properties["aum"]) >= 100000}
        assert {x["id"] for x in statuses[0].json()["results"]} == expected and expected
    finally:
        server.stop()


def test_starter_plan_429_body_and_headers(book):
    with start_sandbox(book=book, seed=3, hubspot_plan="starter", window_seconds=30) as sb:
        got = [api(sb.hubspot_url, "GET", "/crm/v3/objects/contacts", token=sb.hubspot_token, params={"limit": 1})
               for _ in range(101)]
        assert [r.status_code for r in got[:100]] == [200] * 100
        assert got[0].headers["X-HubSpot-RateLimit-Max"] == "100"
        assert got[0].headers["X-HubSpot-RateLimit-Remaining"] == "99"
        assert got[0].headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "30000"
        assert got[99].headers["X-HubSpot-RateLimit-Daily"] == "250000"
        last = got[100]
        assert last.status_code == 429 and last.headers["X-HubSpot-RateLimit-Remaining"] == "0"
        body = last.json()
        assert body["message"] == "You have reached your ten_secondly_rolling limit."
        assert body["errorType"] == "RATE_LIMIT" and body["policyName"] == "TEN_SECONDLY_ROLLING"
        assert body["status"] == "error" and body["correlationId"]
        assert sb.calls.count(vendor="hubspot", status=429) == 1


def test_wrong_token_is_401_and_long_url_is_414(hub):
    _, url, _, _ = hub
    r = api(url, "GET", "/crm/v3/objects/contacts", token="wrong")
    assert r.status_code == 401 and r.json()["category"] == "INVALID_AUTHENTICATION"
    assert requests.get(url + "/crm/v3/objects/contacts", timeout=10).status_code == 401
    r = api(url, "GET", "/crm/v3/objects/contacts", params={"properties": ",".join(f"p{i:05d}" for i in range(1500))})
    assert r.status_code == 414


def test_duplicate_property_and_group_are_409_and_options_validate(hub):
    sim, url, _, _ = hub
    group = {"name": "segsync", "label": "segsync"}
    assert api(url, "POST", "/crm/v3/properties/contacts/groups", json=group).status_code == 201
    assert api(url, "POST", "/crm/v3/properties/contacts/groups", json=group).status_code == 409
    prop = {"name": "segsync_segments", "label": "Segments", "type": "enumeration", "fieldType": "checkbox",
            "groupName": "segsync", "options": [{"label": "A", "value": "a"}]}
    assert api(url, "POST", "/crm/v3/properties/contacts", json=prop).status_code == 201
    dup = api(url, "POST", "/crm/v3/properties/contacts", json=prop)
    assert dup.status_code == 409 and dup.json()["category"] == "OBJECT_ALREADY_EXISTS"
    assert api(url, "POST", "/crm/v3/properties/contacts", json={**prop, "name": "Bad Name"}).status_code == 400
    assert api(url, "PATCH", "/crm/v3/properties/contacts/segsync_segments",
               json={"options": [{"label": "no value"}]}).status_code == 400
    cid = sim.contacts.live()[0].id
    bad = api(url, "PATCH", f"/crm/v3/objects/contacts/{cid}", json={"properties": {"segsync_segments": "a;b"}})
    assert bad.status_code == 400
    patched = api(url, "PATCH", "/crm/v3/properties/contacts/segsync_segments",
                  json={"options": [{"label": "A", "value": "a"}, {"label": "B", "value": "b"}]})
    assert [o["value"] for o in patched.json()["options"]] == ["a", "b"]
    ok = api(url, "PATCH", f"/crm/v3/objects/contacts/{cid}", json={"properties": {"segsync_segments": "a;b"}})
    assert ok.status_code == 200 and sim.property_values("segsync_segments") == {cid: ["a", "b"]}


def test_archive_hides_from_search_without_bumping_lastmodifieddate(hub):
    sim, url, _, _ = hub
    rec = sim.contacts.live()[7]
    email, before = rec.properties["email"], rec.properties["lastmodifieddate"]
    query = {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": email}]}]}
    assert api(url, "POST", "/crm/v3/objects/contacts/search", json=query).json()["total"] == 1
    r = api(url, "POST", "/crm/v3/objects/contacts/batch/archive", json={"inputs": [{"id": rec.id}]})
    assert r.status_code == 204
    assert api(url, "POST", "/crm/v3/objects/contacts/search", json=query).json()["total"] == 0
    assert sim.properties_of(rec.id)["lastmodifieddate"] == before
    listed = api(url, "GET", "/crm/v3/objects/contacts", params={"archived": "true", "limit": 100}).json()
    assert rec.id in {x["id"] for x in listed["results"]}
    assert api(url, "GET", f"/crm/v3/objects/contacts/{rec.id}").status_code == 404


def test_book_merge_is_preapplied_and_merged_id_resolves(hub, book):
    sim, url, _, _ = hub
    loser = next(p for p in book.people if p.merged_into)
    loser_id, survivor_id = sim.contact_id_for(loser.key), sim.contact_id_for(loser.merged_into)
    assert loser_id in sim.properties_of(survivor_id)["hs_merged_object_ids"].split(";")
    got = api(url, "GET", f"/crm/v3/objects/contacts/{loser_id}").json()
    assert got["id"] == survivor_id
    assert loser_id not in {r.id for r in sim.contacts.live()}


def test_unsubscribe_sets_optout_and_second_call_is_refused(hub):
    sim, url, _, _ = hub
    rec = next(r for r in sim.contacts.live() if r.properties.get("hs_email_optout") == "false")
    email, before = rec.properties["email"], rec.properties["lastmodifieddate"]
    body = {"emailAddress": email, "subscriptionId": "7001", "legalBasis": "CONSENT_WITH_NOTICE",
            "legalBasisExplanation": "preference center"}
    r = api(url, "POST", "/communication-preferences/v3/unsubscribe", json=body)
    assert r.status_code == 200 and r.json()["status"] == "NOT_SUBSCRIBED"
    assert email.lower() in sim.optouts and sim.properties_of(rec.id)["lastmodifieddate"] > before
    assert api(url, "POST", "/communication-preferences/v3/unsubscribe", json=body).status_code == 400
    st = api(url, "GET", f"/communication-preferences/v3/status/email/{email}").json()
    assert {s["id"]: s["status"] for s in st["subscriptionStatuses"]}["7001"] == "NOT_SUBSCRIBED"


def test_lists_deals_and_web_events(hub):
    sim, url, log, _ = hub
    made = api(url, "POST", "/crm/v3/lists", json={"name": "segsync: high intent", "objectTypeId": "0-1",
                                                    "processingType": "MANUAL"}).json()["list"]
    ids = [r.id for r in sim.contacts.live()[:3]]
    added = api(url, "PUT", f"/crm/v3/lists/{made['listId']}/memberships/add", json=[*ids, "999999"]).json()
    assert added["recordIdsAdded"] == ids and added["recordIdsMissing"] == ["999999"]
    assert log.calls[-1].inputs == 4
    found = api(url, "GET", "/crm/v3/lists/object-type-id/0-1/name/segsync: high intent").json()["list"]
    assert found["listId"] == made["listId"] and found["size"] == 3
    assert sim.list_members("segsync: high intent") == set(ids)
    deals = api(url, "GET", "/crm/v3/objects/deals",
                params={"properties": "amount,dealtype", "associations": "contacts", "limit": 100}).json()
    assert deals["results"] and {d["properties"]["dealtype"] for d in deals["results"]} <= {"deposit", "upgrade"}
    assert all(d["associations"]["contacts"]["results"][0]["id"] in sim.contacts.records for d in deals["results"])
    ev = api(url, "GET", "/events/v3/events", params={"objectType": "contact", "eventType": "e_visited_page",
                                                      "limit": 50}).json()
    assert len(ev["results"]) == 50 and ev["paging"]["next"]["after"] == "50"
    assert ev["results"][0]["properties"]["hs_url"].startswith("https://")


def test_faults_storm_errors_and_reset(hub):
    _sim, url, log, faults = hub
    faults.set(storm=2)
    codes = [api(url, "GET", "/crm/v3/objects/contacts").status_code for _ in range(3)]
    assert codes == [429, 429, 200]
    faults.set(error_rate=1.0, only_paths=("/crm/v3/objects/deals",))
    assert api(url, "GET", "/crm/v3/objects/contacts").status_code == 200
    failed = api(url, "GET", "/crm/v3/objects/deals")
    assert failed.status_code == 503 and failed.json()["status"] == "error" and failed.json()["correlationId"]
    faults.reset()
    faults.set(reset_next=1)
    with pytest.raises(requests.exceptions.RequestException):
        api(url, "GET", "/crm/v3/objects/contacts", params={"limit": 100})
    assert api(url, "GET", "/crm/v3/objects/contacts").status_code == 200
    assert requests.get(url + "/_sandbox/health", timeout=5).json()["ok"] is True
    assert log.count(path_prefix="/_sandbox") == 0


def test_injected_batch_failures_are_seeded_and_deterministic(hub):
    sim, url, log, _ = hub
    ids = [r.id for r in sim.contacts.live()[:100]]
    body = {"inputs": [{"id": i, "properties": {"aum": "42"}} for i in ids]}
    sim.fail_batch_inputs(rate=0.2, seed=5)
    first = api(url, "POST", "/crm/v3/objects/contacts/batch/update", json=body).json()
    again = api(url, "POST", "/crm/v3/objects/contacts/batch/update", json=body).json()
    failed = sorted(i for e in first["errors"] for i in e["context"]["ids"])
    assert 5 < len(failed) < 40 and failed == sorted(i for e in again["errors"] for i in e["context"]["ids"])
    assert first["numErrors"] == len(failed) and len(first["results"]) == 100 - len(failed)
    assert log.calls[-1].status == 207 and log.calls[-1].inputs == 100
    sim.fail_batch_inputs(ids=[ids[0]], count=1, message="boom")
    one = api(url, "POST", "/crm/v3/objects/contacts/batch/update", json=body).json()
    assert one["errors"][0]["message"] == "boom" and one["errors"][0]["context"]["ids"] == [ids[0]]
    assert api(url, "POST", "/crm/v3/objects/contacts/batch/update", json=body).status_code == 200  # count used up
    sim.fail_batch_inputs()
    assert api(url, "POST", "/crm/v3/objects/contacts/batch/update", json=body).status_code == 200


def test_merge_helper_hides_the_loser_everywhere(hub):
    sim, url, _, _ = hub
    winner, loser = sim.contacts.live()[10], sim.contacts.live()[11]
    loser_email = loser.properties["email"]
    merged = sim.merge_contacts(winner.id, loser.id)  # HubSpot now merges both into a new record
    assert merged.id not in (winner.id, loser.id)
    client = HubSpot(access_token=TOKEN, host=url)
    assert client.crm.contacts.basic_api.get_by_id(loser.id).id == merged.id
    read = api(url, "POST", "/crm/v3/objects/contacts/batch/read", json={"inputs": [{"id": loser.id}]}).json()
    assert [x["id"] for x in read["results"]] == [merged.id]
    found = api(url, "POST", "/crm/v3/objects/contacts/search", json={"filterGroups": [{"filters": [
        {"propertyName": "email", "operator": "EQ", "value": loser_email}]}]}).json()
    assert found["total"] == 0
    listed = [x["id"] for x in api(url, "GET", "/crm/v3/objects/contacts", params={"limit": 100}).json()["results"]]
    archived = api(url, "GET", "/crm/v3/objects/contacts", params={"limit": 100, "archived": "true"}).json()
    assert loser.id not in listed and loser.id not in {x["id"] for x in archived["results"]}
    props = sim.properties_of(merged.id)
    assert loser.id in props["hs_merged_object_ids"].split(";")
    assert loser_email in props["hs_additional_emails"].split(";")
    by_old_email = api(url, "GET", f"/crm/v3/objects/contacts/{loser_email}", params={"idProperty": "email"})
    assert by_old_email.json()["id"] == merged.id
    sim.archive_contacts([merged.id])
    assert api(url, "GET", f"/crm/v3/objects/contacts/{loser.id}").status_code == 404
    again = api(url, "POST", "/crm/v3/objects/contacts", json={"properties": {"email": loser_email}})
    assert again.status_code == 201  # archived records free their addresses


def test_bulk_edit_shares_lastmodifieddate_and_search_windows_find_it(hub):
    sim, url, _, _ = hub
    ids = [r.id for r in sim.contacts.live()[20:70]]
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    sim.touch_contacts(ids, at)
    millis = int(at.timestamp() * 1000)
    client = HubSpot(access_token=TOKEN, host=url)
    seen, after = [], None
    while True:
        page = client.crm.contacts.search_api.do_search(PublicObjectSearchRequest(
            filter_groups=[{"filters": [
                {"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(millis)},
                {"propertyName": "lastmodifieddate", "operator": "LTE", "value": str(millis)}]}],
            sorts=[{"propertyName": "hs_object_id", "direction": "ASCENDING"}], limit=20, after=after))
        seen += [c.id for c in page.results]
        if page.paging is None:
            break
        after = page.paging.next.after
    assert seen == ids
    later = api(url, "POST", "/crm/v3/objects/contacts/search", json={"filterGroups": [{"filters": [
        {"propertyName": "lastmodifieddate", "operator": "GT", "value": "2026-01-02T03:04:05.000Z"}]}]}).json()
    assert not set(ids) & {x["id"] for x in later["results"]}
    before = api(url, "POST", "/crm/v3/objects/contacts/search", json={"filterGroups": [{"filters": [
        {"propertyName": "lastmodifieddate", "operator": "LT", "value": str(millis)},
        {"propertyName": "hs_object_id", "operator": "GT", "value": ids[-1]}]}], "limit": 200}).json()
    assert before["total"] > 0 and all(int(x["id"]) > int(ids[-1]) for x in before["results"])
    # A write bumps lastmodifieddate past the bulk edit; entering a lifecycle stage stamps its date.
    props = sim.properties_of(ids[0])
    assert props["hs_lifecyclestage_lead_date"] <= props["lastmodifieddate"]
    api(url, "PATCH", f"/crm/v3/objects/contacts/{ids[0]}", json={"properties": {"lifecyclestage": "evangelist"}})
    props = sim.properties_of(ids[0])
    assert props["lastmodifieddate"] > "2026-01-02T03:04:05.000Z"
    assert props["hs_lifecyclestage_evangelist_date"] == props["lastmodifieddate"]
    refused = api(url, "PATCH", f"/crm/v3/objects/contacts/{ids[0]}",
                  json={"properties": {"hs_lifecyclestage_customer_date": "2020-01-01T00:00:00Z"}})
    assert refused.status_code == 400 and "read only" in refused.json()["message"]


def test_archived_listing_pages_every_archived_contact_once(hub):
    sim, url, _, _ = hub
    gone = [r.id for r in sim.contacts.live()[100:130]]
    sim.archive_contacts(gone)
    seen, after = [], None
    while True:
        params = {"limit": 7, "archived": "true", **({"after": after} if after else {})}
        page = api(url, "GET", "/crm/v3/objects/contacts", params=params).json()
        seen += [x["id"] for x in page["results"]]
        assert all(x["archived"] and x["archivedAt"] for x in page["results"])
        if "paging" not in page:
            break
        after = page["paging"]["next"]["after"]
    assert sorted(seen, key=int) == seen and set(gone) <= set(seen) and len(seen) == len(set(seen))


def test_read_only_properties_and_portal_wide_optout(hub):
    sim, url, _, _ = hub
    rec = next(r for r in sim.contacts.live() if r.properties.get("hs_email_optout") == "false")
    email = rec.properties["email"]
    r = api(url, "POST", "/crm/v3/objects/contacts/batch/update",
            json={"inputs": [{"id": rec.id, "properties": {"hs_email_optout": "true"}}]})
    assert r.status_code == 207 and r.json()["errors"][0]["subCategory"] == "READ_ONLY_VALUE"
    assert "read only property" in r.json()["errors"][0]["message"]
    # v3 unsubscribes from one type only.
    body = {"emailAddress": email, "subscriptionId": "7002", "legalBasis": "LEGITIMATE_INTEREST_OTHER",
            "legalBasisExplanation": "test"}
    assert api(url, "POST", "/communication-preferences/v3/unsubscribe", json=body).status_code == 200
    props = sim.properties_of(rec.id)
    assert props["hs_email_optout_7002"] == "true" and props["hs_email_optout"] == "false"
    assert email.lower() not in sim.optouts
    bad = api(url, "POST", "/communication-preferences/v3/unsubscribe", json={**body, "legalBasis": "BECAUSE"})
    assert bad.status_code == 400
    # v4 unsubscribe-all opts out portal-wide; resubscribing through the API is refused.
    r = api(url, "POST", f"/communication-preferences/v4/statuses/{email}/unsubscribe-all", params={"channel": "EMAIL"})
    assert r.status_code == 200 and {x["status"] for x in r.json()["results"]} == {"NOT_SUBSCRIBED"}
    assert sim.properties_of(rec.id)["hs_email_optout"] == "true" and email.lower() in sim.optouts
    st = api(url, "GET", f"/communication-preferences/v3/status/email/{email}").json()["subscriptionStatuses"]
    assert {s["sourceOfStatus"] for s in st} == {"PORTAL_WIDE_STATUS"}
    again = api(url, "POST", "/communication-preferences/v3/subscribe", json={**body, "subscriptionId": "7001"})
    assert again.status_code == 400 and again.json()["subCategory"] == "OPTED_OUT_OF_ALL"
    v4 = api(url, "GET", f"/communication-preferences/v4/statuses/{email}", params={"channel": "EMAIL"}).json()
    assert {x["subscriptionId"] for x in v4["results"]} == {7001, 7002, 7003} and v4["status"] == "COMPLETE"
    other = next(r for r in sim.contacts.live() if r.properties.get("hs_email_optout") == "false")
    many = api(url, "POST", "/communication-preferences/v4/statuses/batch/read", params={"channel": "EMAIL"},
               json={"inputs": [email, other.properties["email"]]}).json()["results"]
    assert [{s["status"] for s in x["statuses"]} for x in many] == [{"NOT_SUBSCRIBED"}, {"SUBSCRIBED"}]


def test_oauth_refresh_expiry_and_missing_scopes(book):
    sim = HubSpotSim(TOKEN, scopes={"crm.objects.contacts.read"})
    sim.load(book)
    server = ServerThread(instrument(sim.app(), "hubspot", CallLog(), Faults(), sim.rate_limited_response))
    try:
        url = server.url
        assert api(url, "GET", "/crm/v3/objects/contacts").status_code == 200
        denied = api(url, "POST", "/crm/v3/properties/contacts/groups", json={"name": "g", "label": "g"})
        assert denied.status_code == 403 and denied.json()["category"] == "MISSING_SCOPES"
        assert denied.json()["errors"][0]["context"]["requiredGranularScopes"] == ["crm.schemas.contacts.write"]
        form = {"grant_type": "refresh_token", "client_id": sim.oauth_client_id,
                "client_secret": sim.oauth_client_secret, "refresh_token": sim.oauth_refresh_token}
        bad = requests.post(url + "/oauth/v1/token", data={**form, "refresh_token": "nope"}, timeout=10)
        assert bad.status_code == 400 and bad.json()["status"] == "BAD_REFRESH_TOKEN"
        issued = requests.post(url + "/oauth/v1/token", data=form, timeout=10).json()
        assert issued["expires_in"] == 1800 and issued["refresh_token"] == sim.oauth_refresh_token
        assert api(url, "GET", "/crm/v3/objects/contacts", token=issued["access_token"]).status_code == 200
        sim.expire_tokens()
        expired = api(url, "GET", "/crm/v3/objects/contacts", token=issued["access_token"])
        assert expired.status_code == 401 and expired.json()["category"] == "EXPIRED_AUTHENTICATION"
        fresh = requests.post(url + "/oauth/v1/token", data=form, timeout=10).json()["access_token"]
        assert api(url, "GET", "/crm/v3/objects/contacts", token=fresh).status_code == 200
    finally:
        server.stop()


def test_daily_limit_and_bad_parameters(book):
    with start_sandbox(book=book, seed=3, hubspot_plan="professional", daily_limit=3) as sb:
        codes = [api(sb.hubspot_url, "GET", "/crm/v3/objects/contacts", token=sb.hubspot_token).status_code
                 for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        last = sb.calls.calls[-1]
        assert last.status == 429
        r = api(sb.hubspot_url, "GET", "/crm/v3/objects/contacts", token=sb.hubspot_token)
        assert r.json()["policyName"] == "DAILY" and r.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"
        assert r.headers["X-HubSpot-RateLimit-Max"] == "190"
    sim = HubSpotSim(TOKEN)
    server = ServerThread(instrument(sim.app(), "hubspot", CallLog(), Faults(), sim.rate_limited_response))
    try:
        for method, path, kw in [("GET", "/crm/v3/objects/contacts", {"params": {"limit": "ten"}}),
                                 ("GET", "/crm/v3/objects/contacts", {"params": {"limit": 101}}),
                                 ("POST", "/crm/v3/objects/contacts/search", {"json": {"limit": 201}}),
                                 ("POST", "/crm/v3/objects/contacts/search", {"json": ["not", "an", "object"]}),
                                 ("POST", "/crm/v3/objects/contacts/batch/create", {"json": {"inputs": ["x"]}}),
                                 ("POST", "/crm/v3/objects/contacts/batch/create", {"data": "{not json"})]:
            r = api(server.url, method, path, **kw)
            assert r.status_code == 400, (path, kw, r.text)
            assert r.json()["category"] == "VALIDATION_ERROR" and r.json()["message"]
    finally:
        server.stop()


def test_config_validates_and_run_forever_serves_until_stopped(tmp_path):
    from sandbox import run_sandbox_forever
    from sync.config import load_config_text

    out, ready, stop = io.StringIO(), [], threading.Event()
    worker = threading.Thread(target=run_sandbox_forever, kwargs=dict(
        contacts=120, seed=4, hubspot_plan="starter", out=out, stop=stop, on_ready=ready.append))
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while not ready and time.monotonic() < deadline:
            time.sleep(0.05)
        sb = ready[0]
        text = sb.config_yaml(store=f"sqlite:///{tmp_path / 'x.db'}")
        config = load_config_text(text)
        tenant = config.tenants[0]
        assert tenant.crm.base_url == sb.hubspot_url and tenant.crm.plan == "starter"
        assert tenant.esp is not None and tenant.esp.base_url == sb.mailchimp_url
        path = tmp_path / "segsync.yaml"
        path.write_text(text)
        done = subprocess.run([str(Path(sys.executable).parent / "segsync"), "validate", str(path)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert sb.hubspot_url in out.getvalue() and sb.mailchimp_url in out.getvalue()
        assert requests.get(sb.hubspot_url + "/_sandbox/health", timeout=5).json()["ok"] is True
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not worker.is_alive()


def test_sdk_decodes_the_simulators_errors_and_upserts(hub):
    from hubspot.crm.contacts import BatchInputSimplePublicObjectBatchInputUpsert, BatchReadInputSimplePublicObjectId
    from hubspot.crm.properties import PropertyCreate, PropertyGroupCreate
    from hubspot.crm.properties.exceptions import ApiException as PropertiesApiException

    sim, url, log, faults = hub
    client = HubSpot(access_token=TOKEN, host=url)
    ids = [r.id for r in sim.contacts.live()[:101]]
    with pytest.raises(ApiException) as too_many:
        client.crm.contacts.batch_api.read(BatchReadInputSimplePublicObjectId(
            inputs=[{"id": i} for i in ids], properties=["email"], properties_with_history=[]))
    assert too_many.value.status == 400 and "100" in too_many.value.body
    got = client.crm.contacts.batch_api.read(BatchReadInputSimplePublicObjectId(
        inputs=[{"id": i} for i in ids[:100]], properties=["email", "age_band"], properties_with_history=[]))
    assert sorted(r.id for r in got.results) == sorted(ids[:100])
    assert all(r.properties["age_band"] for r in got.results)

    client.crm.properties.groups_api.create("contacts", PropertyGroupCreate(name="segsync", label="segsync"))
    made = client.crm.properties.core_api.create("contacts", PropertyCreate(
        name="segsync_score_churn", label="Churn", type="number", field_type="number", group_name="segsync"))
    assert made.name == "segsync_score_churn" and made.type == "number"
    with pytest.raises(PropertiesApiException) as dup:
        client.crm.properties.core_api.create("contacts", PropertyCreate(
            name="segsync_score_churn", label="Churn", type="number", field_type="number", group_name="segsync"))
    assert dup.value.status == 409

    up = client.crm.contacts.batch_api.upsert(BatchInputSimplePublicObjectBatchInputUpsert(inputs=[
        {"id": "sdk.person@example.com", "id_property": "email", "properties": {"segsync_score_churn": "0.25"}}]))
    assert up.results[0].new is True and up.results[0].properties["segsync_score_churn"] == "0.25"

    with pytest.raises(ApiException) as unauthorised:
        HubSpot(access_token="wrong", host=url).crm.contacts.basic_api.get_page(limit=1)
    assert unauthorised.value.status == 401 and "INVALID_AUTHENTICATION" in unauthorised.value.body

    faults.set(storm=1)
    with pytest.raises(ApiException) as limited:
        client.crm.contacts.basic_api.get_page(limit=1)
    assert limited.value.status == 429 and '"RATE_LIMIT"' in limited.value.body
    assert log.by_endpoint("hubspot")["POST /crm/v3/objects/contacts/batch/read"] == 2
    assert [c.inputs for c in log.writes("hubspot") if c.path.endswith("/batch/upsert")] == [1]
    assert not [c for c in log.writes("hubspot") if c.path.endswith(("/batch/read", "/search"))]
    assert {c.path for c in log.writes("hubspot")} == {"/crm/v3/properties/contacts/groups",
                                                      "/crm/v3/properties/contacts",
                                                      "/crm/v3/objects/contacts/batch/upsert"}


def test_search_lags_writes_when_asked(book):
    sim = HubSpotSim(TOKEN, search_per_second=None, search_lag_seconds=30)
    sim.load(book)
    server = ServerThread(instrument(sim.app(), "hubspot", CallLog(), Faults(), sim.rate_limited_response))
    try:
        rec = sim.contacts.live()[3]
        query = {"filterGroups": [{"filters": [{"propertyName": "hs_object_id", "operator": "EQ", "value": rec.id}]}]}
        assert api(server.url, "POST", "/crm/v3/objects/contacts/search", json=query).json()["total"] == 1
        sim.touch_contacts([rec.id])
        assert api(server.url, "POST", "/crm/v3/objects/contacts/search", json=query).json()["total"] == 0
        assert api(server.url, "GET", f"/crm/v3/objects/contacts/{rec.id}").status_code == 200  # reads are current
    finally:
        server.stop()


def test_python_m_sandbox_rejects_bad_usage(capsys):
    from sandbox.__main__ import main

    assert main(["many"]) == 2
    assert "usage: python -m sandbox" in capsys.readouterr().err
    assert main(["10", "1", "platinum"]) == 2
    assert "unknown HubSpot plan 'platinum'" in capsys.readouterr().err


def test_call_counting_and_seeded_error_faults_are_deterministic():
    from sandbox.common import count_inputs

    assert count_inputs("POST", {"inputs": [1, 2, 3]}) == 3
    assert count_inputs("PUT", ["101", "102"]) == 2
    assert count_inputs("POST", {"members_to_add": ["a"], "members_to_remove": ["b", "c"]}) == 3
    assert count_inputs("POST", {"members_to_add": True}) == 0  # malformed bodies never break logging
    assert count_inputs("GET", None) == 0 and count_inputs("PATCH", {"properties": {}}) == 1

    def hits(seed: int) -> list[int]:
        faults = Faults(seed=seed, error_rate=0.3)
        return [faults.decide("/crm/v3/objects/contacts")["error"] for _ in range(200)]

    first = hits(9)
    assert first == hits(9) and first != hits(10)
    assert 30 < sum(1 for x in first if x == 503) < 90


def test_gdpr_delete_removes_the_contact_for_good(hub):
    sim, url, _, _ = hub
    rec = sim.contacts.live()[40]
    email = rec.properties["email"]
    api(
        url, "POST", "/communication-preferences/v3/unsubscribe", json={"emailAddress": email, "subscriptionId": "7001"}
    )
    r = api(url, "POST", "/crm/v3/objects/contacts/gdpr-delete", json={"objectId": email, "idProperty": "email"})
    assert r.status_code == 204
    assert api(url, "GET", f"/crm/v3/objects/contacts/{rec.id}").status_code == 404
    archived = api(url, "GET", "/crm/v3/objects/contacts", params={"archived": "true", "limit": 100}).json()
    assert rec.id not in {x["id"] for x in archived["results"]}
    assert rec.id not in sim.contacts.records and email.lower() not in sim.optouts
    again = api(url, "POST", "/crm/v3/objects/contacts/gdpr-delete", json={"objectId": rec.id})
    assert again.status_code == 404 and again.json()["category"] == "OBJECT_NOT_FOUND"
    pages = api(url, "GET", "/crm/v3/objects/contacts", params={"limit": 100, "after": int(rec.id) - 1}).json()
    assert pages["results"] and pages["results"][0]["id"] != rec.id


def _runtime_imports(path: Path, package_root: Path) -> set[str]:
    """Modules of ``sandbox`` a module imports at run time: at load or inside functions, not under TYPE_CHECKING."""
    import ast

    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node):  # function-level imports too: deferring an import does not break a circle
            if isinstance(sub, ast.ImportFrom) and sub.module and sub.module.startswith("sandbox"):
                for alias in sub.names:  # ``from pkg import submodule`` imports the submodule
                    target = f"{sub.module}.{alias.name}"
                    is_module = (package_root.parent / (target.replace(".", "/") + ".py")).exists()
                    found.add(target if is_module else sub.module)
            elif isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names if a.name.startswith("sandbox")}
    return found


def test_the_sandbox_has_no_runtime_import_circle():
    root = Path(__file__).resolve().parents[1] / "sandbox"
    modules = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in root.rglob("*.py")}
    graph = {name: {m for m in _runtime_imports(path, root) if m in modules and m != name}
             for name, path in modules.items()}
    # A package's __init__ importing its own submodules is how packages work, not a circle.
    graph = {name: {m for m in deps if not name.startswith(m + ".")} for name, deps in graph.items()}
    circles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == []
    assert "sandbox.hubspot.http" in modules and not graph["sandbox.hubspot.http"] - {
        "sandbox.hubspot.errors", "sandbox.hubspot.ratelimit"}, "http.py is a leaf helper"

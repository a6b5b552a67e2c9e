"""The HubSpot simulator answers like HubSpot: paging, batches, 207s, search limits, 429s, 401, 409, archive."""

from __future__ import annotations

from collections.abc import Iterator

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
    server = ServerThread(instrument(sim.app(), "hubspot", log, faults, sim.rate_limited_response))
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
    ids = [r.id for r in sim.contacts.live()[:3]]
    too_many = {"inputs": [{"id": ids[0], "properties": {"aum": "1"}}] * 101}
    r = api(url, "POST", "/crm/v3/objects/contacts/batch/update", json=too_many)
    assert r.status_code == 400 and r.json()["category"] == "VALIDATION_ERROR"
    assert log.calls[-1].inputs == 101

    body = {"inputs": [
        {"id": ids[0], "properties": {"account_tier": "premier"}},
        {"id": ids[1], "properties": {"account_tier": "platinum"}},  # not a declared option
        {"id": ids[2], "properties": {"email": "not-an-email"}},
        {"id": "999999", "properties": {"aum": "5"}},
        {"id": ids[2], "properties": {"no_such_property": "x"}},
    ]}
    r = api(url, "POST", "/crm/v3/objects/contacts/batch/update", json=body)
    assert r.status_code == 207
    out = r.json()
    assert out["status"] == "COMPLETE" and out["numErrors"] == 4 and len(out["results"]) == 1
    assert {e["category"] for e in out["errors"]} == {"VALIDATION_ERROR", "OBJECT_NOT_FOUND"}
    assert sorted(i for e in out["errors"] for i in e["context"]["ids"]) == sorted([ids[1], ids[2], "999999", ids[2]])
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
    sim = HubSpotSim(TOKEN, search_per_second=2)
    sim.load(book)
    server = ServerThread(instrument(sim.app(), "hubspot", CallLog(), Faults(), sim.rate_limited_response))
    try:
        query = {"filterGroups": [{"filters": [
            {"propertyName": "account_tier", "operator": "IN", "values": ["premier", "private"]},
            {"propertyName": "aum", "operator": "GTE", "value": "100000"}]}], "properties": ["aum", "account_tier"],
            "limit": 200}
        statuses = [api(server.url, "POST", "/crm/v3/objects/contacts/search", json=query) for _ in range(3)]
        assert [r.status_code for r in statuses[:2]] == [200, 200]
        assert statuses[2].status_code == 429
        assert statuses[2].json()["policyName"] == "SECONDLY" and statuses[2].json()["errorType"] == "RATE_LIMIT"
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
    added = api(url, "PUT", f"/crm/v3/lists/{made['listId']}/memberships/add", json=ids + ["999999"]).json()
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
    sim, url, log, faults = hub
    faults.set(storm=2)
    codes = [api(url, "GET", "/crm/v3/objects/contacts").status_code for _ in range(3)]
    assert codes == [429, 429, 200]
    faults.set(error_rate=1.0, only_paths=("/crm/v3/objects/deals",))
    assert api(url, "GET", "/crm/v3/objects/contacts").status_code == 200
    assert api(url, "GET", "/crm/v3/objects/deals").status_code == 503
    faults.reset()
    faults.set(reset_next=1)
    with pytest.raises(requests.exceptions.RequestException):
        api(url, "GET", "/crm/v3/objects/contacts", params={"limit": 100})
    assert api(url, "GET", "/crm/v3/objects/contacts").status_code == 200
    assert requests.get(url + "/_sandbox/health", timeout=5).json()["ok"] is True
    assert log.count(path_prefix="/_sandbox") == 0

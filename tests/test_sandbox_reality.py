"""The sandbox behaves like HubSpot and Mailchimp where segsync's connectors once assumed otherwise (issue 14).

Each test drives the simulators over HTTP (or as the vendor's user would act) and checks the vendor's
documented behaviour; the module docstrings in ``sandbox/hubspot/`` and ``sandbox/mailchimp/`` say where
each fact comes from.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import requests

from sandbox import start_sandbox
from sandbox.book import generate_book
from sandbox.hubspot.deals import CUSTOM_PIPELINE, won_stages
from sandbox.webhooks import HUBSPOT_CONTACT_TYPES


@pytest.fixture(scope="module")
def book():
    return generate_book(contacts=150, seed=21)


@pytest.fixture
def sb(book, request):
    options = getattr(request, "param", {})
    box = start_sandbox(book=book, seed=21, **options)
    yield box
    box.stop()


def hs(box, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, box.hubspot_url + path, headers={"Authorization": f"Bearer {box.hubspot_token}"},
                            timeout=10, **kw)


@pytest.mark.parametrize("sb", [{"hubspot_deal_noise": True}], indirect=True)
def test_deal_pipelines_have_stage_metadata_and_only_won_deals_are_the_truth(sb, book):
    pipelines = hs(sb, "GET", "/crm/v3/pipelines/deals").json()["results"]
    assert [p["id"] for p in pipelines] == ["default", CUSTOM_PIPELINE]
    stages = {s["id"]: s["metadata"] for p in pipelines for s in p["stages"]}
    won = {sid for sid, m in stages.items() if m["isClosed"] == "true" and float(m["probability"]) == 1.0}
    lost = {sid for sid, m in stages.items() if m["isClosed"] == "true" and float(m["probability"]) == 0.0}
    assert won == won_stages() == {"closedwon", "81234570"} and lost == {"closedlost", "81234571"}
    assert hs(sb, "GET", f"/crm/v3/pipelines/deals/{CUSTOM_PIPELINE}/stages").json()["results"][0]["id"] == "81234568"
    assert hs(sb, "GET", "/crm/v3/pipelines/deals/nope").status_code == 404

    deals = list(sb.hubspot.deals.records.values())
    kinds = Counter(("won" if d.properties["dealstage"] in won else "lost" if d.properties["dealstage"] in lost
                     else "open", d.properties["pipeline"]) for d in deals)
    assert all(kinds[(k, p)] > 0 for k in ("won", "lost", "open") for p in ("default", CUSTOM_PIPELINE)), kinds
    now = datetime.now(UTC)
    overdue = [d for d in deals if d.properties["dealstage"] not in won | lost
               and datetime.fromisoformat(d.properties["closedate"].replace("Z", "+00:00")) < now]
    assert overdue, "open deals whose expected close date has passed"
    # The hidden truth: exactly the won deals are the book's deposits and upgrades.
    money = sorted((e.occurred_at, e.type) for e in book.events if e.type in ("deposit", "upgrade")
                   and e.person_key in sb.hubspot.person_ids)
    won_deals = sorted(
        (datetime.fromisoformat(d.properties["closedate"].replace("Z", "+00:00")), d.properties["dealtype"])
        for d in deals
        if d.properties["dealstage"] in won
    )
    assert won_deals == money


@pytest.mark.parametrize("sb", [{"hubspot_deal_noise": False}], indirect=True)
def test_without_deal_noise_every_deal_is_won(sb):
    assert {d.properties["dealstage"] for d in sb.hubspot.deals.records.values()} <= won_stages()


def test_deals_are_searchable_by_last_modified_date(sb):
    rec = next(iter(sb.hubspot.deals.records.values()))
    sb.hubspot.deals.touch(rec, datetime.now(UTC))
    since = int((datetime.now(UTC) - timedelta(minutes=5)).timestamp() * 1000)
    body = {"filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": since}]}],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}], "limit": 100}
    found = hs(sb, "POST", "/crm/v3/objects/deals/search", json=body).json()
    assert [r["id"] for r in found["results"]] == [rec.id]


def test_contacts_carry_email_counts_and_web_analytics(sb):
    props = "hs_email_open,hs_email_click,hs_email_delivered,hs_analytics_num_page_views,hs_analytics_num_visits," \
            "hs_analytics_last_visit_timestamp,hs_email_last_open_date"
    rows = hs(sb, "GET", "/crm/v3/objects/contacts", params={"limit": 100, "properties": props}).json()["results"]
    opened = [r["properties"] for r in rows if r["properties"].get("hs_email_open")]
    assert any(int(p["hs_email_open"]) > 1 for p in opened), "several opens per contact, not just the last date"
    assert all(p["hs_email_last_open_date"] for p in opened)
    visits = [p for p in (r["properties"] for r in rows) if p.get("hs_analytics_num_page_views")]
    assert visits and all(int(p["hs_analytics_num_visits"]) <= int(p["hs_analytics_num_page_views"]) for p in visits)


@pytest.mark.parametrize("sb", [{"hubspot_tier": "professional", "hubspot_plan": "professional"}], indirect=True)
def test_events_api_is_refused_below_enterprise_with_hubspots_403(sb):
    got = hs(sb, "GET", "/events/v3/events", params={"objectType": "contact", "eventType": "e_visited_page"})
    body = got.json()
    assert got.status_code == 403 and body["category"] == "MISSING_SCOPES" and body["status"] == "error"
    assert "web-analytics-api-access" in body["message"] and body["correlationId"]
    # Refusals still carry the rate-limit headers, like every other answer of a limited portal.
    assert got.headers["X-HubSpot-RateLimit-Max"] == "190"


def test_events_api_answers_on_enterprise(sb):
    got = hs(sb, "GET", "/events/v3/events", params={"objectType": "contact", "limit": 5})
    assert got.status_code == 200 and len(got.json()["results"]) == 5


@pytest.mark.parametrize("sb", [{"hubspot_merge_new_id": True}], indirect=True)
def test_a_merge_makes_a_new_record_and_both_old_ids_lead_to_it(sb):
    a, b = sb.hubspot.contacts.live()[3], sb.hubspot.contacts.live()[4]
    a_email, b_email = a.properties["email"], b.properties["email"]
    merged = hs(sb, "POST", "/crm/v3/objects/contacts/merge", json={"primaryObjectId": a.id, "objectIdToMerge": b.id})
    new = merged.json()
    assert merged.status_code == 200 and new["id"] not in (a.id, b.id)
    assert int(new["id"]) > max(int(r.id) for r in sb.hubspot.contacts.records.values() if r.id != new["id"])
    for old in (a.id, b.id):
        assert hs(sb, "GET", f"/crm/v3/objects/contacts/{old}").json()["id"] == new["id"]
    read = hs(sb, "GET", f"/crm/v3/objects/contacts/{new['id']}",
              params={"properties": "email,hs_merged_object_ids,hs_additional_emails"}).json()["properties"]
    assert read["email"] == a_email and set(read["hs_merged_object_ids"].split(";")) == {a.id, b.id}
    assert b_email in read["hs_additional_emails"].split(";")
    redirects = requests.get(sb.hubspot_url + "/_sandbox/merges", timeout=10).json()
    assert redirects[a.id] == redirects[b.id] == new["id"]
    assert all(target not in redirects for target in redirects.values())  # the book's own merges too
    listed = {r["id"] for r in hs(sb, "GET", "/crm/v3/objects/contacts", params={"limit": 100}).json()["results"]}
    assert a.id not in listed and b.id not in listed


@pytest.mark.parametrize("sb", [{"hubspot_merge_new_id": False}], indirect=True)
def test_merges_keep_the_primary_id_unless_asked(sb):
    a, b = sb.hubspot.contacts.live()[3], sb.hubspot.contacts.live()[4]
    assert sb.hubspot.merge_contacts(a.id, b.id).id == a.id
    assert sb.hubspot.merge_contacts(a.id, sb.hubspot.contacts.live()[5].id, new_id=True).id not in (a.id, b.id)


def test_restore_brings_a_deleted_contact_back_under_its_id(sb):
    rec = sb.hubspot.contacts.live()[7]
    assert hs(sb, "DELETE", f"/crm/v3/objects/contacts/{rec.id}").status_code == 204
    assert hs(sb, "GET", f"/crm/v3/objects/contacts/{rec.id}").status_code == 404
    sb.hubspot.restore_contacts([rec.id])
    assert hs(sb, "GET", f"/crm/v3/objects/contacts/{rec.id}").json()["id"] == rec.id
    assert "contact.restore" in HUBSPOT_CONTACT_TYPES


def test_subscription_types_include_one_to_one_and_a_non_marketing_type(sb):
    defs = hs(sb, "GET", "/communication-preferences/v3/definitions").json()["subscriptionDefinitions"]
    assert {d["name"]: d["purpose"] for d in defs} == {
        "Marketing Information": "Marketing",
        "One to One": "Sales",
        "Account and statement notices": "Customer Service",
    }


@pytest.mark.parametrize("sb", [{"hubspot_subscription_types": "legacy"}], indirect=True)
def test_legacy_portals_say_no_purpose(sb):
    defs = hs(sb, "GET", "/communication-preferences/v3/definitions").json()["subscriptionDefinitions"]
    assert len(defs) == 3 and all("purpose" not in d for d in defs)


def test_v4_batch_write_sets_statuses_per_type_and_reports_bad_inputs(sb):
    email = sb.hubspot.contacts.live()[2].properties["email"]
    body = {"inputs": [
        {"subscriberIdString": email, "subscriptionId": 7001, "statusState": "UNSUBSCRIBED", "channel": "EMAIL",
         "legalBasis": "LEGITIMATE_INTEREST_OTHER", "legalBasisExplanation": "test"},
        {"subscriberIdString": email, "subscriptionId": 9999, "statusState": "UNSUBSCRIBED", "channel": "EMAIL"}]}
    got = hs(sb, "POST", "/communication-preferences/v4/statuses/batch/write", json=body)
    out = got.json()
    assert got.status_code == 207 and out["numErrors"] == 1 and "9999" in out["errors"][0]["message"]
    assert [(r["subscriptionId"], r["status"]) for r in out["results"]] == [(7001, "NOT_SUBSCRIBED")]
    state = requests.get(sb.hubspot_url + "/_sandbox/subscriptions", params={"email": email}, timeout=10).json()
    assert state["statuses"] == {"7001": "NOT_SUBSCRIBED", "7002": "SUBSCRIBED", "7003": "SUBSCRIBED"}
    read = hs(sb, "POST", "/communication-preferences/v4/statuses/batch/read", params={"channel": "EMAIL"},
              json={"inputs": [email]}).json()["results"][0]["statuses"]
    assert {r["subscriptionId"]: r["status"] for r in read}[7001] == "NOT_SUBSCRIBED"
    too_many = {"inputs": [body["inputs"][0]] * 101}
    assert hs(sb, "POST", "/communication-preferences/v4/statuses/batch/write", json=too_many).status_code == 400


@pytest.mark.parametrize("sb", [{"hubspot_plan": "starter"}], indirect=True)
def test_every_answer_carries_rate_limit_headers(sb):
    email = sb.hubspot.contacts.live()[0].properties["email"]
    answers = [hs(sb, "GET", "/crm/v3/objects/deals", params={"limit": 5}),
               hs(sb, "GET", "/crm/v3/pipelines/deals"),
               hs(sb, "GET", "/events/v3/events", params={"limit": 1}),
               hs(sb, "GET", f"/communication-preferences/v4/statuses/{email}", params={"channel": "EMAIL"}),
               hs(sb, "GET", "/crm/v3/objects/contacts/does-not-exist")]
    for got in answers:
        assert got.headers["X-HubSpot-RateLimit-Max"] == "100", got.url
        assert got.headers["X-HubSpot-RateLimit-Daily"] == "250000"
    remaining = [int(a.headers["X-HubSpot-RateLimit-Remaining"]) for a in answers]
    assert remaining == sorted(remaining, reverse=True) and remaining[0] > remaining[-1]


@pytest.mark.parametrize("sb", [{"hubspot_plan": "enterprise", "hubspot_app_type": "oauth"}], indirect=True)
def test_oauth_apps_have_their_own_limit_and_no_daily_headers(sb):
    got = hs(sb, "GET", "/crm/v3/pipelines/deals")
    assert got.headers["X-HubSpot-RateLimit-Max"] == "110"
    assert "X-HubSpot-RateLimit-Daily" not in got.headers


def test_unknown_tier_or_app_type_is_refused(book):
    with pytest.raises(ValueError, match="hub tier"):
        start_sandbox(book=book, hubspot_tier="platinum")
    with pytest.raises(ValueError, match="app_type"):
        start_sandbox(book=book, hubspot_app_type="partner")


@pytest.mark.parametrize("sb", [{"mailchimp_customer_tags": ("churn_watch",)}], indirect=True)
def test_a_customer_tag_is_a_static_segment_and_its_name_is_taken(sb):
    base = f"{sb.mailchimp_url}/lists/{sb.mailchimp_list_id}/segments"
    auth = ("any", sb.mailchimp_key)
    members = sb.mailchimp.segment_members("churn_watch")
    assert len(members) >= 5
    listed = requests.get(base, params={"type": "static", "count": 100}, auth=auth, timeout=10).json()["segments"]
    assert [s["name"] for s in listed] == ["churn_watch"] and listed[0]["member_count"] == len(members)
    again = requests.post(base, json={"name": "churn_watch", "static_segment": []}, auth=auth, timeout=10)
    assert again.status_code == 400 and "already exists" in again.json()["detail"]
    one = next(iter(members))
    assert "churn_watch" in sb.mailchimp.tags(one)


def test_members_can_be_read_incrementally_by_status(sb):
    url = f"{sb.mailchimp_url}/lists/{sb.mailchimp_list_id}/members"
    auth = ("any", sb.mailchimp_key)
    first = next(m for m in sb.mailchimp.state.members.values() if m.status == "subscribed")
    since = datetime.now(UTC).replace(microsecond=0).isoformat()
    sb.mailchimp.unsubscribe(first.email)
    got = requests.get(url, params={"status": "unsubscribed", "since_last_changed": since, "count": 1000},
                       auth=auth, timeout=10).json()
    assert [m["email_address"] for m in got["members"]] == [first.email] and got["total_items"] == 1


def test_an_admin_subscribe_fires_the_same_subscribe_webhook_without_opt_in_evidence(sb):
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from sandbox.common import ServerThread

    received: list[bytes] = []

    async def hook(request):
        if request.method == "POST":
            received.append(await request.body())
        return Response("ok")

    server = ServerThread(Starlette(routes=[Route("/hook", hook, methods=["GET", "POST"])]))
    try:
        sb.mailchimp.add_webhook(server.url + "/hook")
        sb.mailchimp.admin_subscribe("walk.in@example.org", first_name="Walk")
        assert sb.mailchimp.wait_for_webhooks()
    finally:
        server.stop()
    assert len(received) == 1 and b"type=subscribe" in received[0] and b"walk.in%40example.org" in received[0]
    member = sb.mailchimp.member("walk.in@example.org")
    assert member["status"] == "subscribed" and member["ip_opt"] == "" and not member.get("timestamp_opt")

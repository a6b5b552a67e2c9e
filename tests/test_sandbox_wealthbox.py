"""The Wealthbox simulator answers like Wealthbox's v1 API, over real HTTP: ACCESS_TOKEN and OAuth bearer
auth, ``page``/``per_page`` paging with its maximum, the four contact types and households, tag and
custom field writes, events and opportunities, 401/403/429 bodies.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from sandbox.book import Book, generate_book
from sandbox.common import CallLog
from sandbox.redtail import start_redtail
from sandbox.wealthbox import DO_NOT_EMAIL, MAX_PER_PAGE, RunningWealthbox, start_wealthbox


@pytest.fixture(scope="module")
def book() -> Book:
    return generate_book(contacts=300, seed=11)


@pytest.fixture
def wb(book: Book) -> Iterator[RunningWealthbox]:
    with start_wealthbox(book=book, seed=11) as running:
        yield running


def auth(wb: RunningWealthbox) -> dict[str, str]:
    return {"ACCESS_TOKEN": wb.crm_config()["access_token"]}  # what a tenant's config would hold


def get(wb: RunningWealthbox, path: str, headers: dict[str, str] | None = None, **params: Any) -> requests.Response:
    return requests.get(wb.url + path, headers=auth(wb) if headers is None else headers, params=params, timeout=10)


def put(wb: RunningWealthbox, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.put(wb.url + path, headers=auth(wb), json=body, timeout=10)


def test_access_token_and_oauth_bearer(wb: RunningWealthbox) -> None:
    assert get(wb, "/me").status_code == 200
    token = wb.sim.issue_oauth_token(("login", "data"))
    assert get(wb, "/contacts", {"Authorization": f"Bearer {token}"}).status_code == 200
    login_only = wb.sim.issue_oauth_token(("login",))
    forbidden = get(wb, "/contacts", {"Authorization": f"Bearer {login_only}"})
    assert forbidden.status_code == 403 and "data" in forbidden.json()["error"]


@pytest.mark.parametrize("headers", [{}, {"ACCESS_TOKEN": "not-the-token"}, {"Authorization": "Bearer nope"}],
                         ids=["missing", "wrong-access-token", "wrong-bearer"])
def test_bad_token_gets_401_with_error(wb: RunningWealthbox, headers: dict[str, str]) -> None:
    resp = get(wb, "/contacts", headers)
    assert resp.status_code == 401
    assert set(resp.json()) == {"error"} and resp.json()["error"]
    assert wb.access_token not in resp.text


def test_paging_at_the_maximum_reaches_every_contact_exactly_once(wb: RunningWealthbox) -> None:
    seen: list[int] = []
    page = 1
    while True:
        body = get(wb, "/contacts", per_page=MAX_PER_PAGE, page=page).json()
        seen += [c["id"] for c in body["contacts"]]
        if page >= body["meta"]["total_pages"]:
            break
        page += 1
    assert len(seen) == len(set(seen)) == len(wb.sim.ws.contacts) == body["meta"]["total_count"]
    assert wb.calls.count("wealthbox", "GET", "/v1/contacts") == body["meta"]["total_pages"] == page
    assert get(wb, "/contacts", per_page=MAX_PER_PAGE, page=page + 1).json()["contacts"] == []
    assert wb.calls.writes("wealthbox") == []


def test_per_page_default_and_maximum(wb: RunningWealthbox, book: Book) -> None:
    assert len(get(wb, "/contacts").json()["contacts"]) == 25
    capped = get(wb, "/contacts", per_page=500).json()
    assert len(capped["contacts"]) == MAX_PER_PAGE
    assert capped["meta"]["total_pages"] == -(-capped["meta"]["total_count"] // MAX_PER_PAGE)
    assert get(wb, "/contacts", per_page=0).status_code == 400
    with start_wealthbox(book=book, seed=11, per_page_over_max="refuse") as strict:
        refused = get(strict, "/contacts", per_page=101)
        assert refused.status_code == 400 and "at most 100" in refused.json()["error"]
        assert get(strict, "/contacts", per_page=100).status_code == 200


def test_contact_types_households_and_members(wb: RunningWealthbox, book: Book) -> None:
    rows = get(wb, "/contacts", per_page=100, type="Household").json()
    assert {c["type"] for c in rows["contacts"]} == {"Household"}
    types = Counter(r.type for r in wb.sim.ws.contacts.values())
    assert set(types) == {"Person", "Household", "Organization", "Trust"}
    sizes = Counter(len(r.members) for r in wb.sim.ws.contacts.values() if r.type == "Household")
    assert set(sizes) == {2, 3, 4}
    people = {p.key: p for p in book.people}
    for key, cid in list(wb.sim.ws.by_person.items())[:60]:
        c = get(wb, f"/contacts/{cid}").json()
        hh = c["household"]
        assert (hh["id"] if hh else None) == wb.sim.household_of(key)
        if hh:
            assert cid in {m["id"] for m in hh["members"]}
        assert [e["address"] for e in c["email_addresses"] if e["principal"]] == [people[key].email]
        born = datetime.fromisoformat(c["birth_date"])
        as_of = book.as_of
        assert as_of.year - born.year - ((as_of.month, as_of.day) < (born.month, born.day)) == people[key].age
        assert (DO_NOT_EMAIL in {t["name"] for t in c["tags"]}) == people[key].crm_email_optout


def test_tags_put_replaces_the_list_and_creates_unknown_tags(wb: RunningWealthbox) -> None:
    cid = wb.sim.contact_id("p000005")
    before = wb.sim.tags_of("p000005")
    resp = put(wb, f"/contacts/{cid}", {"tags": [*before, "segsync: high intent"]})
    assert resp.status_code == 200
    assert [t["name"] for t in resp.json()["tags"]] == [*before, "segsync: high intent"]
    listed = {t["name"] for t in get(wb, "/categories/tags", per_page=100).json()["tags"]}
    assert "segsync: high intent" in listed
    put(wb, f"/contacts/{cid}", {"tags": ["only this"]})
    assert wb.sim.tags_of("p000005") == ["only this"]  # the list replaces every tag, ours or not
    bad = put(wb, f"/contacts/{cid}", {"tags": "not-a-list"})
    assert bad.status_code == 422 and "tags" in bad.json()["error"]
    assert len(wb.calls.writes("wealthbox")) == 3


def test_custom_fields_are_looked_up_then_written(wb: RunningWealthbox) -> None:
    wb.sim.define_custom_field("segsync churn_risk")
    fields = get(wb, "/categories/custom_fields", document_type="Contact").json()["custom_fields"]
    fid = next(f["id"] for f in fields if f["name"] == "segsync churn_risk")
    cid = wb.sim.contact_id("p000006")
    assert put(wb, f"/contacts/{cid}", {"custom_fields": [{"id": fid, "value": 0.42}]}).status_code == 200
    assert wb.sim.custom_values("p000006")["segsync churn_risk"] == 0.42
    shown = {f["name"]: f["value"] for f in get(wb, f"/contacts/{cid}").json()["custom_fields"]}
    assert shown["segsync churn_risk"] == 0.42 and "Assets Under Management" in shown
    by_name = put(wb, f"/contacts/{cid}", {"custom_fields": [{"name": "segsync churn_risk", "value": 0.9}]})
    assert by_name.status_code == 200 and wb.sim.custom_values("p000006")["segsync churn_risk"] == 0.42
    unknown = put(wb, f"/contacts/{cid}", {"custom_fields": [{"id": 999, "value": 1}]})
    assert unknown.status_code == 422 and "999" in unknown.json()["error"]
    # No API call creates a custom field (Wealthbox documents none): an admin does it in the settings.
    created = requests.post(wb.url + "/categories/custom_fields", json={"name": "x"}, headers=auth(wb), timeout=10)
    assert created.status_code == 405


def test_household_member_add_and_remove(wb: RunningWealthbox) -> None:
    loner = next(k for k in wb.sim.ws.by_person if wb.sim.household_of(k) is None)
    hh = next(r for r in wb.sim.ws.contacts.values() if r.type == "Household")
    pid = wb.sim.contact_id(loner)
    added = requests.post(f"{wb.url}/households/{hh.id}/members", json={"id": pid, "title": "Child"},
                          headers=auth(wb), timeout=10)
    assert added.status_code == 200 and pid in {m["id"] for m in added.json()["members"]}
    assert get(wb, f"/contacts/{pid}").json()["household"]["id"] == hh.id
    bad_title = requests.post(f"{wb.url}/households/{hh.id}/members", json={"id": pid, "title": "Cousin"},
                              headers=auth(wb), timeout=10)
    assert bad_title.status_code == 422
    removed = requests.delete(f"{wb.url}/households/{hh.id}/members/{pid}", headers=auth(wb), timeout=10)
    assert removed.status_code == 200 and get(wb, f"/contacts/{pid}").json()["household"] is None


def test_updated_since_filters_changed_contacts(wb: RunningWealthbox) -> None:
    wb.sim.touch("p000007", datetime(2030, 3, 1, tzinfo=UTC))
    body = get(wb, "/contacts", updated_since="2030-01-01T00:00:00Z").json()
    assert [c["id"] for c in body["contacts"]] == [wb.sim.contact_id("p000007")]
    assert get(wb, "/contacts", updated_since="soon").status_code == 400


def test_deleted_contacts_leave_the_listing_and_show_under_deleted(wb: RunningWealthbox) -> None:
    total = get(wb, "/contacts").json()["meta"]["total_count"]
    wb.sim.delete("p000008", datetime(2030, 4, 1, tzinfo=UTC))
    cid = wb.sim.contact_id("p000008")
    assert get(wb, "/contacts").json()["meta"]["total_count"] == total - 1
    assert get(wb, f"/contacts/{cid}").status_code == 404
    gone = get(wb, "/contacts", deleted_since="2030-01-01T00:00:00Z").json()["contacts"]
    assert [c["id"] for c in gone] == [cid] and gone[0]["deleted_at"].startswith("2030-04-01")
    assert [c["id"] for c in get(wb, "/contacts", deleted="true").json()["contacts"]] == [cid]


def test_events_and_opportunities_are_dated_and_linked(wb: RunningWealthbox, book: Book) -> None:
    key = next(e.person_key for e in book.events if e.type == "upgrade" and e.person_key in wb.sim.ws.by_person)
    cid = wb.sim.contact_id(key)
    opps = get(wb, "/opportunities", resource_id=cid, resource_type="Contact").json()["opportunities"]
    upgrades = [e for e in book.events if e.person_key == key and e.type == "upgrade"]
    assert len(opps) == len(upgrades) and all(o["linked_to"][0]["id"] == cid for o in opps)
    assert [o["target_close"][:10] for o in opps] == [e.occurred_at.strftime("%Y-%m-%d") for e in upgrades]
    events = get(wb, "/events", per_page=100).json()
    assert events["meta"]["total_count"] == sum(e.type == "deposit" for e in book.events
                                                if e.person_key in wb.sim.ws.by_person)


def test_rate_limit_and_injected_faults_answer_with_retry_after(book: Book) -> None:
    with start_wealthbox(book=book, seed=11, rate_limit=2, rate_window=3600) as wb:
        assert [get(wb, "/me").status_code for _ in range(3)] == [200, 200, 429]
        refused = get(wb, "/me")
        assert "error" in refused.json() and int(refused.headers["Retry-After"]) >= 1
    with start_wealthbox(book=book, seed=11) as wb:
        wb.faults.set(storm=1)
        storm = get(wb, "/contacts")
        assert storm.status_code == 429 and "error" in storm.json() and storm.headers["Retry-After"] == "5"
        assert get(wb, "/contacts").status_code == 200
        wb.faults.set(error_rate=1.0, error_status=502)
        assert get(wb, "/contacts").json() == {"error": "Service Unavailable"}


def test_both_crms_share_a_call_log_and_agree_on_households(book: Book) -> None:
    calls = CallLog()
    with start_wealthbox(book=book, seed=11, calls=calls) as wb, start_redtail(book=book, seed=11, calls=calls) as rt:
        assert get(wb, "/me").status_code == 200
        assert requests.get(rt.url + "/contacts", timeout=10).status_code == 401
        assert set(calls.by_endpoint()) == {"GET /v1/me", "GET /api/public/v1/contacts"}
        assert calls.count("wealthbox") == calls.count("redtail") == 1
        # Same book, same hidden households: both CRMs group the same people together.
        groups_wb: dict[int, set[str]] = {}
        groups_rt: dict[int, set[str]] = {}
        for key in wb.sim.ws.by_person:
            for groups, hh in ((groups_wb, wb.sim.household_of(key)), (groups_rt, rt.sim.household_of(key))):
                if hh is not None:
                    groups.setdefault(hh, set()).add(key)
        assert sorted(map(sorted, groups_wb.values())) == sorted(map(sorted, groups_rt.values()))
        assert groups_wb

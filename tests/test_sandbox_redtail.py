"""The Redtail simulator answers like Redtail's public v1 API, over real HTTP: the user-key exchange,
``page``/``meta`` paging, includes, families, tag groups, user-defined fields, 401/403/429 bodies.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from sandbox.book import Book, generate_book
from sandbox.redtail import DO_NOT_EMAIL, RunningRedtail, start_redtail


def basic(*parts: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(":".join(parts).encode()).decode()}


def userkey(api_key: str, key: str) -> dict[str, str]:
    return {"Authorization": "Userkeyauth " + base64.b64encode(f"{api_key}:{key}".encode()).decode()}


@pytest.fixture(scope="module")
def book() -> Book:
    return generate_book(contacts=300, seed=11)


@pytest.fixture
def rt(book: Book) -> Iterator[RunningRedtail]:
    with start_redtail(book=book, seed=11) as running:
        yield running


def login(rt: RunningRedtail) -> dict[str, str]:
    cfg = rt.crm_config()  # what a tenant's config would hold
    resp = requests.get(cfg["base_url"] + "/authentication", headers=basic(cfg["api_key"], cfg["username"],
                                                                          cfg["password"]), timeout=10)
    assert resp.status_code == 200, resp.text
    return userkey(rt.api_key, resp.json()["authenticated_user"]["user_key"])


def get(rt: RunningRedtail, path: str, headers: dict[str, str], **params: Any) -> requests.Response:
    return requests.get(rt.url + path, headers=headers, params=params, timeout=10)


def test_user_key_exchange_then_userkeyauth(rt: RunningRedtail) -> None:
    auth = login(rt)
    assert auth["Authorization"].endswith(base64.b64encode(f"{rt.api_key}:{rt.sim.user_key}".encode()).decode())
    assert get(rt, "/contacts", auth).status_code == 200
    # The scheme name is case-insensitive (the collection writes UserKeyAuth).
    assert get(rt, "/contacts", {"Authorization": auth["Authorization"].replace("Userkeyauth", "UserKeyAuth")}
               ).status_code == 200
    assert rt.sim.auth_exchanges == 1


@pytest.mark.parametrize("case, text", [
    ("no-header", "Authorization header missing"),
    ("wrong-password", "Invalid credentials"),
    ("wrong-user-key", "Invalid credentials"),
])
def test_bad_credentials_get_401_with_message(rt: RunningRedtail, case: str, text: str) -> None:
    if case == "wrong-password":
        resp = requests.get(rt.url + "/authentication", headers=basic(rt.api_key, rt.username, "nope"), timeout=10)
    elif case == "wrong-user-key":
        resp = get(rt, "/contacts", userkey(rt.api_key, "00000000-0000-0000-0000-000000000000"))
    else:
        resp = get(rt, "/contacts", {})
    assert resp.status_code == 401
    assert resp.json() == {"message": text}
    assert rt.sim.user_key not in resp.text and rt.password not in resp.text


def test_paging_reaches_every_contact_exactly_once(rt: RunningRedtail) -> None:
    auth = {**login(rt), "pagesize": "40"}
    seen: list[int] = []
    page, total_pages = 1, None
    while total_pages is None or page <= total_pages:
        body = get(rt, "/contacts", auth, page=page).json()
        total_pages = body["meta"]["total_pages"]
        assert len(body["contacts"]) <= 40
        seen += [c["id"] for c in body["contacts"]]
        page += 1
    assert len(seen) == len(set(seen)) == len(rt.sim.db.contacts) == body["meta"]["total_records"]
    assert rt.calls.count("redtail", "GET", "/api/public/v1/contacts") == total_pages
    assert get(rt, "/contacts", auth, page=total_pages + 1).json()["contacts"] == []
    assert rt.calls.writes("redtail") == []


def test_page_size_default_and_cap(rt: RunningRedtail) -> None:
    auth = login(rt)
    assert len(get(rt, "/contacts", auth).json()["contacts"]) == 50
    assert len(get(rt, "/contacts", {**auth, "pagesize": "1000"}).json()["contacts"]) == 200
    assert len(get(rt, "/contacts", auth, page_size=7).json()["contacts"]) == 7
    bad = get(rt, "/contacts", auth, page="zero")
    assert bad.status_code == 400 and "page" in bad.json()["message"]


def test_contact_includes_emails_birth_date_family_and_tags(rt: RunningRedtail, book: Book) -> None:
    auth = {**login(rt), "include": "emails,family,tag_memberships"}
    contacts = []
    for page in (1, 2, 3, 4, 5, 6, 7):
        contacts += get(rt, "/contacts", {**auth, "pagesize": "50"}, page=page).json()["contacts"]
    by_id = {c["id"]: c for c in contacts}
    people = {p.key: p for p in book.people}
    for key, cid in rt.sim.db.by_person.items():
        c, p = by_id[cid], people[key]
        primary = [e["address"] for e in c["emails"] if e["is_primary"]]
        assert primary == [p.email]
        born = datetime.fromisoformat(c["dob"])
        assert book.as_of.year - born.year - ((book.as_of.month, book.as_of.day) < (born.month, born.day)) == p.age
        family = c["family"]
        assert (family["id"] if family else None) == rt.sim.household_of(key)
        assert (DO_NOT_EMAIL in {m["name"] for m in c["tag_memberships"]}) == p.crm_email_optout
    sizes = Counter(len(f["members"]) for f in rt.sim.db.families.values())
    assert set(sizes) == {2, 3, 4}


def test_families_list_members_with_head_of_household(rt: RunningRedtail) -> None:
    auth = login(rt)
    body = get(rt, "/families", auth, family_members="true").json()
    assert body["meta"]["total_records"] == len(rt.sim.db.families)
    for fam in body["families"]:
        assert sum(m["hoh"] for m in fam["members"]) == 1
        assert all(rt.sim.db.contacts[m["contact_id"]].family_id == fam["id"] for m in fam["members"])
    assert "members" not in get(rt, "/families", auth).json()["families"][0]


def test_accounts_notes_and_activities_carry_values_and_dates(rt: RunningRedtail, book: Book) -> None:
    auth = login(rt)
    key = next(k for k, v in Counter(e.person_key for e in book.events if e.type == "deposit").items()
               if k in rt.sim.db.by_person and v >= 1)
    cid = rt.sim.db.by_person[key]
    person = next(p for p in book.people if p.key == key)
    balances = [a["balance"] for a in get(rt, f"/contacts/{cid}/accounts", auth).json()["accounts"]]
    assert sum(balances) == pytest.approx(person.aum, abs=0.02)
    notes = get(rt, f"/contacts/{cid}/notes", auth).json()["notes"]
    deposits = [e for e in book.events if e.person_key == key and e.type == "deposit"]
    assert len(notes) == len(deposits)
    assert {datetime.fromisoformat(n["created_at"]) for n in notes} == {e.occurred_at.replace(
        microsecond=e.occurred_at.microsecond // 1000 * 1000) for e in deposits}
    missing = get(rt, "/contacts/999999/notes", auth)
    assert missing.status_code == 404 and missing.json() == {"message": "Contact not found"}


def test_updated_since_returns_only_changed_contacts(rt: RunningRedtail) -> None:
    auth = login(rt)
    rt.sim.touch("p000002", datetime(2030, 2, 1, tzinfo=UTC))
    body = get(rt, "/contacts", auth, updated_since="2030-01-01T00:00:00Z").json()
    assert [c["id"] for c in body["contacts"]] == [rt.sim.db.by_person["p000002"]]
    assert body["meta"]["total_records"] == 1
    assert get(rt, "/contacts", auth, updated_since="yesterday").status_code == 400
    searched = get(rt, "/contacts/search", auth, updated_since="2030-01-01T00:00:00+00:00").json()["contacts"]
    assert [c["id"] for c in searched] == [rt.sim.db.by_person["p000002"]]


def test_deleted_contacts_leave_the_listing(rt: RunningRedtail) -> None:
    auth = login(rt)
    total = get(rt, "/contacts", auth).json()["meta"]["total_records"]
    rt.sim.delete("p000009")
    cid = rt.sim.db.by_person["p000009"]
    assert get(rt, "/contacts", auth).json()["meta"]["total_records"] == total - 1
    assert get(rt, f"/contacts/{cid}", auth).json()["contact"]["deleted"] is True


def test_tag_groups_and_memberships_are_writable(rt: RunningRedtail) -> None:
    auth = login(rt)
    made = requests.post(rt.url + "/tag_groups", json={"name": "segsync: high intent"}, headers=auth, timeout=10)
    assert made.status_code == 201
    tid = made.json()["tag_group"]["id"]
    again = requests.post(rt.url + "/tag_groups", json={"name": "SEGSYNC: High Intent"}, headers=auth, timeout=10)
    assert again.status_code == 422 and "already exists" in again.json()["message"]
    cid = rt.sim.db.by_person["p000003"]
    joined = requests.post(f"{rt.url}/contacts/{cid}/tag_memberships", json={"tag_id": tid}, headers=auth, timeout=10)
    assert joined.status_code == 201
    assert "segsync: high intent" in rt.sim.tags_of("p000003")
    twice = requests.post(f"{rt.url}/contacts/{cid}/tag_memberships", json={"tag_id": tid}, headers=auth, timeout=10)
    assert twice.status_code == 422
    mid = joined.json()["tag_membership"]["id"]
    gone = requests.delete(f"{rt.url}/contacts/{cid}/tag_memberships/{mid}", headers=auth, timeout=10)
    assert gone.status_code == 204 and "segsync: high intent" not in rt.sim.tags_of("p000003")
    assert len(rt.calls.writes("redtail")) == 5


def test_user_defined_fields_are_writable(rt: RunningRedtail) -> None:
    auth = login(rt)
    field = requests.post(rt.url + "/lists/contact_udf_fields", json={"name": "segsync churn_risk"}, headers=auth,
                          timeout=10).json()["contact_udf_field"]
    cid = rt.sim.db.by_person["p000004"]
    made = requests.post(f"{rt.url}/contacts/{cid}/udfs", json={"contact_udf_field_id": field["id"],
                                                                "field_value": "0.42"}, headers=auth, timeout=10)
    assert made.status_code == 201
    uid = made.json()["contact_udf"]["id"]
    updated = requests.put(f"{rt.url}/contacts/{cid}/udfs/{uid}", json={"field_value": "0.57"}, headers=auth,
                           timeout=10)
    assert updated.status_code == 204 and updated.content == b""
    assert rt.sim.udfs_of("p000004") == {"segsync churn_risk": "0.57"}
    listed = get(rt, f"/contacts/{cid}/udfs", auth).json()["contact_udfs"]
    assert [(u["field_name"], u["field_value"]) for u in listed] == [("segsync churn_risk", "0.57")]
    unknown = requests.post(f"{rt.url}/contacts/{cid}/udfs", json={"contact_udf_field_id": 1, "field_value": "x"},
                            headers=auth, timeout=10)
    assert unknown.status_code == 422 and "user defined field" in unknown.json()["message"]


def test_read_only_user_gets_403_on_writes(book: Book) -> None:
    with start_redtail(book=book, seed=11, read_only=True) as rt:
        auth = login(rt)
        resp = requests.post(rt.url + "/tag_groups", json={"name": "x"}, headers=auth, timeout=10)
        assert resp.status_code == 403
        assert resp.json()["message"].startswith("User Forbidden from Updating")
        assert get(rt, "/contacts", auth).status_code == 200


def test_rate_window_and_injected_faults_answer_in_redtails_shape(book: Book) -> None:
    with start_redtail(book=book, seed=11, rate_limit=3, rate_window=3600) as rt:
        auth = login(rt)
        assert [get(rt, "/contacts", auth).status_code for _ in range(3)] == [200, 200, 429]
        refused = get(rt, "/contacts", auth)
        assert refused.json() == {"message": "Rate limit exceeded"} and int(refused.headers["Retry-After"]) >= 1
    with start_redtail(book=book, seed=11) as rt:
        auth = login(rt)
        rt.faults.set(storm=1)
        storm = get(rt, "/contacts", auth)
        assert storm.status_code == 429 and "message" in storm.json() and "Retry-After" in storm.headers
        assert get(rt, "/contacts", auth).status_code == 200
        rt.faults.set(error_rate=1.0, error_status=503)
        failed = get(rt, "/contacts", auth)
        assert failed.status_code == 503 and failed.json() == {"message": "Service Unavailable"}

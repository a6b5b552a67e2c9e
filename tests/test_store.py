"""The store contract, on SQLite and the real PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.base import Contact, EngagementEvent
from sync.store import SqlStore, TenantBusy, open_store
from sync.store.interface import Store
from sync.store.migrate import current

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(db_url):
    s = open_store(db_url)
    yield s
    s.close()


def hub(vid: str, email: str, **kw) -> Contact:
    return Contact(source="hubspot", vendor_id=vid, email=email, **kw)


def test_migrations_reach_head_and_are_idempotent(store):
    rev = current(store.engine)
    assert rev is not None
    store.migrate()  # a second upgrade is a no-op, not an error
    assert current(store.engine) == rev


def test_page_and_cursor_are_stored_together(store):
    store.store_page("t1", [hub("1", "A@x.com"), hub("2", "b@x.com")], [], ("hubspot.contacts", "c1"))
    assert store.cursor("t1", "hubspot.contacts") == "c1"
    assert {c["email"] for c in store.contacts("t1")} == {"a@x.com", "b@x.com"}
    # other tenants see nothing
    assert store.contacts("t2") == []
    assert store.cursor("t2", "hubspot.contacts") is None


def test_one_person_across_crm_and_esp_by_normalised_email(store):
    store.store_page("t1", [hub("1", "Ann@Example.com ")], [], None)
    store.store_page(
        "t1", [Contact(source="mailchimp", vendor_id="h1", email="ann@example.com", status="subscribed")], [], None
    )
    contacts = store.contacts("t1")
    assert len(contacts) == 1
    cid = contacts[0]["contact_id"]
    assert store.vendor_ids("t1", "hubspot") == {cid: "1"}
    assert store.vendor_ids("t1", "mailchimp") == {cid: "h1"}
    assert contacts[0]["esp_status"] == "subscribed"


def test_email_change_keeps_the_contact_and_its_history(store):
    store.store_page("t1", [hub("1", "old@x.com")], [], None)
    ev = EngagementEvent(source="hubspot", contact_vendor_id="1", type="page_view", occurred_at=T0, event_id="e1")
    store.store_page("t1", [], [ev], None)
    store.store_page("t1", [hub("1", "new@x.com")], [], None)
    # the ESP still knows the old address: it resolves to the same person through the alias
    store.store_page("t1", [Contact(source="mailchimp", vendor_id="h", email="old@x.com")], [], None)
    contacts = store.contacts("t1")
    assert len(contacts) == 1 and contacts[0]["email"] == "new@x.com"
    assert [e["type"] for e in store.events("t1")] == ["page_view"]


def test_a_re_pulled_record_of_another_source_never_flips_the_contacts_address(store):
    """A HubSpot contact (new@, additional old@) and the Mailchimp member at old@ are one person. Re-pulling either
    record unchanged - as every incremental pull of someone segsync wrote to does - keeps the address as it is: it
    used to follow whichever source was pulled last (and every no-change run re-scored)."""
    store.store_page("t1", [hub("1", "new@x.com", previous_emails=("old@x.com",))], [], None)
    member = Contact(source="mailchimp", vendor_id="h", email="old@x.com", status="subscribed")
    for _ in range(2):
        store.store_page("t1", [member], [], None)
        assert [c["email"] for c in store.contacts("t1")] == ["new@x.com"]
        store.store_page("t1", [hub("1", "new@x.com", previous_emails=("old@x.com",))], [], None)
        assert [c["email"] for c in store.contacts("t1")] == ["new@x.com"]
    # A real change at the source that gave the address still moves it; the member's own address stays its own.
    store.store_page("t1", [hub("1", "newer@x.com")], [], None)
    store.store_page("t1", [member], [], None)
    assert [c["email"] for c in store.contacts("t1")] == ["newer@x.com"]
    # The member changes address at Mailchimp: that is news about the member, not about the CRM's address.
    store.store_page("t1", [Contact(source="mailchimp", vendor_id="h", email="other@x.com")], [], None)
    assert [c["email"] for c in store.contacts("t1")] == ["newer@x.com"]


def test_two_records_of_one_person_at_one_source_give_the_properties_of_the_one_segsync_pushes_to(store):
    """Two Mailchimp members are one person (the CRM contact's address and its additional one). The member segsync
    pushes to gives the rating, merge fields and status, whichever is pulled last: they used to follow the last
    pull, so re-pulling one member changed a model input and every no-change run at 20,000 contacts rescored."""
    store.store_page("t1", [hub("1", "ann@x.com", previous_emails=("ann.old@x.com",))], [], None)
    own = Contact(source="mailchimp", vendor_id="m-own", email="ann@x.com", status="subscribed",
                  properties={"member_rating": 2, "merge_fields": {"FNAME": "Ann"}})
    other = Contact(source="mailchimp", vendor_id="a-other", email="ann.old@x.com", status="unsubscribed",
                    properties={"member_rating": 4, "merge_fields": {"FNAME": "Annie"}})

    def seen() -> tuple[Any, Any, Any]:
        [c] = store.contacts("t1")
        return c["properties"].get("member_rating"), c["properties"].get("merge_fields"), c["esp_status"]

    for order in ([own], [other]), ([other], [own]), ([own, other],), ([other, own],):
        for page in order:
            store.store_page("t1", page, [], None)
        store.store_page("t1", [other], [], None)  # the other member re-pulled (it changed at Mailchimp)
        assert seen() == (2, {"FNAME": "Ann"}, "subscribed"), order
        assert list(store.vendor_ids("t1", "mailchimp").values()) == ["m-own"]  # the member pushed to
    # The member at the person's address leaves (archived): the other one is the person's record at Mailchimp now.
    store.store_page("t1", [Contact(source="mailchimp", vendor_id="m-own", email="ann@x.com", archived=True), other],
                     [], None)
    assert seen() == (4, {"FNAME": "Annie"}, "unsubscribed")


def test_crm_merge_points_the_loser_at_the_survivor(store):
    store.store_page("t1", [hub("1", "a@x.com"), hub("2", "a2@x.com")], [], None)
    store.store_page("t1", [hub("2", "a2@x.com", merged_into="1")], [], None)
    ids = store.vendor_ids("t1", "hubspot")
    assert list(ids.values()) == ["1"]


def test_events_are_idempotent_on_event_id(store):
    store.store_page("t1", [hub("1", "a@x.com")], [], None)
    ev = EngagementEvent(
        source="hubspot", contact_vendor_id="1", type="deposit", occurred_at=T0, value=10.0, event_id="d1"
    )
    store.store_page("t1", [], [ev, ev], None)
    store.store_page("t1", [], [ev], None)
    assert store.counts("t1")["events"] == 1


def test_re_pulled_events_write_nothing_and_a_changed_or_erased_one_moves_the_events_counter(store):
    store.store_page("t1", [hub("1", "a@x.com"), hub("2", "b@x.com")], [], None)
    page = [EngagementEvent(source="hubspot", contact_vendor_id=v, type="deposit", occurred_at=T0 + timedelta(hours=i),
                            value=float(i), event_id=f"d{v}{i}") for v in ("1", "2") for i in range(3)]
    page.append(EngagementEvent(source="hubspot", contact_vendor_id="1", type="email_open", occurred_at=T0))  # no id
    store.store_page("t1", [], page, ("hubspot.engagement", "c1"))
    first = store.data_version("t1")
    assert first >= 1 and store.counts("t1")["events"] == 7
    # The same window pulled again: the rows are stored already, so nothing is written and the counter stays.
    writes: list[str] = []

    def seen(_conn, _cursor, statement, *_rest):
        writes.append(statement.split()[0].upper())

    sa.event.listen(store.engine, "before_cursor_execute", seen)
    try:
        result = store.store_page("t1", [], page, ("hubspot.engagement", "c2"))
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", seen)
    assert result.events == 7 and store.data_version("t1") == first and store.cursor("t1", "hubspot.engagement") == "c2"
    assert writes.count("INSERT") == 1 and "UPDATE" not in writes  # the cursor's upsert; no event row
    # A deal's amount corrected at the vendor: the same key, new content, updated in place.
    changed = EngagementEvent(source="hubspot", contact_vendor_id="1", type="deposit", occurred_at=T0,
                              value=99.0, event_id="d10")
    store.store_page("t1", [], [changed], None)
    assert store.data_version("t1") == first + 1 and store.counts("t1")["events"] == 7
    assert 99.0 in {e["value"] for e in store.events("t1")}
    # A new event moves it, and so does erasing a person (their events go).
    store.store_page("t1", [], [EngagementEvent(source="hubspot", contact_vendor_id="2", type="deposit",
                                                occurred_at=T0, value=1.0, event_id="new")], None)
    assert store.data_version("t1") == first + 2 and store.counts("t1")["events"] == 8
    store.erase("t1", "b@x.com")
    assert store.data_version("t1") == first + 3 and store.counts("t1")["events"] == 4
    assert store.data_version("t2") == 0  # per tenant


def test_scoring_mark_is_per_tenant_and_cleared_by_none(store):
    assert store.scoring_mark("t1") is None
    store.set_scoring_mark("t1", "fp-1")
    store.set_scoring_mark("t1", "fp-2")
    assert store.scoring_mark("t1") == "fp-2" and store.scoring_mark("t2") is None
    store.set_scoring_mark("t1", None)
    assert store.scoring_mark("t1") is None


def test_confirm_batch_writes_state_and_outcomes_and_deletes(store):
    run = store.start_run("t1", dry_run=False)
    store.confirm_batch(
        "t1", run, "crm.properties", [("c1", '{"a":1}'), ("c2", '{"a":2}')], [("c1", "sent", ""), ("c2", "sent", "")]
    )
    assert store.last_sent("t1", "crm.properties") == {"c1": '{"a":1}', "c2": '{"a":2}'}
    store.confirm_batch("t1", run, "crm.properties", [("c1", None)], [("c3", "failed", "INVALID_EMAIL")])
    assert store.last_sent("t1", "crm.properties") == {"c2": '{"a":2}'}
    outcomes = {(o["key"], o["outcome"], o["message"]) for o in store.outcomes(run)}
    assert ("c3", "failed", "INVALID_EMAIL") in outcomes
    store.finish_run(run, "ok", {"n": 1})
    assert store.runs("t1")[0]["status"] == "ok"


def test_tenant_lock_excludes_a_second_holder(store):
    with store.tenant_lock("t1"):
        other = (
            SqlStore(store.engine)
            if store.engine.dialect.name == "sqlite"
            else open_store(store.engine.url.render_as_string(hide_password=False), migrate=False)
        )
        with pytest.raises(TenantBusy), other.tenant_lock("t1"):
            pass
        with other.tenant_lock("t2"):  # another tenant is free
            pass
        if other.engine is not store.engine:
            other.close()
    with store.tenant_lock("t1"):  # released after use
        pass


def test_erase_removes_personal_data(store):
    store.store_page("t1", [hub("1", "gone@x.com"), hub("2", "stay@x.com")], [], None)
    ev = EngagementEvent(source="hubspot", contact_vendor_id="1", type="deposit", occurred_at=T0, event_id="d1")
    store.store_page("t1", [], [ev], None)
    assert store.erase("t1", "GONE@x.com") > 0
    assert [c["email"] for c in store.contacts("t1")] == ["stay@x.com"]
    with store.engine.connect() as conn:
        text = " ".join(
            str(r)
            for table in ("contacts", "identities", "aliases", "events")
            for r in conn.execute(sa.text(f"select * from {table}"))
        )
    assert "gone@x.com" not in text


def test_created_at_is_the_earliest_any_source_reports_whatever_the_pull_order(store):
    """Tenure is a model feature: it must not flip with the order systems are pulled in."""
    mc = Contact(source="mailchimp", vendor_id="m1", email="a@x.com", created_at=T0 + timedelta(days=30))
    for tenant, pages in (
        ("t1", [[hub("1", "a@x.com", created_at=T0)], [mc]]),
        ("t2", [[mc], [hub("1", "a@x.com", created_at=T0)]]),
    ):
        for page in pages:
            store.store_page(tenant, page, [], None)
        # and a re-pull of the later source changes nothing
        store.store_page(tenant, pages[1], [], None)
    created = {c["tenant_id"]: c["created_at"].replace(tzinfo=None) for t in ("t1", "t2") for c in store.contacts(t)}
    assert created == {"t1": T0.replace(tzinfo=None), "t2": T0.replace(tzinfo=None)}


def test_vendor_objects_are_recorded_per_tenant_system_and_scope_and_updated_in_place(store):
    from connectors.base import ADOPTED, CREATED, CREATING, VendorObject
    from sync.store.objects import TenantObjects

    ours = TenantObjects(store, "t1", "mailchimp")
    ours.record(VendorObject("tag", "list1", "segsync:a", "", CREATING))
    ours.record(VendorObject("tag", "list1", "segsync:a", "2001", CREATED))  # the answer: same row, now with its id
    ours.record(VendorObject("tag", "list1", "segsync:b", "2002", ADOPTED, "listed under esp.adopt"))
    ours.record(VendorObject("tag", "list2", "segsync:a", "3001", CREATED))
    again = TenantObjects(store, "t1", "mailchimp")  # another connector (the next run) reads what was recorded
    assert again.objects("tag", "list1") == {
        "segsync:a": VendorObject("tag", "list1", "segsync:a", "2001", CREATED),
        "segsync:b": VendorObject("tag", "list1", "segsync:b", "2002", ADOPTED, "listed under esp.adopt"),
    }
    assert set(again.objects("tag", "list2")) == {"segsync:a"}
    assert TenantObjects(store, "t2", "mailchimp").objects("tag", "list1") == {}
    assert TenantObjects(store, "t1", "hubspot").objects("tag", "list1") == {}


def test_a_book_read_in_chunks_is_the_whole_books_state_once(store):
    """``contact_chunk`` (issue 21) pages live contacts in id order, each with only its own identities, addresses,
    last-sent and in-flight rows; together the chunks are what the whole-book reads return."""
    store.store_page("t1", [hub(str(i), f"p{i}@x.com") for i in range(10)], [], None)
    store.store_page("t1", [hub("3", "p3@x.com", merged_into="4")], [], None)  # a merged record: not live
    store.store_page("t1", [Contact(source="mailchimp", vendor_id=f"m{i}", email=f"p{i}@x.com", status="subscribed")
                            for i in range(0, 10, 2)], [], None)
    store.store_page("t1", [hub("5", "new5@x.com")], [], None)  # p5@x.com is now an alias
    store.store_page("t2", [hub("1", "other@x.com")], [], None)  # another tenant, never read
    ids = sorted(c["contact_id"] for c in store.contacts("t1"))
    for n, key in enumerate(ids):
        store.intend_batch("t1", None, "esp.tags", [(key, '["segsync:a"]')] if n % 2 else [])
        store.confirm_batch("t1", None, "crm.properties", [(key, f'{{"n":{n}}}')], [])
    chunks, after = [], None
    while (chunk := store.contact_chunk("t1", after, 4)).contacts:
        chunks.append(chunk)
        after = chunk.last_id
    assert [len(c.contacts) for c in chunks] == [4, 4, len(ids) - 8]
    assert [cid for c in chunks for cid, _, _ in c.contacts] == ids  # every live contact once, in id order

    def merged(get):
        out: dict = {}
        for c in chunks:
            assert not set(get(c)) & set(out), "a row read twice"
            out.update(get(c))
        return out

    assert merged(lambda c: c.addresses) == store.addresses("t1")
    hub_emails = store.identity_emails("t1", "hubspot")
    assert merged(lambda c: c.identities.get("hubspot", {})) == {
        cid: (vid, hub_emails.get(cid)) for cid, vid in store.vendor_ids("t1", "hubspot").items()}
    assert {k: v[0] for k, v in merged(lambda c: c.identities.get("mailchimp", {})).items()} == \
        store.vendor_ids("t1", "mailchimp")
    assert merged(lambda c: c.sent.get("crm.properties", {})) == store.last_sent("t1", "crm.properties")
    assert set(merged(lambda c: dict.fromkeys(c.in_flight.get("esp.tags", ())))) == store.in_flight("t1", "esp.tags")
    assert store.contact_chunk("t1", after, 4).contacts == [] and store.contact_chunk("t3", None, 4).last_id is None

    audience = {email: (vid, status) for email, vid, status in store.esp_audience("t1", "mailchimp")}
    assert audience == {f"p{i}@x.com": (f"m{i}", "subscribed") for i in range(0, 10, 2)}
    sent = sorted(store.sent_emails("t1", "mailchimp", ["esp.tags"]))
    expected = {cid for n, cid in enumerate(ids) if n % 2} & set(store.vendor_ids("t1", "mailchimp"))
    emails = store.identity_emails("t1", "mailchimp")
    assert expected and sent == sorted(("esp.tags", emails[cid], '["segsync:a"]') for cid in expected)


def test_property_values_reads_one_property_of_the_live_contacts_as_the_full_read_does(store):
    store.store_page("t1", [hub("1", "a@x.com", properties={"household_id": "H1", "aum": "10"}),
                            hub("2", "b@x.com", properties={"household_id": 2071}),
                            hub("3", "c@x.com", properties={"household_id": ""}),
                            hub("4", "d@x.com", properties={"aum": "5"}),
                            hub("5", "e@x.com", properties={"household_id": "H1"}, archived=True)], [], None)
    ids = {c["email"]: c["contact_id"] for c in store.contacts("t1")}
    got = sorted(store.property_values("t1", "household_id"))
    assert got == sorted([(ids["a@x.com"], "H1"), (ids["b@x.com"], "2071")])
    # The store's database read gives what the generic read over every contact gives.
    assert sorted(Store.property_values(store, "t1", "household_id")) == got
    assert list(store.property_values("t2", "household_id")) == []


def test_the_migrated_database_has_every_table_and_index_the_code_declares(store):
    """schema.py and the migrations must agree: an index declared but never migrated would make reads slow on
    every existing store without any test noticing (and one migrated but undeclared, the reverse)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from consent.schema import metadata as consent_metadata
    from sync.store.schema import metadata as store_metadata

    with store.engine.connect() as conn:
        for declared in (store_metadata, consent_metadata):
            names = set(declared.tables)
            diff = [d for d in compare_metadata(MigrationContext.configure(conn), declared)
                    if isinstance(d, tuple) and d[0] in ("add_index", "remove_index", "add_table")
                    and d[1].table.name in names]
            assert diff == [], diff

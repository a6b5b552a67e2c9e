"""The Mailchimp connector against the sandbox (real HTTP on loopback, the official SDK underneath).

Every test that talks to the sandbox ends by scanning the sandbox's call log: no request segsync
sent - including the operations inside ``POST /batches`` - may set ``status`` or ``status_if_new``
to ``subscribed``.
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.base import MemoryLedger, TagChange
from connectors.kit import CallBudget, RetrySettings
from connectors.mailchimp import MailchimpConnector, subscriber_hash
from connectors.mailchimp import settings as S
from connectors.mailchimp.client import error_for, problem_detail
from connectors.mailchimp.mapping import member_contact
from connectors.mailchimp.push import _op_verdict
from core.errors import ConfigError, FatalApiError, InputError, RejectedRecordError
from tests.contract.sandboxed import subscribed_in

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # after every seeded change in the book
FAST = RetrySettings(max_attempts=4, initial_wait=0.0, max_wait=0.0, total_budget=30.0)
COMPLIANCE = json.dumps({"type": "https://mailchimp.com/developer/marketing/docs/errors/",
                         "title": "Member In Compliance State", "status": 400,
                         "detail": "x@example.com is already a list member in compliance state", "instance": "1"})


class Clock:
    """The simulator's clock: every change it stamps happens at ``now``."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def assert_never_subscribed(sb: Any) -> None:
    bad = [(c.method, c.path, where) for c in sb.calls.writes("mailchimp") for where in subscribed_in(c.body)]
    assert not bad, f"requests that set subscribed: {bad[:5]}"
    assert list(getattr(sb.mailchimp, "subscribe_attempts", [])) == []  # the simulator's own audit


@pytest.fixture
def mc(make_sandbox):
    """A 300-contact sandbox whose Mailchimp clock the test controls (``sb.clock``)."""
    clock = Clock(T0)
    sb = make_sandbox(contacts=300, seed=11, mailchimp_clock=clock)
    sb.clock = clock
    yield sb
    assert_never_subscribed(sb)


def connect(sb: Any, **kwargs: Any) -> MailchimpConnector:
    conn = MailchimpConnector(sb.mailchimp_key, sb.mailchimp_list_id, sb.mailchimp_url, retry=FAST,
                              sleep=lambda _s: None, **kwargs)
    if not hasattr(sb, "objects"):
        sb.objects = MemoryLedger()  # the tags segsync created: one record per tenant (the store, in a run)
    conn.use_objects(sb.objects)
    return conn


def pull_all(conn: MailchimpConnector, cursor: str | None, run_started: datetime) -> tuple[list[Any], str | None]:
    contacts, last = [], cursor
    for page in conn.pull_members(cursor, run_started):
        contacts += page.contacts
        assert page.cursor is None or page.cursor <= run_started.isoformat()
        last = page.cursor or last
    return contacts, last


def members_by_status(sb: Any, status: str) -> list[str]:
    return [m.email for m in sb.mailchimp.state.members.values() if m.status == status]


def add_members(sb: Any, n: int, when: datetime, prefix: str = "bulk") -> list[str]:
    st = sb.mailchimp.state
    with st.lock:
        return [st.add(f"{prefix}{i}@example.com", "subscribed", {"FNAME": "B"}, last_changed=when).email
                for i in range(n)]


# ---------------------------------------------------------------------------------------- pull


def test_full_then_incremental_pull_returns_each_member_exactly_once(mc):
    conn = connect(mc)
    run1 = T0 + timedelta(minutes=1)
    full, cursor = pull_all(conn, None, run1)
    ids = [c.vendor_id for c in full]
    assert len(ids) == len(set(ids)) == len(mc.mailchimp.state.members)
    assert cursor == (run1 - S.CURSOR_OVERLAP).isoformat()
    assert all(c.email == c.email.strip().lower() and c.source == "mailchimp" for c in full)

    mc.clock.now = T0 + timedelta(minutes=5)
    subscribed = members_by_status(mc, "subscribed")
    mc.mailchimp.unsubscribe(subscribed[0], reason="Too many emails")
    mc.mailchimp.clean(subscribed[1])
    run2 = T0 + timedelta(minutes=10)
    inc, cursor2 = pull_all(conn, cursor, run2)
    assert sorted(c.email for c in inc) == sorted(e.lower() for e in subscribed[:2])
    assert cursor2 == (run2 - S.CURSOR_OVERLAP).isoformat()
    again, _ = pull_all(conn, cursor2, T0 + timedelta(minutes=20))
    assert again == []


def test_pull_maps_status_tags_merge_fields_and_withdrawals(mc):
    conn = connect(mc)
    mc.clock.now = T0 + timedelta(minutes=1)
    email = members_by_status(mc, "subscribed")[3]
    conn.push_tags([TagChange(email, active=("segsync:vip",))])
    mc.mailchimp.unsubscribe(email, reason="N/A (Unsubscribed by the subscriber)")
    pages = list(conn.pull_members(None, T0 + timedelta(minutes=2)))
    contacts = {c.email: c for p in pages for c in p.contacts}
    signals = {s.email: s for p in pages for s in p.consent}
    person = contacts[email.lower()]
    assert person.status == "unsubscribed"
    assert person.properties["tags"] == ["segsync:vip"]
    assert set(person.properties["merge_fields"]) >= {"FNAME", "LNAME"}
    assert isinstance(person.properties["member_rating"], int)
    assert person.properties["subscriber_hash"] == subscriber_hash(email)
    signal = signals[email.lower()]
    assert (signal.purpose, signal.state, signal.reason) == ("email_marketing", "withdrawn",
                                                             "N/A (Unsubscribed by the subscriber)")
    cleaned = [c for c in contacts.values() if c.status == "cleaned"]
    assert cleaned and all(signals[c.email].state == "withdrawn" for c in cleaned)
    assert {s.vendor_event_id for p in conn.pull_members(None, T0 + timedelta(minutes=2)) for s in p.consent} \
        == {s.vendor_event_id for s in signals.values()}  # stable across re-pulls


def test_paging_over_1000_survives_a_member_leaving_the_window_mid_pull(mc):
    add_members(mc, 1500, T0 - timedelta(days=1))
    conn = connect(mc)
    pages = conn.pull_members(None, T0 + timedelta(minutes=1))
    first = next(pages)
    assert len(first.contacts) == S.PAGE_SIZE and first.cursor is not None
    # A member already yielded changes now: it leaves the fixed window and everyone behind it shifts.
    mc.clock.now = T0 + timedelta(minutes=2)
    mc.mailchimp.unsubscribe(first.contacts[10].email)
    rest = [c for p in pages for c in p.contacts]
    ids = [c.vendor_id for c in first.contacts + rest]
    assert len(ids) == len(set(ids)) == len(mc.mailchimp.state.members)


def test_upemail_keeps_the_vendor_id_and_engagement_history(mc):
    conn = connect(mc)
    run1 = T0 + timedelta(minutes=1)
    full, cursor = pull_all(conn, None, run1)
    events = [e for p in conn.pull_engagement(None, run1) for e in p.events]
    active = Counter(e.email for e in events if e.type == "email_open").most_common(1)[0][0]
    before = next(c for c in full if c.email == active)
    mc.clock.now = T0 + timedelta(minutes=3)
    mc.mailchimp.change_email(active, "New.Address@Example.org")
    inc, _ = pull_all(conn, cursor, T0 + timedelta(minutes=5))
    assert [c.email for c in inc] == ["new.address@example.org"]
    assert inc[0].vendor_id == before.vendor_id
    assert inc[0].properties["subscriber_hash"] == subscriber_hash("new.address@example.org")
    old = {e.event_id: e.contact_vendor_id for e in events if e.email == active}
    refetched = {e.event_id: e.contact_vendor_id for p in conn.pull_engagement(None, run1 + timedelta(minutes=5))
                 for e in p.events if e.contact_vendor_id == before.vendor_id}
    assert old and set(old) <= set(refetched)  # same ids, same person, after the address changed


def test_engagement_pull_is_incremental_with_stable_event_ids(mc):
    conn = connect(mc)
    run1 = T0 + timedelta(minutes=1)
    pages = list(conn.pull_engagement(None, run1))
    events = [e for p in pages for e in p.events]
    kinds = Counter(e.type for e in events)
    assert kinds["email_sent"] > 0 and kinds["email_open"] > 0 and kinds["email_click"] > 0
    assert len({e.event_id for e in events}) == len(events)
    assert all(e.occurred_at < run1 and e.contact_vendor_id for e in events)
    assert pages[-1].cursor == (run1 - S.CURSOR_OVERLAP).isoformat()
    again = [e.event_id for p in conn.pull_engagement(None, run1) for e in p.events]
    assert sorted(again) == sorted(e.event_id for e in events)
    assert [e for p in conn.pull_engagement(pages[-1].cursor, run1 + timedelta(hours=1)) for e in p.events] == []

    from sandbox.mailchimp.state import CampaignRecord

    member = next(m for m in mc.mailchimp.state.members.values() if m.status == "subscribed")
    sent_at, opened_at = T0 + timedelta(hours=2), T0 + timedelta(hours=3)
    with mc.mailchimp.state.lock:
        mc.mailchimp.state.campaigns["newcamp001"] = CampaignRecord("newcamp001", "New", sent_at, {
            member.unique_email_id: [{"action": "open", "type": "", "timestamp": opened_at, "ip": ""}]})
    new = [e for p in conn.pull_engagement(pages[-1].cursor, T0 + timedelta(hours=4)) for e in p.events]
    assert sorted((e.type, e.occurred_at, e.contact_vendor_id) for e in new) == [
        ("email_open", opened_at, member.unique_email_id), ("email_sent", sent_at, member.unique_email_id)]


# ---------------------------------------------------------------------------------------- push


def test_ten_thousand_tag_changes_cost_tens_of_calls(make_sandbox):
    sb = make_sandbox(contacts=30, seed=3)
    emails = add_members(sb, 10_000, T0 - timedelta(days=1))
    conn = connect(sb)
    sb.calls.clear()
    results = conn.push_tags([TagChange(e, active=("segsync:a",), inactive=("segsync:b",)) for e in emails])
    budget = math.ceil(10_000 / 500) + 5
    assert Counter(r.outcome for r in results) == {"sent": 10_000}
    assert sb.calls.count("mailchimp") <= budget, sb.calls.by_endpoint("mailchimp")
    assert len(sb.mailchimp.segment_members("segsync:a")) == 10_000
    # The pipeline's way: 500 changes per call.
    sb.calls.clear()
    conn2 = connect(sb)
    for i in range(0, 10_000, 500):
        chunk = conn2.push_tags([TagChange(e, active=("segsync:c",)) for e in emails[i : i + 500]])
        assert {r.outcome for r in chunk} == {"sent"}
    assert sb.calls.count("mailchimp") <= budget, sb.calls.by_endpoint("mailchimp")
    assert len(sb.mailchimp.segment_members("segsync:c")) == 10_000
    assert_never_subscribed(sb)


def test_rerun_with_no_changes_makes_no_write_calls(mc):
    conn = connect(mc)
    emails = members_by_status(mc, "subscribed")[:20]
    assert {r.outcome for r in conn.push_tags([TagChange(e, active=("segsync:a",)) for e in emails])} == {"sent"}
    assert {r.outcome for r in conn.sync_segment("segsync high", emails, [])} == {"sent"}
    mc.calls.clear()
    rerun = connect(mc)
    list(rerun.pull_members(T0.isoformat(), T0 + timedelta(minutes=1)))
    assert rerun.push_tags([]) == [] and rerun.sync_segment("segsync high", [], []) == []
    assert rerun.push_tags([TagChange(emails[0])])[0].outcome == "skipped"
    assert mc.calls.writes("mailchimp") == []


def test_unsubscribed_and_cleaned_members_get_no_tag_or_segment_change(mc):
    conn = connect(mc)
    subscribed = members_by_status(mc, "subscribed")
    gone = subscribed[0]
    conn.push_tags([TagChange(gone, active=("segsync:a",))])
    mc.clock.now = T0 + timedelta(minutes=1)
    mc.mailchimp.unsubscribe(gone)
    cleaned = members_by_status(mc, "cleaned")[0]
    mc.calls.clear()
    conn = connect(mc)
    tags = conn.push_tags([TagChange(gone, inactive=("segsync:a",), active=("segsync:b",)),
                           TagChange(cleaned, active=("segsync:b",)), TagChange(subscribed[1], active=("segsync:b",))])
    seg = conn.sync_segment("segsync high", [gone, subscribed[1]], [cleaned])
    assert [(r.outcome, r.message) for r in tags] == [("suppressed", "unsubscribed at Mailchimp"),
                                                      ("suppressed", "cleaned at Mailchimp"), ("sent", "")]
    assert [r.outcome for r in seg] == ["suppressed", "sent", "suppressed"]
    assert mc.mailchimp.tags(gone) == {"segsync:a"}  # untouched since the unsubscribe
    sent = json.dumps([c.body for c in mc.calls.writes("mailchimp")])
    for member in (gone, cleaned):
        assert member.lower() not in sent.lower() and subscriber_hash(member) not in sent


def test_case_variant_duplicates_are_one_member(mc):
    conn = connect(mc)
    email = members_by_status(mc, "subscribed")[5]
    variants = [email.upper(), f"  {email.lower()} ", email]
    assert len({subscriber_hash(v) for v in variants}) == 1
    mc.calls.clear()
    results = conn.push_tags([TagChange(variants[0], active=("segsync:a",)),
                              TagChange(variants[1], active=("segsync:b",))])
    assert [(r.key, r.outcome) for r in results] == [(variants[0], "sent"), (variants[1], "sent")]
    assert mc.mailchimp.tags(email) == {"segsync:a", "segsync:b"}
    seg = conn.sync_segment("segsync high", variants, [])
    assert [r.outcome for r in seg] == ["sent"] * 3
    adds = [c.body["members_to_add"] for c in mc.calls.writes("mailchimp") if "members_to_add" in (c.body or {})]
    assert adds and all(a == [email.lower()] for a in adds)  # one member per call, never two variants


def test_absent_members_are_reported_or_invited_as_pending_only_when_asked(mc):
    conn = connect(mc)
    results = conn.push_tags([TagChange("Nobody@Example.com", active=("segsync:a",)), TagChange("not-an-email")])
    assert next((r.outcome, r.message) for r in results) == ("suppressed", "not in the audience")
    assert results[1].outcome == "failed" and "invalid email" in results[1].message
    assert mc.mailchimp.status("nobody@example.com") is None
    seg = conn.sync_segment("segsync high", ["nobody@example.com"], [])
    assert (seg[0].outcome, seg[0].message) == ("suppressed", "not in the audience")

    inviting = connect(mc, add_missing_as_pending=True)
    r = inviting.push_tags([TagChange("Nobody@Example.com", active=("segsync:a",))])[0]
    assert r.outcome == "sent" and "pending" in r.message
    assert mc.mailchimp.status("nobody@example.com") == "pending"
    assert mc.mailchimp.tags("nobody@example.com") == {"segsync:a"}
    s = inviting.sync_segment("segsync high", ["other@example.com"], [])[0]
    assert s.outcome == "sent" and mc.mailchimp.status("other@example.com") == "pending"
    assert "other@example.com" in mc.mailchimp.segment_members("segsync high")
    statuses = [m.get("status") for c in mc.calls.writes("mailchimp") for m in (c.body or {}).get("members", [])]
    assert statuses and set(statuses) == {"pending"}


def test_static_segment_found_by_name_created_once_and_chunked_by_500(mc):
    emails = add_members(mc, 1200, T0 - timedelta(days=1))
    conn = connect(mc)
    mc.calls.clear()
    results = conn.sync_segment("segsync churn", emails, [])
    assert Counter(r.outcome for r in results) == {"sent": 1200}
    creates = mc.calls.count("mailchimp", "POST", f"/3.0/lists/{mc.mailchimp_list_id}/segments", 200)
    updates = [c for c in mc.calls.writes("mailchimp") if c.path.count("/segments/")]
    assert len(updates) == 3 and max(c.inputs for c in updates) == 500
    assert creates == 4  # the create plus three updates share the prefix
    again = connect(mc).sync_segment("segsync churn", emails[:10], emails[10:20])
    assert {r.outcome for r in again} == {"sent"}
    assert len(mc.mailchimp.segment_members("segsync churn")) == 1190
    assert [s.name for s in mc.mailchimp.state.segments.values()].count("segsync churn") == 1


def test_suppress_deactivates_tags_then_unsubscribes(mc):
    conn = connect(mc)
    email = members_by_status(mc, "subscribed")[7]
    conn.push_tags([TagChange(email, active=("segsync:a", "segsync:b", "theirs"))])
    mc.calls.clear()
    r = conn.suppress(email.upper(), ["segsync:a", "segsync:b", "segsync:never"])
    assert r.outcome == "sent"
    assert mc.mailchimp.status(email) == "unsubscribed" and mc.mailchimp.tags(email) == {"theirs"}
    writes = mc.calls.writes("mailchimp")
    assert [c.method for c in writes] == ["POST", "PATCH"]  # tags first, then the one status change
    assert writes[1].body == {"status": "unsubscribed"}
    mc.calls.clear()
    assert conn.suppress(email, ["segsync:a"]).outcome == "skipped"
    assert conn.suppress("nobody@example.com", []).message == "not in the audience"
    assert mc.calls.writes("mailchimp") == []


# ---------------------------------------------------------------------------------------- errors


def test_bad_key_and_bad_list_are_fatal_and_named(mc):
    wrong_key = "0" * 32 + "-us6"
    bad = MailchimpConnector(wrong_key, mc.mailchimp_list_id, mc.mailchimp_url, retry=FAST)
    with pytest.raises(FatalApiError) as key_error:
        list(bad.pull_members(None, T0))
    assert "API key" in str(key_error.value) and wrong_key not in str(key_error.value)
    assert "API Key Invalid" in str(key_error.value) and "\"title\"" not in str(key_error.value)  # decoded
    nolist = connect(mc).__class__(mc.mailchimp_key, "nosuchlist", mc.mailchimp_url, retry=FAST)
    with pytest.raises(FatalApiError) as list_error:
        nolist.push_tags([TagChange("a@example.com", active=("x",))])
    assert "'nosuchlist'" in str(list_error.value) and "esp.list_id" in str(list_error.value)
    assert mc.mailchimp_key not in str(list_error.value)
    assert mc.calls.writes("mailchimp") == []


def test_base_url_comes_from_the_key_suffix():
    conn = MailchimpConnector("abc123-us21", "list1")
    assert conn.client.base_url == "https://us21.api.mailchimp.com/3.0"
    with pytest.raises(ConfigError, match="data center"):
        MailchimpConnector("nodatacenter", "list1")
    assert "abc123" not in repr(conn)


def test_compliance_refusal_is_a_rejected_record_never_retried():
    error = error_for(400, COMPLIANCE, "PUT /lists/{list_id}/members/{hash}")
    assert isinstance(error, RejectedRecordError) and "Member In Compliance State" in str(error)
    conn = MailchimpConnector("k" * 32 + "-us6", "l", "http://127.0.0.1:9/3.0", retry=FAST, sleep=lambda _s: None)
    calls = []

    def refuse() -> None:
        from mailchimp_marketing.api_client import ApiClientError
        calls.append(1)
        raise ApiClientError(COMPLIANCE, 400)

    with pytest.raises(RejectedRecordError):
        conn.client.sdk("members.update", "PUT member", refuse)
    assert len(calls) == 1 and conn.stats()["retries"] == 0
    verdict = _op_verdict({"operation_id": "x", "status_code": 400, "response": COMPLIANCE}, "b1")
    assert verdict[0] == "suppressed" and verdict[1].startswith("Member In Compliance State")


def test_problem_json_is_decoded_with_field_errors():
    body = {"title": "Invalid Resource", "status": 400, "detail": "The resource submitted could not be validated.",
            "errors": [{"field": "email_address", "message": "This value should not be blank."}]}
    assert problem_detail(body, "") == ("Invalid Resource: The resource submitted could not be validated. "
                                        "(email_address: This value should not be blank.)")
    assert problem_detail(None, "<html>bad gateway</html>") == "<html>bad gateway</html>"


def test_bad_member_record_is_a_clear_input_error():
    with pytest.raises(InputError, match="member 3"):
        member_contact({"status": "subscribed"}, "GET /lists/x/members member 3")
    with pytest.raises(InputError, match="last_changed"):
        member_contact({"email_address": "a@b.co", "unique_email_id": "u", "last_changed": "yesterday"}, "m")


def test_transient_errors_and_429_are_retried_by_the_shared_policy(mc):
    conn = connect(mc)
    mc.faults["mailchimp"].set(storm=2)
    contacts, _ = pull_all(conn, None, T0)
    assert len(contacts) == len(mc.mailchimp.state.members)
    mc.faults["mailchimp"].set(error_rate=1.0, error_status=503, only_paths=("/3.0/lists/",))
    r = conn.suppress(members_by_status(mc, "subscribed")[0], [])
    mc.faults["mailchimp"].reset()
    stats = conn.stats()
    assert stats["rate_limited"] >= 2 and stats["retries"] >= 2 + 3
    assert r.outcome == "failed" and "503" in r.message and mc.mailchimp_key not in r.message


def test_never_more_than_ten_connections_per_key(make_sandbox):
    sb = make_sandbox(contacts=30, seed=5, mailchimp_delay=0.05)
    conns = [connect(sb) for _ in range(3)]  # three connectors, one key: one shared limit
    errors: list[BaseException] = []

    def hammer(conn: MailchimpConnector) -> None:
        try:
            for _ in range(4):
                conn.client.get_list(sb.mailchimp_list_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(conns[i % 3],)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert 2 <= sb.mailchimp.peak_in_flight <= S.MAX_CONNECTIONS and sb.mailchimp.rejected == 0


def test_batch_route_reads_per_operation_results(mc):
    """Many tags per member make /batches cheaper than one segment call per tag: results come per operation."""
    emails = members_by_status(mc, "subscribed")[:30]
    many = tuple(f"segsync:t{i}" for i in range(8))
    changes = [TagChange(e, active=many) for e in emails] + [TagChange("ghost@example.com", active=many[:1])]
    mc.calls.clear()
    results = connect(mc).push_tags(changes)
    assert mc.calls.count("mailchimp", "POST", "/3.0/batches") == 1
    # Each new tag is created once, on its own, so that segsync knows it made it (then never again).
    assert mc.calls.count("mailchimp", "POST", f"/3.0/lists/{mc.mailchimp_list_id}/segments") == len(many)
    assert [r.outcome for r in results[:-1]] == ["sent"] * 30
    assert (results[-1].outcome, results[-1].message) == ("suppressed", "not in the audience")
    assert all(mc.mailchimp.tags(e) == set(many) for e in emails)
    invited = connect(mc, add_missing_as_pending=True).push_tags(changes[-1:])
    assert invited[0].outcome == "sent" and mc.mailchimp.status("ghost@example.com") == "pending"


class _RefusingClient:
    """A stand-in for MailchimpClient.update_segment: refuses any request that carries a bad address."""

    def __init__(self, bad: set[str]) -> None:
        self.bad, self.calls = bad, 0

    def update_segment(self, _list: str, _seg: int, add: list[str], remove: list[str]) -> dict[str, Any]:
        self.calls += 1
        if self.bad & set(add + remove):
            raise RejectedRecordError("mailchimp answered 400: Invalid Resource: bad address", status=400)
        return {"errors": []}


def test_a_refused_segment_update_is_split_to_isolate_the_bad_record():
    from connectors.mailchimp.push import Pusher

    emails = [f"p{i}@example.com" for i in range(64)]
    fake = _RefusingClient({emails[37]})
    pusher = Pusher(fake, "l", dict)  # type: ignore[arg-type]
    verdicts = pusher._segment_call(1, [(subscriber_hash(e), e) for e in emails], [])
    failed = [h for h, v in verdicts.items() if v[0] == "failed"]
    assert failed == [subscriber_hash(emails[37])] and len(verdicts) == 64
    assert fake.calls <= 1 + 2 * 6 + 2  # log2(64) levels, two calls each
    everything = _RefusingClient(set(emails))  # a refusal of the request as a whole is not split forever
    pusher = Pusher(everything, "l", dict)  # type: ignore[arg-type]
    pusher.budget = CallBudget(6)  # three splits in halves
    assert {v[0] for v in pusher._segment_call(1, [(subscriber_hash(e), e) for e in emails], []).values()} == {"failed"}
    assert everything.calls <= 1 + 2 * 3


def test_push_failures_become_failed_records_not_exceptions(mc):
    conn = connect(mc)
    emails = members_by_status(mc, "subscribed")[:5]
    assert conn.push_tags([TagChange(emails[0], active=("segsync:a",))])[0].outcome == "sent"
    mc.faults["mailchimp"].set(error_rate=1.0, error_status=503,
                               only_paths=(f"/3.0/lists/{mc.mailchimp_list_id}/segments/",))
    tags = conn.push_tags([TagChange(e, active=("segsync:a",)) for e in emails])
    segment = conn.sync_segment("segsync:a", [], emails)
    mc.faults["mailchimp"].reset()
    for r in tags + segment:
        assert r.outcome == "failed" and "503" in r.message and "gave up" in r.message
        assert mc.mailchimp_key not in r.message
    assert conn.stats()["failures"] == 2


def test_a_host_containing_server_is_not_rewritten_by_the_sdk():
    """The SDK replaces "server" anywhere in the URL with the data center; a proxy host must survive it."""
    import responses

    with responses.RequestsMock() as rsps:
        rsps.get("https://mc-server.example.com/3.0/lists/l1", json={"id": "l1", "name": "Clients"})
        conn = MailchimpConnector("k" * 32 + "-us6", "l1", "https://mc-server.example.com/3.0", retry=FAST)
        conn.check()
        assert [c.request.url.split("?")[0] for c in rsps.calls] == ["https://mc-server.example.com/3.0/lists/l1"]
        assert rsps.calls[0].request.headers["Authorization"].startswith("Basic ")


def test_a_timeout_inside_the_sdk_is_retried(mc):
    conn = MailchimpConnector(mc.mailchimp_key, mc.mailchimp_list_id, mc.mailchimp_url, retry=FAST,
                              sleep=lambda _s: None, timeout=(2.0, 0.3))
    mc.faults["mailchimp"].set(hang_next=1, hang_seconds=0.8)
    conn.check()
    assert conn.stats()["retries"] == 1 and conn.stats()["calls"]["list"] == 2

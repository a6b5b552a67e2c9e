"""The HubSpot connector against the sandbox: pulls, schema, pushes, suppression, errors (issue 4)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from connectors.base import PropertyUpdate
from connectors.hubspot import HubSpotConnector
from connectors.hubspot.cursor import decode_contacts
from connectors.kit.http import RetrySettings
from core.errors import ConfigError, FatalApiError, InputError
from sandbox.hubspot.deals import won_stages

FAST = RetrySettings(max_attempts=6, initial_wait=0.05, max_wait=0.5, total_budget=20)
PROP = "segsync_segments"


def connect(sb, **kw) -> HubSpotConnector:
    options = {"plan": "unlimited", "settle_seconds": 0, "retry": FAST, **kw}
    return HubSpotConnector(sb.hubspot_token, sb.hubspot_url, **options)


def now() -> datetime:
    return datetime.now(UTC)


def pull(conn: HubSpotConnector, cursor: str | None, started: datetime | None = None):
    pages = list(conn.pull_contacts(cursor, started or now()))
    last = next((p.cursor for p in reversed(pages) if p.cursor), cursor)
    return pages, last


def live_ids(pages) -> list[str]:
    return [c.vendor_id for p in pages for c in p.contacts if not c.archived]


# --------------------------------------------------------------------------- pulls


def test_full_then_incremental_pull_25000_each_contact_exactly_once(make_sandbox):
    sb = make_sandbox(contacts=20, seed=3, search_per_second=None)
    sim = sb.hubspot
    ids = sim.add_contacts([{"email": f"P{i}@Example.com", "firstname": "P"} for i in range(25_000)],
                           at=now() - timedelta(days=3))
    conn = connect(sb, search_per_second=None)
    started = now()
    pages, cursor = pull(conn, None, started)
    every = {r.id for r in sim.contacts.live()}
    full = live_ids(pages)
    assert len(full) == len(set(full)) == len(every) and set(full) == every
    assert all(sum(not c.archived for c in p.contacts) <= 100 for p in pages)
    assert sb.calls.count("hubspot", "GET", "/crm/v3/objects/contacts") == len(pages) == -(-len(every) // 100)
    assert decode_contacts(cursor).ts < int(started.timestamp() * 1000)
    # Only the properties we need: never "all properties".
    first = next(c for c in sb.calls.calls if c.path == "/crm/v3/objects/contacts")
    assert "hs_email_optout" in str(first.query) and "aum" not in str(first.query)

    sim.touch_contacts(ids[5_000:17_000])  # a bulk edit: 12,000 contacts share one lastmodifieddate
    time.sleep(0.002)
    sim.touch_contacts(ids[:150])
    time.sleep(0.002)
    sb.calls.clear()
    started = now()
    pages, cursor = pull(conn, cursor, started)
    got = live_ids(pages)
    assert len(got) == len(set(got)) == 12_150
    assert set(got) == set(ids[5_000:17_000]) | set(ids[:150])
    assert emails_lowercase(pages)
    searches = [c for c in sb.calls.calls if c.path.endswith("/search")]
    assert searches and all("after" not in (c.body or {}) for c in searches)  # keyset, never the 10,000 stop
    assert all(c.status == 200 for c in searches)
    assert all(decode_contacts(p.cursor).ts < int(started.timestamp() * 1000) for p in pages if p.cursor)
    # Nothing changed: a re-run reads nothing again.
    pages, _ = pull(conn, cursor)
    assert live_ids(pages) == []


def emails_lowercase(pages) -> bool:
    return all(c.email == c.email.lower() for p in pages for c in p.contacts if c.email)


def test_incremental_resumes_from_any_stored_page_cursor(sandbox):
    sim = sandbox.hubspot
    conn = connect(sandbox)
    _, cursor = pull(conn, None)
    ids = [r.id for r in sim.contacts.live()]
    sim.touch_contacts(ids[:230])  # more than one search page at one timestamp
    time.sleep(0.002)
    sim.touch_contacts(ids[250:260])
    time.sleep(0.002)
    started = now()
    seen: list[str] = []
    pages = conn.pull_contacts(cursor, started)
    first = next(pages)  # store one page, then "crash"
    seen += [c.vendor_id for c in first.contacts if not c.archived]
    resumed, _ = pull(conn, first.cursor or cursor, started)
    seen += live_ids(resumed)
    assert sorted(seen, key=int) == sorted(ids[:230] + ids[250:260], key=int)


def test_settle_window_leaves_just_modified_contacts_for_the_next_run(sandbox):
    sim = sandbox.hubspot
    conn = connect(sandbox, settle_seconds=60)
    _, cursor = pull(conn, None)
    one = sim.contacts.live()[0].id
    sim.touch_contacts([one])
    time.sleep(0.002)
    pages, cursor = pull(conn, cursor)
    assert one not in live_ids(pages)  # modified less than 60 s before the run: next run
    pages, _ = pull(conn, cursor, now() + timedelta(seconds=61))
    assert live_ids(pages) == [one]


def test_archived_and_merged_contacts_are_handled(sandbox):
    sim = sandbox.hubspot
    conn = connect(sandbox, sweep_every=2)
    _, cursor = pull(conn, None)
    live = sim.contacts.live()
    survivor, loser, gone = live[0].id, live[1].id, live[2].id
    loser_email = live[1].properties["email"].lower()
    merged = sim.merge(survivor, loser).id  # HubSpot now merges both into a new record with a new id
    assert merged not in (survivor, loser)
    sim.archive(sim.contacts, [gone])
    time.sleep(0.002)  # the run starts after the merge (search reads lastmodifieddate < run start)
    pages, cursor = pull(conn, cursor)  # run 1: search sees the merged record, not the archived one
    contacts = [c for p in pages for c in p.contacts]
    for old in (survivor, loser):  # both old ids now point at the new record
        alias = [c for c in contacts if c.vendor_id == old]
        assert alias and alias[0].merged_into == merged and alias[0].archived
    new = next(c for c in contacts if c.vendor_id == merged)
    assert loser_email in new.previous_emails
    assert gone not in {c.vendor_id for c in contacts}
    pages, cursor = pull(conn, cursor)  # run 2: the periodic sweep of archived contacts
    swept = {c.vendor_id: c for p in pages for c in p.contacts}
    assert swept[gone].archived and swept[gone].merged_into is None
    assert not {survivor, loser} & set(swept)  # merged-away records are not listed as archived; the new one told us
    assert decode_contacts(cursor).runs == 0 and not decode_contacts(cursor).sweeping


def test_opt_outs_become_stable_consent_signals(sandbox):
    sim = sandbox.hubspot
    conn = connect(sandbox)
    pages, _ = pull(conn, None)
    signals = [s for p in pages for s in p.consent]
    assert {s.email for s in signals} == sim.optouts and signals
    assert all(s.state == "withdrawn" and s.purpose == "email_marketing" and s.source == "hubspot" for s in signals)
    again, _ = pull(connect(sandbox), None)
    assert sorted(s.vendor_event_id for p in again for s in p.consent) == sorted(s.vendor_event_id for s in signals)


def test_engagement_deals_and_page_views_with_stable_ids(sandbox):
    sim = sandbox.hubspot
    conn = connect(sandbox, event_deal_types=("deposit",), web_lookback_days=3650)  # the book is historical
    started = now()
    pages = list(conn.pull_engagement(None, started))
    events = [e for p in pages for e in p.events]
    kinds = Counter(e.type for e in events)
    # Only won deals count (closed with probability 1.0, in any pipeline); the portal also holds open deals
    # whose expected close date has passed and lost ones, in the default and a custom pipeline.
    won = won_stages()
    deposits = sum(len(d.associations.get("contacts", [])) for d in sim.deals.live()
                   if d.properties.get("dealtype") == "deposit" and d.properties.get("dealstage") in won)
    assert any(d.properties.get("dealstage") not in won for d in sim.deals.live())
    assert kinds["deposit"] == deposits > 0 and kinds["upgrade"] == 0
    # The first web-events window reaches back web_lookback_days, not to 1970.
    low = (started - timedelta(days=3650)).timestamp() * 1000
    lo, hi = sim.web_events.window(low, started.timestamp() * 1000 + 1)
    assert kinds["page_view"] == hi - lo > 0
    # Each page view keeps its page and session under the names the store reads (the high-intent features).
    views = [e for e in events if e.type == "page_view"]
    assert all(e.attributes.get("url", "").startswith("https://") and e.attributes.get("session_id") for e in views)
    assert len({e.event_id for e in events}) == len(events)
    assert pages[-1].cursor is not None
    # Email events ride on the contact pull (HubSpot keeps them as contact properties).
    contact_pages, _ = pull(conn, None)
    assert any(e.type == "email_open" for p in contact_pages for e in p.events)
    # Nothing new since the cursor: nothing again.
    again = list(conn.pull_engagement(pages[-1].cursor, now()))
    assert sum(len(p.events) for p in again) == 0


def test_a_429_storm_is_retried_and_counted(sandbox):
    conn = connect(sandbox)
    sandbox.faults["hubspot"].set(storm=3)
    pages, _ = pull(conn, None)
    assert len(live_ids(pages)) == len(sandbox.hubspot.contacts.live())
    stats = conn.stats()
    assert stats["rate_limited"] == 3 and stats["retries"] == 3


def test_a_corrupt_cursor_is_a_clear_error(sandbox):
    conn = connect(sandbox)
    with pytest.raises(InputError, match="hubspot contacts cursor"):
        list(conn.pull_contacts("nonsense", now()))
    with pytest.raises(InputError, match="not valid JSON"):
        list(conn.pull_contacts("hs1:{broken", now()))


# --------------------------------------------------------------------------- schema


def test_ensure_schema_is_idempotent_and_only_adds_options(sandbox):
    sim = sandbox.hubspot
    conn = connect(sandbox)
    conn.ensure_schema(PROP, ["high_intent", "churn_watch"], ["upgrade_propensity"])
    prop = sim.contacts.schema[PROP]
    assert (prop["type"], prop["fieldType"], prop["groupName"]) == ("enumeration", "checkbox", "segsync")
    assert sim.contacts.schema["segsync_score_upgrade_propensity"]["type"] == "number"
    sandbox.calls.clear()
    conn.ensure_schema(PROP, ["high_intent", "churn_watch"], ["upgrade_propensity"])
    assert len(sandbox.calls.calls) == 1  # one read, no writes
    conn.ensure_schema(PROP, ["new_segment"], ["upgrade_propensity"])
    values = [o["value"] for o in sim.contacts.schema[PROP]["options"]]
    assert values == ["high_intent", "churn_watch", "new_segment"]  # old options kept
    with pytest.raises(ConfigError, match="segsync needs enumeration/checkbox"):
        conn.ensure_schema("firstname", ["x"], [])
    with pytest.raises(ConfigError, match="';'"):
        conn.ensure_schema(PROP, ["a;b"], [])


# --------------------------------------------------------------------------- push


def schema_ready(sb, conn) -> list[str]:
    conn.ensure_schema(PROP, ["a", "b"], ["s"])
    return [r.id for r in sb.hubspot.contacts.live()]


def test_push_1000_changed_costs_10_batch_calls_and_unchanged_costs_none(make_sandbox):
    sb = make_sandbox(contacts=20, seed=5)
    sb.hubspot.add_contacts([{"email": f"c{i}@example.com"} for i in range(1_000)])
    conn = connect(sb)
    ids = schema_ready(sb, conn)[:1_000]
    sb.calls.clear()
    results = conn.push_properties([PropertyUpdate(i, {PROP: "a;b", "segsync_score_s": "0.42"}) for i in ids])
    assert [r.outcome for r in results] == ["sent"] * 1_000
    assert sb.calls.count("hubspot", "POST", "/crm/v3/objects/contacts/batch/update") == 10 == len(sb.calls.calls)
    assert sb.hubspot.property_values(PROP)[ids[-1]] == ["a", "b"]
    assert conn.push_properties([]) == [] and len(sb.calls.calls) == 10  # nothing changed: no call


def test_207_with_3_failures_records_exactly_those_and_sends_997(make_sandbox):
    sb = make_sandbox(contacts=20, seed=6)
    sb.hubspot.add_contacts([{"email": f"c{i}@example.com"} for i in range(1_000)])
    conn = connect(sb)
    ids = schema_ready(sb, conn)[:1_000]
    bad = {ids[10], ids[500], ids[999]}
    updates = [PropertyUpdate(i, {PROP: "zzz" if i in bad else "b"}) for i in ids]
    sb.calls.clear()
    results = conn.push_properties(updates)
    failed = [r for r in results if r.outcome == "failed"]
    assert {r.key for r in failed} == bad and len(failed) == 3
    assert all("zzz was not one of the allowed options" in r.message for r in failed)
    assert sum(r.outcome == "sent" for r in results) == 997
    assert len(sb.calls.calls) == 10
    values = sb.hubspot.property_values(PROP)
    assert sum(1 for i in ids if values.get(i) == ["b"]) == 997


def test_a_rejected_400_batch_is_split_to_isolate_the_bad_record(make_sandbox):
    sb = make_sandbox(contacts=150, seed=8, batch_errors="strict")
    conn = connect(sb)
    ids = schema_ready(sb, conn)[:100]
    sb.calls.clear()
    updates = [PropertyUpdate(i, {PROP: "oops" if n == 37 else "a"}) for n, i in enumerate(ids)]
    results = conn.push_properties(updates)
    failed = [r for r in results if r.outcome == "failed"]
    assert [r.key for r in failed] == [ids[37]] and "oops" in failed[0].message
    assert sum(r.outcome == "sent" for r in results) == 99
    assert [c.status for c in sb.calls.calls] == [400, 200]  # the bad input dropped, the rest resent once


def test_starter_limit_25000_push_under_1_percent_429_nothing_lost(make_sandbox):
    # The Starter plan's 100 requests per window, with the window shortened to 1 s to keep the test fast.
    sb = make_sandbox(contacts=20, seed=9, hubspot_plan="starter", window_seconds=1.0)
    sb.hubspot.add_contacts([{"email": f"s{i}@example.com"} for i in range(25_000)])
    conn = HubSpotConnector(sb.hubspot_token, sb.hubspot_url, plan="starter", window_seconds=1.0, retry=FAST)
    ids = schema_ready(sb, conn)
    sb.calls.clear()
    results = conn.push_properties([PropertyUpdate(i, {PROP: "a", "segsync_score_s": "0.5"}) for i in ids])
    assert len(results) == len(ids) >= 25_000 and all(r.outcome == "sent" for r in results)
    total = len(sb.calls.calls)
    limited = sb.calls.count("hubspot", status=429)
    assert limited / total < 0.01
    assert len(sb.hubspot.property_values(PROP)) == len(ids)  # nothing lost
    assert conn.stats()["calls"]["contacts.batch_update"] == total


# --------------------------------------------------------------------------- suppress and errors


def test_suppress_opts_out_and_clears_the_segment_property(sandbox):
    sim = sandbox.hubspot
    conn = connect(sandbox)
    first = next(r for r in sim.contacts.live() if r.properties["email"].lower() not in sim.optouts)
    # Before the first push the property does not exist yet: nothing to clear, the opt-out still happens.
    assert conn.suppress(first.properties["email"], first.id, PROP).outcome == "sent"
    assert first.properties["email"].lower() in sim.optouts
    conn.ensure_schema(PROP, ["a"], [])
    rec = next(r for r in sim.contacts.live() if r.properties["email"].lower() not in sim.optouts)
    conn.push_properties([PropertyUpdate(rec.id, {PROP: "a"})])
    result = conn.suppress(rec.properties["email"].upper(), rec.id, PROP)
    assert result.outcome == "sent", result.message
    assert rec.properties["email"].lower() in sim.optouts
    assert not sim.properties_of(rec.id).get(PROP)
    call = sim.unsubscribe_calls[-1]
    assert call["legalBasis"] and call["legalBasisExplanation"]
    assert conn.suppress(rec.properties["email"], rec.id, PROP).outcome == "sent"  # already done is success
    by_email = next(r for r in sim.contacts.live() if r.properties["email"].lower() not in sim.optouts)
    assert conn.suppress(by_email.properties["email"], None, PROP).outcome == "sent"
    assert by_email.properties["email"].lower() in sim.optouts


def test_401_is_fatal_names_the_token_problem_and_never_the_token(sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    bad_token = "pat-na1-wrong-0000-secret-value"
    conn = HubSpotConnector(bad_token, sandbox.hubspot_url, plan="unlimited", retry=FAST)
    with pytest.raises(FatalApiError) as err:
        list(conn.pull_contacts(None, now()))
    message = str(err.value)
    assert err.value.status == 401 and "access token" in message and "crm.objects.contacts.read" in message
    assert bad_token not in message and bad_token not in caplog.text


def test_403_is_fatal_and_names_the_missing_scope(make_sandbox):
    sb = make_sandbox(contacts=50, seed=4, scopes={"crm.objects.contacts.read", "crm.schemas.contacts.read"})
    conn = connect(sb)
    with pytest.raises(FatalApiError) as err:
        conn.push_properties([PropertyUpdate("101", {PROP: "a"})])
    assert err.value.status == 403 and "missing scope: crm.objects.contacts.write" in str(err.value)
    assert sb.hubspot_token not in str(err.value)
    assert len(sb.calls.calls) == 1  # fatal: not retried


def test_403_without_a_scope_in_the_body_names_the_scope_the_call_needs(sandbox):
    conn = connect(sandbox)
    sandbox.faults["hubspot"].set(error_rate=1.0, error_status=403)
    with pytest.raises(FatalApiError) as err:
        conn.push_properties([PropertyUpdate("101", {PROP: "a"})])
    assert err.value.status == 403 and "lacks scope crm.objects.contacts.write" in str(err.value)


def test_token_never_appears_in_rejections_or_logs(sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    conn = connect(sandbox)
    sandbox.faults["hubspot"].set(storm=2)
    conn.ensure_schema(PROP, ["a"], [])
    results = conn.push_properties([PropertyUpdate("999999", {PROP: "a"}), PropertyUpdate("101", {PROP: "bad"})])
    assert [r.outcome for r in results] == ["failed", "failed"]
    text = caplog.text + " ".join(r.message for r in results) + repr(conn.stats())
    assert sandbox.hubspot_token not in text and "retrying" in caplog.text


def test_unknown_plan_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown plan"):
        HubSpotConnector("pat-x", plan="gold")


def test_oauth_token_is_refreshed_up_front_and_once_on_a_401(sandbox):
    from connectors.hubspot import OAuthRefresh

    sim = sandbox.hubspot
    oauth = OAuthRefresh(sim.oauth_client_id, sim.oauth_client_secret, sim.oauth_refresh_token,
                         token_url=f"{sandbox.hubspot_url}/oauth/v1/token")
    conn = HubSpotConnector("an-expired-access-token", sandbox.hubspot_url, plan="unlimited", oauth=oauth, retry=FAST)
    conn.ensure_schema(PROP, ["a"], [])  # refreshed before the first call
    assert sandbox.calls.count("hubspot", "POST", "/oauth/v1/token") == 1
    sim.expire_tokens()  # the token expires mid-run
    conn.ensure_schema(PROP, ["a", "b"], [])  # 401 -> one refresh -> the call again
    assert sandbox.calls.count("hubspot", "POST", "/oauth/v1/token") == 2
    assert [o["value"] for o in sim.contacts.schema[PROP]["options"]] == ["a", "b"]
    assert sim.oauth_client_secret not in repr(oauth) and sim.oauth_refresh_token not in repr(oauth)
    wrong = OAuthRefresh(sim.oauth_client_id, sim.oauth_client_secret, "not-the-refresh-token",
                         token_url=f"{sandbox.hubspot_url}/oauth/v1/token")
    conn = HubSpotConnector("an-expired-access-token", sandbox.hubspot_url, plan="unlimited", oauth=wrong, retry=FAST)
    with pytest.raises(FatalApiError, match="OAuth token refresh was refused") as err:
        conn.ensure_schema(PROP, ["a"], [])
    assert sim.oauth_client_secret not in str(err.value) and "not-the-refresh-token" not in str(err.value)


def test_a_400_that_names_no_input_is_bisected_down_to_single_records(sandbox):
    conn = connect(sandbox, retry=RetrySettings(max_attempts=1))
    conn.ensure_schema(PROP, ["a"], [])
    ids = [r.id for r in sandbox.hubspot.contacts.live()[:4]]
    sandbox.calls.clear()
    sandbox.faults["hubspot"].set(error_rate=1.0, error_status=400)
    results = conn.push_properties([PropertyUpdate(i, {PROP: "a"}) for i in ids])
    assert [r.outcome for r in results] == ["failed"] * 4
    assert all("Simulated server error" in r.message for r in results)
    assert [c.inputs for c in sandbox.calls.calls] == [4, 2, 1, 1, 2, 1, 1]


# --------------------------------------------------------------------------- mapping and cursor (no I/O)


def test_malformed_vendor_answers_are_clear_errors():
    from connectors.hubspot import mapping as M

    with pytest.raises(InputError, match="no 'results' list"):
        M.results_of({"status": "weird"}, "GET /crm/v3/objects/contacts")
    with pytest.raises(InputError, match="no id"):
        M.to_contact({"properties": {}}, ["email"], "the contacts list")
    with pytest.raises(InputError, match=r"contact 7 .* no parseable lastmodifieddate"):
        M.modified_ms({"id": "7", "properties": {"lastmodifieddate": "yesterday"}}, "the search")
    with pytest.raises(InputError, match="amount that is not a number"):
        M.deal_event({"id": "9", "properties": {"dealtype": "deposit", "closedate": "2025-01-01T00:00:00Z",
                                                 "dealstage": "closedwon", "amount": "lots"}},
                     ["deposit"], {"closedwon"})


def test_lifecycle_dates_become_events_and_times_parse_both_formats():
    from connectors.hubspot import mapping as M

    contact = M.to_contact({"id": "5", "properties": {
        "email": " A@B.example ", "lastmodifieddate": "1735689600000",
        "hs_lifecyclestage_lead_date": "2025-01-01T00:00:00.000Z", "hs_lifecyclestage_customer_date": ""}},
        ["email", "lastmodifieddate", "hs_lifecyclestage_lead_date", "hs_lifecyclestage_customer_date"], "test")
    assert contact.email == "a@b.example"
    assert contact.updated_at == datetime(2025, 1, 1, tzinfo=UTC)
    events = M.lifecycle_events(contact)
    assert [(e.type, e.attributes["stage"]) for e in events] == [("lifecycle_stage", "lead")]
    assert events[0].event_id == "hubspot:5:lifecycle:lead:1735689600000"


def test_cursor_keyset_steps_never_page_by_offset_and_reject_loops():
    from connectors.hubspot.cursor import ContactCursor, advance, next_search

    cur = ContactCursor(phase="inc", ts=1_000, last_id=None)
    step = next_search(cur, 5_000, ["email"], 3)
    assert step is not None and step.kind == "range" and "after" not in step.body
    # A full page ending inside timestamp 2,000: only the rows before it are emitted.
    cur2, emit = advance(cur, step, [(1_500, 9), (2_000, 4), (2_000, 3)], 3)
    assert emit == {9} and (cur2.ts, cur2.last_id) == (2_000, 0)
    tie = next_search(cur2, 5_000, ["email"], 3)
    assert tie is not None and tie.kind == "tie"
    cur3, emit = advance(cur2, tie, [(2_000, 3), (2_000, 4), (2_000, 8)], 3)
    assert emit == {3, 4, 8} and cur3.last_id == 8
    with pytest.raises(InputError):
        advance(cur3, next_search(cur3, 5_000, ["email"], 3), [(2_000, 1), (2_000, 2), (2_000, 8)], 3)
    assert next_search(ContactCursor(phase="inc", ts=4_999), 5_000, [], 3) is None  # never past the cap


def test_the_client_paces_to_the_limit_the_portal_announces(make_sandbox):
    sb = make_sandbox(contacts=50, seed=12, hubspot_plan="starter", window_seconds=2.0)
    # Configured as Professional (190 per 10 s), but the portal is Starter (100 per 2 s here): its headers say so.
    conn = HubSpotConnector(sb.hubspot_token, sb.hubspot_url, plan="professional", retry=FAST)
    assert conn.client.policy.limiters["default"].per == pytest.approx(10 / (190 * 0.95))
    pull(conn, None)
    assert conn.client.policy.limiters["default"].per == pytest.approx(2.0 / (100 * 0.95))


def test_unsubscribe_many_is_one_batch_write_per_hundred_and_leaves_non_marketing_types_alone(sandbox):
    sim = sandbox.hubspot
    conn = connect(sandbox)
    live = sim.contacts.live()
    emails = [r.properties["email"] for r in live if r.properties["email"].lower() not in sim.optouts][:99]
    conn.marketing_subscriptions()  # the definitions read (one GET, cached)
    mark = len(sandbox.calls.calls)
    results = conn.unsubscribe_many([(e, None) for e in [*emails, "not-an-address"]])
    writes = [c for c in sandbox.calls.calls[mark:] if c.vendor == "hubspot" and c.method != "GET"]
    assert [c.path for c in writes] == ["/communication-preferences/v4/statuses/batch/write"]  # ceil(99/100)
    assert {results[e].outcome for e in emails} == {"sent"} and results["not-an-address"].outcome == "failed"
    for email in emails[:5]:
        assert sim.sub_status[email.lower()]["7001"]["status"] == "NOT_SUBSCRIBED"
        assert "7002" not in sim.sub_status[email.lower()] and "7003" not in sim.sub_status[email.lower()]
    assert conn.stats()["subscription_types"] == ["7001"]


def test_a_pulled_opt_out_of_a_type_without_a_purpose_withdraws_whatever_its_name(make_sandbox):
    """The pull reads the opt-out of every type not known (by purpose) to be non-marketing: on a portal whose
    types carry no purpose, "Account Insights Newsletter" - a name a regex reads as account notices - counts."""
    import requests

    sb = make_sandbox(contacts=60, seed=38, hubspot_subscription_types="legacy")
    [newsletter] = [t for t in sb.hubspot.subscriptions if t["id"] == "7003"]
    newsletter["name"] = "Account Insights Newsletter"
    email = next(str(r.properties["email"]) for r in sb.hubspot.contacts.live() if r.properties.get("email")
                 and str(r.properties.get("hs_email_optout_7003")) != "true")
    got = requests.post(sb.hubspot_url + "/communication-preferences/v3/unsubscribe", timeout=10,
                        headers={"Authorization": f"Bearer {sb.hubspot_token}"},
                        json={"emailAddress": email, "subscriptionId": "7003", "legalBasis": "NON_GDPR",
                              "legalBasisExplanation": "test"})
    assert got.status_code == 200, got.text
    pages, _ = pull(connect(sb), None)
    signals = [s for p in pages for s in p.consent if s.email == email.lower()]
    assert [(s.purpose, s.state, s.evidence["property"]) for s in signals] == [
        ("email_marketing", "withdrawn", "hs_email_optout_7003")]

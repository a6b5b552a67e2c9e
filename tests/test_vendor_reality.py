"""Issue 14, "Wrong data" items 1-9: today's connectors and pipeline against a sandbox that behaves like the vendors.

Each test drives segsync as a user would (``run_tenant`` from a config, the CLI, the webhook app over
HTTP, or a connector built from the config through the pipeline's own wiring) against the realistic
sandbox, and asserts what is correct for the vendor - never how a connector gets there. The outcomes
are read through stable surfaces: the simulators' state and call logs, the HTTP APIs and
``segsync consent status``. A test that today's connectors fail is ``xfail(strict=True)`` with the reason;
the connector fix turns it into a pass (and strict makes the stale marker fail, so it gets removed).

The connectors are being rewritten: the only places that name segsync internals are the helpers in the
first section (config -> tenant, one run, the CRM connector for a config, the webhook app).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox.common import ServerThread
from sandbox.hubspot.deals import won_stages
from sandbox.webhooks import hubspot_event, send_hubspot
from tests.configs import consent_yaml
from tests.test_e2e_sandbox import sync_once as run_once  # one scheduled run, as `segsync sync` does it

SECRET = "reality-webhook-secret-0123"
TENANT = "firm"
CONFIG = """version: 1
store: sqlite:///{db}
model_dir: {models}
tenants:
  - id: firm
    crm: {{type: hubspot, access_token: {hs_token}, base_url: {hs_url}, plan: {plan}, client_secret: {client_secret}}}
    esp: {{type: mailchimp, api_key: {mc_key}, list_id: {mc_list}, base_url: {mc_url}}}
    {consent}
    scores:
      - {{name: churn_risk, kind: churn, inactive_days: 60}}
    segments:
      - {{name: churn_watch, score: churn_risk, top_percent: 20}}
    holdout_percent: 10
    max_change_share: 0.9
"""


# ------------------------------------------------------------------ how segsync is driven (the only coupling)

def write_config(tmp_path: Path, sb, plan: str = "unlimited") -> Path:
    path = tmp_path / "segsync.yaml"
    path.write_text(CONFIG.format(
        db=tmp_path / "segsync.db", models=tmp_path / "models", hs_token=sb.hubspot_token, hs_url=sb.hubspot_url,
        plan=plan, client_secret=sb.hubspot_client_secret, mc_key=sb.mailchimp_key, mc_list=sb.mailchimp_list_id,
        mc_url=sb.mailchimp_url, consent=consent_yaml(SECRET)))
    return path


def crm_engagement(config: Path) -> list[Any]:
    """Every engagement event the tenant's CRM connector (built as the pipeline builds it) pulls on a first run."""
    from sync.config.models import load_config
    from sync.config.wiring import build_crm

    cfg = load_config(config)
    crm = build_crm(cfg.tenants[0], config.parent)
    return [e for page in crm.pull_engagement(None, datetime.now(UTC)) for e in page.events]


def segsync(*args: str) -> str:
    """The ``segsync`` command line (the user-facing contract), as a child process."""
    got = subprocess.run([sys.executable, "-m", "sync", *args], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "CI": "true"})
    assert got.returncode == 0, got.stderr[-2000:]
    return got.stdout


def consent_status(config: Path, email: str) -> dict[str, dict[str, Any]]:
    """``segsync consent status --json``: purpose -> {state, allowed, ...}."""
    out = segsync("consent", "status", str(config), "--tenant", TENANT, "--email", email, "--json")
    return {row["purpose"]: row for row in json.loads(out)["purposes"]}


def consent_record(config: Path, email: str, purpose: str, state: str) -> None:
    """``segsync consent record``: the withdrawal is queued for every vendor (the next run drains it)."""
    segsync("consent", "record", str(config), "--tenant", TENANT, "--email", email, "--purpose", purpose,
            "--state", state)


class WebhookServer:
    """segsync's webhook app (what ``segsync serve`` mounts), on a loopback port."""

    def __init__(self, config: Path) -> None:
        from sync.config import load_config
        from sync.serve import Service

        self.service = Service(load_config(config), config.parent)
        self.server = ServerThread(self.service.app(run_scheduler=False))
        self.url = self.server.url

    def stop(self) -> None:
        self.server.stop()


def as_before_objects_were_recorded(config: Path, email: str) -> None:
    """The store of an install from before segsync recorded the objects it creates: no ``vendor_objects`` rows,
    and (so that the next run adds someone) the person ``email`` never sent to the ESP's tags."""
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{config.parent / 'segsync.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM vendor_objects"))
        cid = conn.execute(sa.text("SELECT contact_id FROM identities WHERE source = 'mailchimp' AND email = :e"),
                           {"e": email}).scalar_one()
        conn.execute(sa.text("DELETE FROM last_sent WHERE destination = 'esp.tags' AND key = :k"), {"k": cid})
    engine.dispose()


def created_objects(config: Path) -> dict[str, tuple[str, str]]:
    """name -> (how, note) of the vendor objects the store records."""
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{config.parent / 'segsync.db'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT name, how, note FROM vendor_objects")).all()
    engine.dispose()
    return {r.name: (r.how, r.note) for r in rows}


# ------------------------------------------------------------------ vendor-side helpers

def hs(sb, method: str, path: str, **kw: Any) -> requests.Response:
    return requests.request(method, sb.hubspot_url + path, headers={"Authorization": f"Bearer {sb.hubspot_token}"},
                            timeout=10, **kw)


def calls_since(sb, vendor: str, mark: int) -> list[Any]:
    return [c for c in sb.calls.calls[mark:] if c.vendor == vendor]


def subscriptions_of(sb, email: str) -> dict[str, str]:
    return requests.get(sb.hubspot_url + "/_sandbox/subscriptions", params={"email": email}, timeout=10).json()[
        "statuses"
    ]


def person_in_both(sb, status: str = "subscribed") -> tuple[str, str]:
    """(email, HubSpot contact id) of a live person on both sides with this Mailchimp status and the same email."""
    for p in sb.book.people:
        cid = sb.hubspot.contact_id_for(p.key)
        if not (p.in_crm and p.in_esp and cid) or p.merged_into or sb.hubspot.contacts.records[cid].archived:
            continue
        email = sb.hubspot.properties_of(cid).get("email", "")
        if email.lower() == (p.esp_email or "").lower() and sb.mailchimp.status(email) == status \
                and sb.hubspot.properties_of(cid).get("hs_email_optout") != "true":
            return email, cid
    raise AssertionError(f"the book has nobody in both systems who is {status}")


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


# ------------------------------------------------------------------ 1. deals

def test_1_only_won_deals_in_any_pipeline_become_deposits_and_upgrades(make_sandbox, tmp_path):
    sb = make_sandbox(contacts=150, seed=31, hubspot_deal_noise=True)
    config = write_config(tmp_path, sb)
    won = won_stages()
    want = set()
    for deal in sb.hubspot.deals.records.values():
        if deal.properties["dealstage"] in won:
            for contact in deal.associations.get("contacts", []):
                want.add((contact, deal.properties["dealtype"], parse(deal.properties["closedate"])))
    assert len({d.properties["dealstage"] for d in sb.hubspot.deals.records.values()} - won) >= 4, \
        "the sandbox must hold open and lost deals for this test to mean anything"
    got = {(e.contact_vendor_id, e.type, e.occurred_at) for e in crm_engagement(config)
           if e.type in ("deposit", "upgrade")}
    assert got == want


# ------------------------------------------------------------------ 2. one namespace for tags and static segments

def test_2_a_customer_tag_named_like_a_segment_is_never_touched(make_sandbox, tmp_path):
    sb = make_sandbox(contacts=600, seed=32, mailchimp_customer_tags=("churn_watch",))  # enough to score
    config = write_config(tmp_path, sb)
    theirs = sb.mailchimp.segment_members("churn_watch")
    assert theirs
    report = run_once(config)
    assert sb.mailchimp.segment_members("churn_watch") == theirs, "segsync changed the customer's tag"
    ours = [s.name for s in sb.mailchimp.state.segments.values() if s.name != "churn_watch" and "churn_watch" in s.name]
    assert len(ours) == 1, f"one segsync object per segment, not {ours}"
    assert report["status"] in ("ok", "failed_records"), report


def test_2_a_customer_tag_inside_segsyncs_namespace_is_refused_by_name_until_adopted(make_sandbox, tmp_path):
    """The advisor made "segsync:churn_watch" by hand (or an old install did): segsync adds nobody to it and the
    run says which tag and how to resolve it; listed under esp.adopt, it is written to."""
    tag = "segsync:churn_watch"
    sb = make_sandbox(contacts=600, seed=32, mailchimp_customer_tags=(tag,))
    config = write_config(tmp_path, sb)
    theirs = sb.mailchimp.segment_members(tag)
    report = run_once(config)
    assert sb.mailchimp.segment_members(tag) == theirs, "segsync added members to a tag it did not create"
    assert report["status"] == "failed_records", report["status"]
    tag_failures = [f for f in report["push"]["failures"] if f["destination"] == "esp.tags"]
    assert tag_failures and all(repr(tag) in f["message"] and "esp.adopt" in f["message"] for f in tag_failures)
    config.write_text(config.read_text().replace(f"list_id: {sb.mailchimp_list_id},",
                                                 f"list_id: {sb.mailchimp_list_id}, adopt: ['{tag}'],"))
    report = run_once(config)
    assert report["status"] == "ok", report["push"]["failures"][:3]
    assert sb.mailchimp.segment_members(tag) > theirs


def test_2_after_an_upgrade_segsyncs_own_tag_is_adopted_because_it_holds_only_what_segsync_sent(
        make_sandbox, tmp_path):
    tag = "segsync:churn_watch"
    sb = make_sandbox(contacts=600, seed=32)
    config = write_config(tmp_path, sb)
    assert run_once(config)["status"] == "ok"
    assert created_objects(config)[tag][0] == "created"
    email = sorted(sb.mailchimp.segment_members(tag))[0]
    as_before_objects_were_recorded(config, email)
    sb.mailchimp.state.segment_by_name(tag).members.discard(sb.mailchimp.state.find(email).unique_email_id)
    report = run_once(config)
    assert report["status"] == "ok", report["push"]["failures"][:3]
    assert email in sb.mailchimp.segment_members(tag)
    how, note = created_objects(config)[tag]
    assert how == "adopted" and "upgrade" in note


def test_2_a_crm_property_a_user_made_is_refused_not_overwritten(make_sandbox, tmp_path):
    """The advisor made "segsync_segments" by hand in HubSpot: segsync never writes it, each contact it would have
    written fails naming the property and how to resolve it, and the rest of the run (Mailchimp) goes on."""
    sb = make_sandbox(contacts=600, seed=32, hubspot_customer_properties=("segsync_segments",))
    config = write_config(tmp_path, sb)
    before = sb.hubspot.property_values("segsync_segments")
    report = run_once(config)
    assert report["status"] == "failed_records", report.get("error")
    crm = [f for f in report["push"]["failures"] if f["destination"] == "crm.properties"]
    assert crm and all("'segsync_segments'" in f["message"] and "crm.adopt_properties" in f["message"] for f in crm)
    assert sb.hubspot.property_values("segsync_segments") == before
    assert {o["value"] for o in sb.hubspot.contacts.schema["segsync_segments"]["options"]} == {"vip", "prospect"}
    assert sb.mailchimp.segment_members("segsync:churn_watch"), "the Mailchimp push did not go on"


# ------------------------------------------------------------------ 3. engagement counts and web analytics

def test_3_contact_reads_carry_engagement_counts_and_web_analytics(make_sandbox, tmp_path):
    sb = make_sandbox(contacts=150, seed=33)
    config = write_config(tmp_path, sb)
    mark = len(sb.calls.calls)
    run_once(config)
    reads = [
        c
        for c in calls_since(sb, "hubspot", mark)
        if (c.path == "/crm/v3/objects/contacts" and c.method == "GET") or c.path == "/crm/v3/objects/contacts/search"
    ]
    assert reads
    wanted = ("hs_email_open", "hs_email_click", "hs_email_delivered", "hs_analytics_num_page_views",
              "hs_analytics_num_visits", "hs_analytics_last_visit_timestamp")
    for call in reads:
        asked = json.dumps(call.query) + json.dumps(call.body)
        missing = [name for name in wanted if f'"{name}"' not in asked and f"{name}," not in asked
                   and f",{name}" not in asked]
        assert not missing, f"{call.method} {call.path} does not ask for {missing}"


# ------------------------------------------------------------------ 4. web analytics events below Enterprise

def test_4_a_professional_portal_is_asked_for_web_events_at_most_once(make_sandbox, tmp_path):
    sb = make_sandbox(contacts=150, seed=34, hubspot_plan="professional", hubspot_tier="professional")
    config = write_config(tmp_path, sb, plan="professional")
    run_once(config)
    run_once(config)
    asked = [c for c in sb.calls.calls if c.vendor == "hubspot" and c.path == "/events/v3/events"]
    assert all(c.status == 403 for c in asked)
    assert len(asked) <= 1, f"{len(asked)} refused calls to the events API over two runs"


def test_4_the_first_web_events_window_is_bounded(make_sandbox, tmp_path):
    sb = make_sandbox(contacts=150, seed=34)
    config = write_config(tmp_path, sb)
    run_once(config)
    asked = [c for c in sb.calls.calls if c.vendor == "hubspot" and c.path == "/events/v3/events"]
    assert asked
    first = parse(str(asked[0].query.get("occurredAfter")))
    assert first > datetime(2000, 1, 1, tzinfo=UTC), f"the first window starts at {first}"


# ------------------------------------------------------------------ 5. merges make a new id

def test_5_a_withdrawal_after_a_merge_clears_the_merged_record(make_sandbox, tmp_path):
    sb = make_sandbox(contacts=600, seed=35, hubspot_merge_new_id=True)  # enough people to score and segment
    config = write_config(tmp_path, sb)
    run_once(config)
    tagged = sb.hubspot.property_values("segsync_segments")
    assert tagged, "run 1 pushed no segments: nothing to follow through a merge"
    primary = next(iter(tagged))
    other = next(r.id for r in sb.hubspot.contacts.live() if r.id not in tagged)
    email = sb.hubspot.properties_of(primary)["email"]
    merged = sb.hubspot.merge_contacts(primary, other)
    assert merged.id not in (primary, other) and merged.properties.get("segsync_segments")
    consent_record(config, email, "profiling", "withdrawn")
    run_once(config)
    assert not sb.hubspot.properties_of(merged.id).get("segsync_segments"), \
        "the merged record still carries segments after the person withdrew profiling"


# ------------------------------------------------------------------ 6. webhooks

@pytest.fixture
def hooked(make_sandbox, tmp_path):
    """A sandbox, a first run (so segsync knows the contacts) and segsync's webhook app serving."""
    sb = make_sandbox(contacts=150, seed=36)
    config = write_config(tmp_path, sb)
    run_once(config)
    server = WebhookServer(config)
    yield sb, config, server
    server.stop()


def test_6_contact_restore_undoes_contact_deletion(hooked):
    sb, config, server = hooked
    email, cid = person_in_both(sb)
    url = server.url + f"/hooks/{TENANT}/hubspot"
    sb.hubspot.archive_contacts([cid])
    assert send_hubspot(url, [hubspot_event("contact.deletion", cid)], sb.hubspot_client_secret).status_code < 300
    assert not consent_status(config, email)["profiling"]["allowed"]
    sb.hubspot.restore_contacts([cid])
    assert send_hubspot(url, [hubspot_event("contact.restore", cid)], sb.hubspot_client_secret).status_code < 300
    assert consent_status(config, email)["profiling"]["allowed"]


def test_6_an_admin_subscribe_webhook_is_not_consent(hooked):
    sb, config, server = hooked
    sb.mailchimp.add_webhook(server.url + f"/hooks/{TENANT}/mailchimp/{SECRET}")
    sb.mailchimp.admin_subscribe("walk.in@example.org", first_name="Walk")
    assert sb.mailchimp.wait_for_webhooks()
    assert [d["status"] for d in sb.mailchimp.webhook_deliveries][-1] == 200
    assert not consent_status(config, "walk.in@example.org")["email_marketing"]["allowed"]


def test_6_a_marketing_subscription_opt_out_webhook_withdraws_email_marketing(hooked):
    sb, config, server = hooked
    email, cid = person_in_both(sb)
    got = hs(sb, "POST", "/communication-preferences/v3/unsubscribe", json={
        "emailAddress": email, "subscriptionId": "7001", "legalBasis": "NON_GDPR", "legalBasisExplanation": "test"})
    assert got.status_code == 200
    event = hubspot_event("contact.propertyChange", cid, property_name="hs_email_optout_7001", property_value="true")
    assert send_hubspot(server.url + f"/hooks/{TENANT}/hubspot", [event], sb.hubspot_client_secret).status_code < 300
    assert not consent_status(config, email)["email_marketing"]["allowed"]


@pytest.mark.parametrize("subscription", ["7002", "7003"], ids=["one_to_one", "account_notices"])
def test_6_a_non_marketing_subscription_opt_out_webhook_is_not_a_marketing_withdrawal(hooked, subscription):
    """One-to-One (7002) and service notices (7003) are not marketing: opting out of one leaves email marketing
    as it was (the pull path reads only marketing types' opt-outs too)."""
    sb, config, server = hooked
    email, cid = person_in_both(sb)
    assert consent_status(config, email)["email_marketing"]["allowed"], "nothing to keep: pick another person"
    got = hs(sb, "POST", "/communication-preferences/v3/unsubscribe", json={
        "emailAddress": email, "subscriptionId": subscription, "legalBasis": "NON_GDPR",
        "legalBasisExplanation": "test"})
    assert got.status_code == 200
    event = hubspot_event("contact.propertyChange", cid, property_name=f"hs_email_optout_{subscription}",
                          property_value="true")
    assert send_hubspot(server.url + f"/hooks/{TENANT}/hubspot", [event], sb.hubspot_client_secret).status_code < 300
    assert consent_status(config, email)["email_marketing"]["allowed"]


def optout_webhook(sb, config: Path, crm_extra: str, subscription: str) -> tuple[str, dict[str, Any]]:
    """Serve segsync's webhook from a config with ``crm_extra`` added to the crm block, send one HubSpot opt-out
    of ``subscription`` for a person in both systems; (their email, their consent status after)."""
    config.write_text(config.read_text().replace(f"client_secret: {sb.hubspot_client_secret}",
                                                 f"client_secret: {sb.hubspot_client_secret}, {crm_extra}"))
    server = WebhookServer(config)
    try:
        email, cid = person_in_both(sb)
        assert consent_status(config, email)["email_marketing"]["allowed"]
        event = hubspot_event("contact.propertyChange", cid, property_name=f"hs_email_optout_{subscription}",
                              property_value="true")
        url = server.url + f"/hooks/{TENANT}/hubspot"
        assert send_hubspot(url, [event], sb.hubspot_client_secret).status_code < 300
    finally:
        server.stop()
    return email, consent_status(config, email)


def test_6_configured_marketing_subscriptions_decide_without_a_call(make_sandbox, tmp_path):
    sb = make_sandbox(contacts=150, seed=36)
    config = write_config(tmp_path, sb)
    run_once(config)
    mark = len(sb.calls.calls)
    _, status = optout_webhook(sb, config, "marketing_subscriptions: [7002]", "7002")  # the advisor says so
    assert not status["email_marketing"]["allowed"]
    assert not [c for c in calls_since(sb, "hubspot", mark) if c.path.startswith("/communication-preferences")]


def test_6_unreadable_subscription_types_fail_closed(make_sandbox, tmp_path):
    sb = make_sandbox(contacts=150, seed=36)
    config = write_config(tmp_path, sb)
    run_once(config)
    config.write_text(config.read_text().replace(f"base_url: {sb.hubspot_url}", "base_url: http://127.0.0.1:9"))
    _, status = optout_webhook(sb, config, "web_events_lookback_days: 365", "7002")  # One-to-One; types unknown
    assert not status["email_marketing"]["allowed"], "when segsync cannot tell, a per-type opt-out must count"


def test_6_an_opt_out_of_a_type_created_after_the_definitions_were_read_withdraws(make_sandbox, tmp_path):
    """A marketing type the portal gained since segsync read its definitions (cached for an hour) is not known
    to be non-marketing: its opt-out counts."""
    sb = make_sandbox(contacts=150, seed=36)
    config = write_config(tmp_path, sb)
    run_once(config)
    _, status = optout_webhook(sb, config, "web_events_lookback_days: 365", "7099")  # no such type when read
    assert not status["email_marketing"]["allowed"]


def test_6_a_name_never_excludes_a_type_without_a_purpose(make_sandbox, tmp_path):
    """On a portal whose types carry no purpose, a name that reads like a notice ("Account Insights Newsletter")
    may be marketing: its opt-out withdraws email marketing."""
    sb = make_sandbox(contacts=150, seed=36, hubspot_subscription_types="legacy")
    sb.hubspot.subscriptions.append({**sb.hubspot.subscriptions[0], "id": "7004",
                                     "name": "Account Insights Newsletter", "isDefault": False})
    config = write_config(tmp_path, sb)
    run_once(config)
    _, status = optout_webhook(sb, config, "web_events_lookback_days: 365", "7004")
    assert not status["email_marketing"]["allowed"]


# ------------------------------------------------------------------ 7. subscription types

def test_7_opt_out_propagation_leaves_one_to_one_and_notices_alone(make_sandbox, tmp_path):
    sb = make_sandbox(contacts=200, seed=37, hubspot_subscription_types="legacy")
    config = write_config(tmp_path, sb)
    run_once(config)
    email, _ = person_in_both(sb)
    consent_record(config, email, "email_marketing", "withdrawn")
    run_once(config)
    statuses = subscriptions_of(sb, email)
    assert statuses["7001"] == "NOT_SUBSCRIBED", "the opt-out must reach the marketing type"
    assert statuses["7002"] == "SUBSCRIBED", "One-to-One is not marketing"
    assert statuses["7003"] == "SUBSCRIBED", "account notices are not marketing"


def test_7_opt_out_propagation_reaches_the_marketing_type(make_sandbox, tmp_path):
    sb = make_sandbox(contacts=200, seed=37)
    config = write_config(tmp_path, sb)
    run_once(config)
    email, _ = person_in_both(sb)
    consent_record(config, email, "email_marketing", "withdrawn")
    run_once(config)
    assert subscriptions_of(sb, email) == {"7001": "NOT_SUBSCRIBED", "7002": "SUBSCRIBED", "7003": "SUBSCRIBED"}


# ------------------------------------------------------------------ 8. rate limits

def test_8_a_run_stays_inside_the_limit_the_headers_announce(make_sandbox, tmp_path):
    # A public OAuth app's limit differs from the plan's; the burst is lowered so the test stays fast.
    sb = make_sandbox(contacts=300, seed=38, hubspot_plan="professional", hubspot_app_type="oauth",
                      hubspot_burst_limit=8, window_seconds=2)
    config = write_config(tmp_path, sb, plan="professional")
    run_once(config)
    refused = [c for c in sb.calls.calls if c.vendor == "hubspot" and c.status == 429]
    assert refused == [], f"{len(refused)} calls refused with 429"


# ------------------------------------------------------------------ 9. incremental reads

def test_9_a_no_change_run_reads_deals_incrementally(make_sandbox, tmp_path):
    sb = make_sandbox(contacts=300, seed=39)
    config = write_config(tmp_path, sb)
    run_once(config)
    assert len(sb.hubspot.deals.records) > 200, "several pages of deals, or the test proves nothing"
    mark = len(sb.calls.calls)
    run_once(config)
    deal_reads = [c for c in calls_since(sb, "hubspot", mark) if c.path.startswith("/crm/v3/objects/deals")]
    assert len(deal_reads) <= 1, f"{len(deal_reads)} deal reads in a run with no change"


def test_9_a_no_change_run_reads_mailchimp_members_incrementally(make_sandbox, tmp_path):
    sb = make_sandbox(contacts=300, seed=39)
    config = write_config(tmp_path, sb)
    run_once(config)
    mark = len(sb.calls.calls)
    run_once(config)
    member_reads = [c for c in calls_since(sb, "mailchimp", mark)
                    if c.method == "GET" and c.path.endswith("/members")]
    assert member_reads
    assert all(c.query.get("since_last_changed") for c in member_reads), \
        [c.query for c in member_reads if not c.query.get("since_last_changed")]


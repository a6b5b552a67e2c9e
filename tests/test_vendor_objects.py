"""Issue 14, item 2 (second half): segsync adds members only to vendor objects it created or was given.

Mailchimp: a tag (static segment) under one of segsync's names that segsync did not create - made by hand,
or by an install from before segsync recorded what it creates - is refused by name, unless the config
adopts it or (the upgrade rule) its members are exactly the ones segsync last sent to it. HubSpot: a contact
property under one of segsync's names made by a user in HubSpot is refused, never overwritten.
Connectors run against the sandbox over HTTP; the record of created objects is the tenant's store.
"""

from __future__ import annotations

from typing import Any

import pytest

from connectors.base import ADOPTED, CREATED, CREATING, MemoryLedger, PropertyUpdate, TagChange, VendorObject
from connectors.kit import RetrySettings
from connectors.mailchimp import MailchimpConnector

FAST = RetrySettings(max_attempts=4, initial_wait=0.0, max_wait=0.0, total_budget=30.0)
TAG = "segsync:churn_watch"


class Ledger(MemoryLedger):
    """A ledger with the upgrade rule's input: what segsync last sent to each tag."""

    def __init__(self, sent: dict[str, set[str]] | None = None) -> None:
        super().__init__()
        self.sent = sent or {}

    def sent_to(self, kind: str, name: str) -> set[str] | None:
        return self.sent.get(name)


def connect(sb: Any, ledger: Ledger | None = None, **kwargs: Any) -> tuple[MailchimpConnector, Ledger]:
    conn = MailchimpConnector(sb.mailchimp_key, sb.mailchimp_list_id, sb.mailchimp_url, retry=FAST,
                              sleep=lambda _s: None, **kwargs)
    ledger = ledger or Ledger()
    conn.use_objects(ledger)
    return conn, ledger


@pytest.fixture
def mc(make_sandbox):
    """A sandbox whose audience already holds the advisor's own tag named like segsync's."""
    return make_sandbox(contacts=300, seed=61, mailchimp_customer_tags=(TAG,))


def outsider(sb: Any) -> str:
    """A subscribed member who is not in the customer's tag."""
    theirs = sb.mailchimp.segment_members(TAG)
    return next(m.email for m in sb.mailchimp.state.members.values() if m.status == "subscribed" and m.email
                not in theirs)


def test_a_customer_tag_under_segsyncs_name_is_refused_by_name(mc):
    theirs = mc.mailchimp.segment_members(TAG)
    conn, ledger = connect(mc)
    email = outsider(mc)
    [tagged] = conn.push_tags([TagChange(email, active=(TAG,))])
    [segmented] = conn.sync_segment(TAG, [email], [])
    for result in (tagged, segmented):
        assert result.outcome == "failed"
        assert repr(TAG) in result.message and "esp.adopt" in result.message and "did not create" in result.message
    assert mc.mailchimp.segment_members(TAG) == theirs
    assert ledger.objects("tag", mc.mailchimp_list_id) == {}


def test_a_tag_segsync_creates_is_recorded_and_written_again_by_a_later_connector(mc):
    conn, ledger = connect(mc)
    email = outsider(mc)
    [r] = conn.push_tags([TagChange(email, active=("segsync:upgrade_intent",))])
    assert r.outcome == "sent", r
    rec = ledger.objects("tag", mc.mailchimp_list_id)["segsync:upgrade_intent"]
    assert rec.how == CREATED and rec.vendor_id
    later, _ = connect(mc, ledger)  # the next run: a new connector, the same (stored) record
    other = next(e for e in mc.mailchimp.segment_members(TAG) if e != email)
    assert [x.outcome for x in later.sync_segment("segsync:upgrade_intent", [other], [])] == ["sent"]
    assert mc.mailchimp.segment_members("segsync:upgrade_intent") == {email, other}


def test_a_tag_named_under_esp_adopt_is_written_to(mc):
    conn, ledger = connect(mc, adopt=[TAG])
    email = outsider(mc)
    [r] = conn.push_tags([TagChange(email, active=(TAG,))])
    assert r.outcome == "sent", r
    assert email in mc.mailchimp.segment_members(TAG)
    assert ledger.objects("tag", mc.mailchimp_list_id)[TAG].how == ADOPTED


def test_upgrade_adopts_a_tag_holding_only_what_segsync_last_sent(mc):
    theirs = mc.mailchimp.segment_members(TAG)
    conn, ledger = connect(mc, Ledger({TAG: set(theirs)}))
    email = outsider(mc)
    [r] = conn.push_tags([TagChange(email, active=(TAG,))])
    assert r.outcome == "sent", r
    rec = ledger.objects("tag", mc.mailchimp_list_id)[TAG]
    assert rec.how == ADOPTED and "upgrade" in rec.note


def test_upgrade_refuses_an_empty_tag(mc):
    """Nothing in it says whose it is (the customer may have made it to fill it by hand)."""
    mc.mailchimp.state.segment_by_name(TAG).members.clear()
    conn, _ = connect(mc, Ledger({TAG: {outsider(mc)}}))
    [r] = conn.push_tags([TagChange(outsider(mc), active=(TAG,))])
    assert r.outcome == "failed" and repr(TAG) in r.message


def test_upgrade_refuses_a_tag_holding_anybody_segsync_did_not_send(mc):
    theirs = sorted(mc.mailchimp.segment_members(TAG))
    conn, ledger = connect(mc, Ledger({TAG: set(theirs[1:])}))  # one member is the customer's own
    email = outsider(mc)
    [r] = conn.push_tags([TagChange(email, active=(TAG,))])
    assert r.outcome == "failed" and repr(TAG) in r.message
    assert TAG not in ledger.objects("tag", mc.mailchimp_list_id)
    assert mc.mailchimp.segment_members(TAG) == set(theirs)


def test_a_create_whose_answer_was_lost_is_still_segsyncs(mc):
    """A crash after the create call and before its answer was recorded: the intent recorded first says whose."""
    ledger = Ledger()
    ledger.record(VendorObject("tag", mc.mailchimp_list_id, TAG, "", CREATING))  # the tag then appeared
    conn, _ = connect(mc, ledger)
    [r] = conn.push_tags([TagChange(outsider(mc), active=(TAG,))])
    assert r.outcome == "sent", r
    assert ledger.objects("tag", mc.mailchimp_list_id)[TAG].how == CREATED


def _free_tag_push(sb: Any, ledger: Ledger, **faults: Any) -> Any:
    """Push one member into NEW_TAG with a fresh connector (a run); ``faults`` hit the segment calls after the
    run's read of the audience's segments."""
    conn, _ = connect(sb, ledger)
    email = outsider(sb)
    conn.pusher.segment_ids()  # the run reads the audience's segments first
    if faults:
        sb.faults["mailchimp"].set(only_paths=(f"/3.0/lists/{sb.mailchimp_list_id}/segments",), **faults)
    try:
        [r] = conn.push_tags([TagChange(email, active=(NEW_TAG,))])
    finally:
        sb.faults["mailchimp"].reset()
    return r


NEW_TAG = "segsync:review_soon"


def test_a_create_that_kept_failing_is_retried_next_run_not_lost(mc):
    """Retries ran out on segsync's own create: the tag is not recorded LOST (refused forever)."""
    ledger = Ledger()
    r = _free_tag_push(mc, ledger, error_rate=1.0, error_status=503)
    assert r.outcome == "failed" and "next run" in r.message
    assert ledger.objects("tag", mc.mailchimp_list_id)[NEW_TAG].how == CREATING
    assert _free_tag_push(mc, ledger).outcome == "sent"  # the next run creates it
    assert ledger.objects("tag", mc.mailchimp_list_id)[NEW_TAG].how == CREATED


def test_a_name_conflict_on_a_retried_create_whose_first_try_landed_is_still_segsyncs(mc):
    """The first POST made the tag but its answer was cut; the retry is refused "already exists": that tag is
    segsync's own, so the next run uses it."""
    ledger = Ledger()
    r = _free_tag_push(mc, ledger, reset_next=1)
    assert mc.mailchimp.state.segment_by_name(NEW_TAG) is not None  # the first try landed
    assert ledger.objects("tag", mc.mailchimp_list_id)[NEW_TAG].how == CREATING, r
    assert _free_tag_push(mc, ledger).outcome == "sent"
    assert ledger.objects("tag", mc.mailchimp_list_id)[NEW_TAG].how == CREATED


def test_a_tag_deleted_and_made_again_outside_segsync_is_refused(mc):
    ledger = Ledger()
    ledger.record(VendorObject("tag", mc.mailchimp_list_id, TAG, "999999", CREATED))  # segsync's had another id
    conn, _ = connect(mc, ledger)
    [r] = conn.push_tags([TagChange(outsider(mc), active=(TAG,))])
    assert r.outcome == "failed" and "made again outside segsync" in r.message


def test_removing_members_is_never_refused(mc):
    """An opted-out person is taken out of a segsync-named tag even where segsync adds nobody."""
    theirs = sorted(mc.mailchimp.segment_members(TAG))
    conn, _ = connect(mc)
    [r] = conn.push_tags([TagChange(theirs[0], inactive=(TAG,))])
    assert r.outcome == "sent", r
    assert theirs[0] not in mc.mailchimp.segment_members(TAG)


# ------------------------------------------------------------------ HubSpot properties

def hubspot(sb: Any, **kwargs: Any) -> Any:
    from connectors.hubspot import HubSpotConnector

    conn = HubSpotConnector(sb.hubspot_token, sb.hubspot_url, plan="unlimited", retry=FAST, sleep=lambda _s: None,
                            **kwargs)
    ledger = Ledger()
    conn.use_objects(ledger)
    return conn, ledger


def test_a_hubspot_property_a_user_made_is_refused_not_overwritten(make_sandbox):
    sb = make_sandbox(contacts=100, seed=62, hubspot_customer_properties=("segsync_segments",))
    before = sb.hubspot.contacts.schema["segsync_segments"]["options"]
    contact, other = [r.id for r in sb.hubspot.contacts.live()][:2]
    conn, ledger = hubspot(sb)
    conn.ensure_schema("segsync_segments", ["churn_watch"], ["churn_risk"])
    [theirs, ours] = conn.push_properties([PropertyUpdate(contact, {"segsync_segments": "churn_watch"}),
                                           PropertyUpdate(other, {"segsync_score_churn_risk": "0.5"})])
    assert theirs.outcome == "failed"
    assert "'segsync_segments'" in theirs.message and "crm.adopt_properties" in theirs.message
    assert "made by HubSpot user" in theirs.message
    assert ours.outcome == "sent", ours  # the score property is segsync's own: the rest of the push goes on
    assert sb.hubspot.properties_of(other)["segsync_score_churn_risk"] == "0.5"
    assert sb.hubspot.contacts.schema["segsync_segments"]["options"] == before
    assert not sb.hubspot.properties_of(contact).get("segsync_segments")
    assert set(ledger.objects("property", "contacts")) == {"segsync_score_churn_risk"}


def test_a_hubspot_property_segsync_created_is_recorded_and_reused(make_sandbox):
    sb = make_sandbox(contacts=100, seed=62)
    conn, ledger = hubspot(sb)
    conn.ensure_schema("segsync_segments", ["churn_watch"], ["churn_risk"])
    owned = ledger.objects("property", "contacts")
    assert {n: o.how for n, o in owned.items()} == {"segsync_segments": CREATED, "segsync_score_churn_risk": CREATED}
    later, _ = hubspot(sb)
    later.use_objects(ledger)
    later.ensure_schema("segsync_segments", ["churn_watch", "upgrade_intent"], ["churn_risk"])
    values = {o["value"] for o in sb.hubspot.contacts.schema["segsync_segments"]["options"]}
    assert values == {"churn_watch", "upgrade_intent"}


def test_a_hubspot_property_an_earlier_install_made_through_the_api_is_adopted(make_sandbox):
    """Upgrade rule: made through the API (no createdUserId) in segsync's own group, not HubSpot's."""
    sb = make_sandbox(contacts=100, seed=62)
    first, _ = hubspot(sb)
    first.ensure_schema("segsync_segments", ["churn_watch"], [])
    conn, ledger = hubspot(sb)  # a fresh record, as an install from before the record existed
    conn.ensure_schema("segsync_segments", ["churn_watch"], [])
    rec = ledger.objects("property", "contacts")["segsync_segments"]
    assert rec.how == ADOPTED and "upgrade" in rec.note


def test_a_hubspot_property_under_crm_adopt_properties_is_used(make_sandbox):
    sb = make_sandbox(contacts=100, seed=62, hubspot_customer_properties=("segsync_segments",))
    conn, ledger = hubspot(sb, adopt_properties=("segsync_segments",))
    conn.ensure_schema("segsync_segments", ["churn_watch"], [])
    assert ledger.objects("property", "contacts")["segsync_segments"].how == ADOPTED
    assert "churn_watch" in {o["value"] for o in sb.hubspot.contacts.schema["segsync_segments"]["options"]}


# ------------------------------------------------------------------ issue 14, wasted calls: Mailchimp's read timeout

def test_mailchimp_is_given_its_documented_120_seconds_per_request(make_sandbox):
    """Mailchimp may take up to 120 s on a 1,000-row page: the SDK and the raw download wait that long (a 30 s
    read timeout made slow pages retry up to six times). Built from a config, as the pipeline builds it."""
    from connectors.mailchimp.config import MailchimpEsp
    from connectors.mailchimp.plugin import build
    from connectors.registry import BuildContext

    sb = make_sandbox(contacts=20, seed=64)
    cfg = MailchimpEsp(type="mailchimp", api_key=sb.mailchimp_key, list_id=sb.mailchimp_list_id,
                       base_url=sb.mailchimp_url)
    conn = build(cfg, BuildContext())
    assert conn.client._sdk.api_client.timeout[1] >= 120
    assert conn.client.download.timeout[1] >= 120

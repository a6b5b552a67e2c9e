"""The Wealthbox connector against its simulator (real HTTP on loopback) and on vendor JSON: auth by API token
or OAuth bearer, what becomes a contact (people, households with an address of their own), households,
tags segsync did not create kept, scores as custom fields, the Do Not Email opt-out, and opportunities
counted as money only when Won with amounts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from connectors.base import HOUSEHOLD_PROPERTY, PropertyUpdate
from connectors.kit import RetrySettings
from connectors.wealthbox import WealthboxConnector
from connectors.wealthbox import mapping as M
from core.errors import ConfigError, FatalApiError
from sandbox import Sandbox
from sandbox.wealthbox import DO_NOT_EMAIL, RunningWealthbox, start_wealthbox
from sync.cli import cli

FAST = RetrySettings(max_attempts=2, initial_wait=0.0, max_wait=0.1, total_budget=5.0)


@pytest.fixture
def wb() -> Iterator[RunningWealthbox]:
    with start_wealthbox(contacts=120, seed=5) as running:
        yield running


def connect(wb: RunningWealthbox, **kw) -> WealthboxConnector:
    return WealthboxConnector(kw.pop("token", wb.access_token), wb.url, rate_limit=None, retry=FAST, **kw)


def test_people_and_households_pull_with_membership_and_others_are_counted_not_synced(wb) -> None:
    conn = connect(wb)
    contacts = [c for p in conn.pull_contacts(None, datetime.now(UTC)) for c in p.contacts]
    people = {str(r.id) for r in wb.sim.ws.contacts.values() if r.type == "Person"}
    assert {c.vendor_id for c in contacts} == people
    member = next(c for c in contacts if HOUSEHOLD_PROPERTY in c.properties)
    assert member.properties[HOUSEHOLD_PROPERTY] == str(wb.sim.ws.contacts[int(member.vendor_id)].household_id)
    assert member.properties["record_type"] == "person"
    assert conn.stats()["skipped_records"] == {"Household": sum(r.type == "Household" for r in
                                                                wb.sim.ws.contacts.values()),
                                               "Organization": 1, "Trust": 1}


def test_a_household_with_its_own_address_is_a_contact_carrying_its_own_id_and_members() -> None:
    raw = {"id": 77, "type": "Household", "name": "Lee Household", "updated_at": "2026-01-02T03:04:05Z",
           "email_addresses": [{"address": "Home@Lee.example", "principal": True}],
           "members": [{"id": 5, "title": "Head"}, {"id": 6, "title": "Spouse"}]}
    contact = M.to_contact(raw, "GET /contacts")
    assert contact is not None and contact.email == "home@lee.example"
    assert contact.properties[HOUSEHOLD_PROPERTY] == "77" and contact.properties["household_members"] == "5;6"
    assert M.to_contact({**raw, "email_addresses": []}, "GET /contacts") is None


def test_oauth_bearer_works_and_a_token_without_the_data_scope_names_it(wb) -> None:
    token = wb.sim.issue_oauth_token()
    assert list(connect(wb, token=token, auth="oauth").pull_contacts(None, datetime.now(UTC)))
    narrow = wb.sim.issue_oauth_token(("login",))
    with pytest.raises(FatalApiError) as err:
        list(connect(wb, token=narrow, auth="oauth").pull_contacts(None, datetime.now(UTC)))
    assert err.value.status == 403 and "crm.access_token" in str(err.value) and "data" in str(err.value)
    assert narrow not in str(err.value)


def test_per_page_above_the_documented_maximum_is_refused(wb) -> None:
    with pytest.raises(ConfigError, match=r"per_page must be 1\.\.100"):
        connect(wb, per_page=101)


def test_segments_are_prefixed_tags_and_every_other_tag_stays(wb) -> None:
    conn = connect(wb)
    list(conn.pull_contacts(None, datetime.now(UTC)))
    key = sorted(wb.sim.ws.by_person)[3]
    cid = str(wb.sim.contact_id(key))
    with wb.sim.ws.lock:  # the advisor tags the person after segsync's pull
        wb.sim.ws.tag_id("Golf")
        wb.sim.ws.contacts[int(cid)].tags.append("Golf")
    wb.sim.define_custom_field("segsync_score_churn")
    conn.ensure_schema("segsync_segments", ["a", "b"], ["churn", "ltv"])
    [result] = conn.push_properties([PropertyUpdate(cid, {"segsync_segments": "a;b", "segsync_score_churn": "0.5",
                                                          "segsync_score_ltv": "120"})])
    # No such field: named and skipped (not confirmed), so it is sent again once the field exists.
    assert result.outcome == "skipped" and "no custom field segsync_score_ltv: create it" in result.message
    assert sorted(wb.sim.tags_of(key)) == ["Golf", "segsync:a", "segsync:b"]
    assert wb.sim.custom_values(key)["segsync_score_churn"] == "0.5"
    assert conn.stats()["missing_custom_fields"] == ["segsync_score_ltv"]
    conn.push_properties([PropertyUpdate(cid, {"segsync_segments": "", "segsync_score_churn": ""})])
    assert wb.sim.tags_of(key) == ["Golf"]


def test_a_score_field_created_later_gets_the_score_on_the_next_push(wb) -> None:
    """A score without its custom field is "skipped" (the push does not confirm it, so it is sent again); once
    the admin creates the field (Settings > Custom Fields), the next run's push writes it."""
    key = sorted(wb.sim.ws.by_person)[4]
    cid = str(wb.sim.contact_id(key))
    update = PropertyUpdate(cid, {"segsync_score_ltv": "120"})
    [first] = connect(wb).push_properties([update])
    assert first.outcome == "skipped" and "create it (Settings > Custom Fields)" in first.message
    wb.sim.define_custom_field("segsync_score_ltv")
    [second] = connect(wb).push_properties([update])  # the next run
    assert second.outcome == "sent" and wb.sim.custom_values(key)["segsync_score_ltv"] == "120"


def test_an_opt_out_marks_every_contact_sharing_the_address(wb) -> None:
    """Spouses (or a household and a member) may share one address: an opt-out marks each of them."""
    a, b = sorted(wb.sim.ws.by_person)[6:8]
    shared = "shared.home@example.org"
    with wb.sim.ws.lock:
        for k in (a, b):
            wb.sim.ws.contacts[wb.sim.contact_id(k)].fields["email_addresses"] = [
                {"address": shared, "principal": True}]
    assert connect(wb).suppress(shared, None, "").outcome == "sent"
    assert DO_NOT_EMAIL in wb.sim.tags_of(a) and DO_NOT_EMAIL in wb.sim.tags_of(b)


def test_an_opt_out_tags_do_not_email_and_a_tagged_contact_is_pulled_as_a_withdrawal(wb) -> None:
    conn = connect(wb)
    key = sorted(wb.sim.ws.by_person)[5]
    cid = str(wb.sim.contact_id(key))
    email = wb.sim.ws.contacts[int(cid)].fields["email_addresses"][0]["address"]
    assert conn.suppress(email, None, "").outcome == "sent"  # found by address
    assert DO_NOT_EMAIL in wb.sim.tags_of(key)
    writes = len(wb.calls.writes("wealthbox"))
    assert conn.suppress(email, cid, "").outcome == "sent"  # already tagged: no write
    assert len(wb.calls.writes("wealthbox")) == writes
    later = datetime.now(UTC) + timedelta(seconds=2)  # a later run (Wealthbox times are whole seconds)
    signals = [s for p in conn.pull_contacts(None, later) for s in p.consent if s.email == email.lower()]
    assert [(s.purpose, s.state) for s in signals] == [("email_marketing", "withdrawn")]


@pytest.mark.parametrize(("stage", "amounts", "counted"), [
    pytest.param("Won", [{"amount": 1200.0, "currency": "$"}], 1200.0, id="won-with-amounts"),
    pytest.param("won", [{"amount": 100}, {"amount": 50.5}], 150.5, id="won-two-amounts"),
    pytest.param("Won", [], None, id="won-without-amounts"),
    pytest.param("Lost", [{"amount": 900.0}], None, id="lost"),
    pytest.param("Proposal", [{"amount": 900.0}], None, id="open"),
    pytest.param(4411, [{"amount": 900.0}], None, id="stage-id-unresolved"),
])
def test_an_opportunity_is_money_only_when_won_with_amounts(stage, amounts, counted) -> None:
    raw = {"id": 9, "name": "Upgrade", "stage": stage, "probability": 100, "amounts": amounts,
           "target_close": "2026-03-01T00:00:00Z", "linked_to": [{"id": 5, "type": "Contact"}]}
    events = M.won_events(raw, {}, "GET /opportunities")
    assert [e.value for e in events] == ([] if counted is None else [counted])


def test_check_on_wealthbox_reads_only_and_names_a_refused_token(tmp_path, sandbox: Sandbox) -> None:
    path = tmp_path / "wb.yaml"
    path.write_text(sandbox.config_yaml(store=f"sqlite:///{tmp_path / 's.db'}", crm="wealthbox"))
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert "token accepted (api_token" in result.output and "for segsync scores" in result.output
    assert sandbox.wealthbox.access_token not in result.output
    assert sandbox.calls.writes("wealthbox") == []
    path.write_text(path.read_text().replace(sandbox.wealthbox.access_token, "revoked-wealthbox-token-0000"))
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 2
    assert "crm.access_token refused the credential" in result.output and "API Access" in result.output
    assert "revoked-wealthbox-token-0000" not in result.output

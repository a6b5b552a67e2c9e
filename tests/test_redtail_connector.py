"""The Redtail connector against the Redtail simulator (real HTTP): what it pulls, what it writes and never
writes, and how a refused credential or permission reads."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from connectors.base import HOUSEHOLD_PROPERTY, PropertyUpdate
from connectors.redtail import RedtailConnector
from connectors.redtail import settings as S
from core.errors import ConfigError, FatalApiError
from sandbox.redtail import DO_NOT_EMAIL, RunningRedtail, start_redtail

PROP = "segsync_segments"


@pytest.fixture
def rt() -> Iterator[RunningRedtail]:
    with start_redtail(contacts=80, seed=31) as running:
        yield running


def connect(rt: RunningRedtail, **kw) -> RedtailConnector:
    return RedtailConnector(rt.api_key, rt.username, rt.password, rt.url, requests_per_second=0, **kw)


def test_pull_maps_emails_age_household_balance_events_and_the_opt_out_group(rt: RunningRedtail) -> None:
    conn = connect(rt)
    pages = list(conn.pull_contacts(None, datetime.now(UTC)))
    contacts = {c.vendor_id: c for p in pages for c in p.contacts}
    db = rt.sim.db
    assert set(contacts) == {str(i) for i in db.contacts}
    for cid, c in db.contacts.items():
        got = contacts[str(cid)]
        assert got.email == c.emails[0]["address"].lower()
        # A family is not a contact: its id never reads as one (the gate would take that contact for the
        # household's own record), whatever the two id series hold.
        assert got.properties.get(HOUSEHOLD_PROPERTY) == (f"family:{c.family_id}" if c.family_id else None)
        assert got.properties.get(HOUSEHOLD_PROPERTY) not in contacts
        assert got.properties[S.PROP_BALANCE] == pytest.approx(sum(a["balance"] for a in c.accounts))
        assert got.properties[S.PROP_BIRTH_DATE] == c.dob and isinstance(got.properties[S.PROP_AGE], int)
    events = [e for p in pages for e in p.events]
    assert {e.type for e in events} <= {"deposit", "upgrade"} and len(events) == sum(
        len(c.notes) + len(c.activities) for c in db.contacts.values())
    assert len({e.event_id for e in events}) == len(events)
    opted = {str(cid) for cid, c in db.contacts.items() if any(db.tags[t]["name"] == DO_NOT_EMAIL
                                                                 for t in c.tag_memberships.values())}
    signals = [s for p in pages for s in p.consent]
    assert opted and {s.evidence["contact_id"] for s in signals} == opted  # type: ignore[index]
    assert all(s.state == "withdrawn" and s.purpose == "email_marketing" for s in signals)
    assert conn.stats()["write_calls"] == 0 and rt.sim.auth_exchanges == 1  # the user key is obtained once


def test_push_writes_only_segsync_tag_groups_and_never_touches_the_firms_own(rt: RunningRedtail) -> None:
    conn = connect(rt)
    list(conn.pull_contacts(None, datetime.now(UTC)))
    conn.ensure_schema(PROP, ["vip", "churn"], ["churn_risk"])
    db = rt.sim.db
    firm = next(t["id"] for t in db.tags.values() if t["name"] == DO_NOT_EMAIL)
    member = next(cid for cid, c in db.contacts.items() if firm in c.tag_memberships.values())
    wanted = {PROP: "vip;churn", "segsync_score_churn_risk": "0.7"}
    results = conn.push_properties([PropertyUpdate(str(member), wanted)])
    assert results[0].outcome == "sent"
    assert rt.sim.db.contacts[member].tag_memberships and rt.sim.udfs_of(
        rt.sim.db.contacts[member].person_key) == {"segsync_score_churn_risk": "0.7"}
    rt.calls.clear()
    conn.push_properties([PropertyUpdate(str(member), {PROP: "", "segsync_score_churn_risk": ""})])
    names = {db.tags[t]["name"] for t in db.contacts[member].tag_memberships.values()}
    assert names == {DO_NOT_EMAIL}  # segsync's groups gone, the firm's kept
    assert len(rt.calls.writes("redtail")) == 3  # two memberships removed, one value cleared; no read needed
    rt.calls.clear()
    conn.push_properties([PropertyUpdate(str(member), {PROP: "", "segsync_score_churn_risk": ""})])
    assert rt.calls.writes("redtail") == []  # already so: nothing written


def test_a_segment_name_that_collides_with_a_firms_tag_group_is_refused_by_name(rt: RunningRedtail) -> None:
    db = rt.sim.db
    with db.lock:
        tid = db.next_id("tag")
        db.tags[tid] = {"id": tid, "name": "segsync: vip", "description": "the firm's own", "created_at": ""}
    with pytest.raises(ConfigError, match="'segsync: vip' already exists and segsync did not create it"):
        connect(rt).ensure_schema(PROP, ["vip"], [])
    assert rt.calls.writes("redtail") == []
    connect(rt, tag_group="Predictive").ensure_schema(PROP, ["vip"], [])  # another prefix: fine
    assert any(t["name"] == "Predictive: vip" for t in db.tags.values())


def tagged_vip(rt: RunningRedtail) -> tuple[RedtailConnector, int]:
    """A connector that tagged an untagged contact "segsync: vip" (it remembers the membership)."""
    conn = connect(rt)
    conn.ensure_schema(PROP, ["vip"], [])
    cid = next(cid for cid, c in rt.sim.db.contacts.items() if not c.tag_memberships)
    conn.push_properties([PropertyUpdate(str(cid), {PROP: "vip"})])
    return conn, cid


def test_opt_out_joins_the_do_not_email_group_once_and_clears_segsync_tags(rt: RunningRedtail) -> None:
    conn, cid = tagged_vip(rt)
    db = rt.sim.db
    email = db.contacts[cid].emails[0]["address"]
    assert conn.suppress(email, None, PROP).outcome == "sent"  # found by its address
    assert rt.sim.tags_of(db.contacts[cid].person_key) == {DO_NOT_EMAIL}
    rt.calls.clear()
    assert connect(rt).suppress(email, str(cid), PROP).outcome == "sent"
    assert rt.calls.writes("redtail") == []  # already opted out, no segsync tag left


@pytest.mark.parametrize("case", ["wrong-password", "read-only"])
def test_401_and_403_name_the_credential_and_the_permission(rt: RunningRedtail, case: str) -> None:
    if case == "wrong-password":
        conn = RedtailConnector(rt.api_key, rt.username, "not-the-password", rt.url, requests_per_second=0)
        with pytest.raises(FatalApiError) as err:
            list(conn.pull_contacts(None, datetime.now(UTC)))
        assert err.value.status == 401 and "crm.api_key" in str(err.value) and "crm.password" in str(err.value)
    else:
        rt.sim.read_only = True
        conn = connect(rt)
        with pytest.raises(FatalApiError) as err:
            conn.ensure_schema(PROP, ["vip"], [])
        assert err.value.status == 403 and "crm.username" in str(err.value) and "updating contacts" in str(err.value)
    assert rt.password not in str(err.value) and "not-the-password" not in str(err.value)


def test_segsync_check_reads_redtail_and_names_a_refused_login(make_sandbox, tmp_path) -> None:
    from click.testing import CliRunner

    from sync.cli import cli

    sb = make_sandbox(contacts=60, seed=32)
    rt = sb.redtail
    path = tmp_path / "segsync.yaml"
    path.write_text(sb.config_yaml(f"sqlite:///{tmp_path / 'segsync.db'}", crm="redtail"))
    good = CliRunner().invoke(cli, ["check", str(path)])
    assert good.exit_code == 0, good.output
    assert "user key obtained; contacts readable" in good.output and rt.password not in good.output
    assert rt.calls.writes("redtail") == []
    path.write_text(path.read_text().replace(rt.password, "not-the-password-000"))
    bad = CliRunner().invoke(cli, ["check", str(path)])
    assert bad.exit_code == 2, bad.output
    assert "crm.api_key/crm.username/crm.password refused the credential" in bad.output
    assert "not-the-password-000" not in bad.output


def test_a_contact_deleted_mid_pull_loses_no_other_contact(rt: RunningRedtail) -> None:
    conn = connect(rt, page_size=20, pull_accounts=False, pull_notes=False)
    pages = conn.pull_contacts(None, datetime.now(UTC))
    first = next(pages)
    gone = sorted(rt.sim.db.contacts)[:3]
    for cid in gone:  # deleted behind the reader: everyone after them moves up three places
        rt.sim.delete(rt.sim.db.contacts[cid].person_key)
    ids = [c.vendor_id for c in first.contacts] + [c.vendor_id for p in pages for c in p.contacts]
    assert len(ids) == len(set(ids))
    assert set(ids) == {str(i) for i in rt.sim.db.contacts}


def test_an_opt_out_group_segsync_had_to_create_is_never_emptied_by_a_clear(rt: RunningRedtail) -> None:
    db = rt.sim.db
    with db.lock:  # a firm without a "Do Not Email" group
        gone = next(t for t, g in db.tags.items() if g["name"] == DO_NOT_EMAIL)
        del db.tags[gone]
        for c in db.contacts.values():
            c.tag_memberships = {m: t for m, t in c.tag_memberships.items() if t != gone}
    conn = connect(rt)
    conn.ensure_schema(PROP, ["vip"], [])
    cid = str(next(iter(db.contacts)))
    conn.push_properties([PropertyUpdate(cid, {PROP: "vip"})])
    assert conn.suppress("", cid, PROP).outcome == "sent"
    for again in (conn, connect(rt)):  # this connector, and a later run's
        again.push_properties([PropertyUpdate(cid, {PROP: ""})])
        assert rt.sim.tags_of(db.contacts[int(cid)].person_key) == {DO_NOT_EMAIL}


def dne_id(rt: RunningRedtail) -> int:
    return next(t["id"] for t in rt.sim.db.tags.values() if t["name"] == DO_NOT_EMAIL)


def test_an_opt_out_added_without_changing_the_contact_reaches_the_next_pull_dated_then(rt: RunningRedtail) -> None:
    conn = connect(rt, pull_accounts=False, pull_notes=False)
    first = list(conn.pull_contacts(None, datetime.now(UTC)))
    db, tid = rt.sim.db, dne_id(rt)
    cid = next(cid for cid, c in db.contacts.items() if tid not in c.tag_memberships.values())
    before = db.contacts[cid].updated_at
    connect(rt).client.add_membership(str(cid), tid)  # an advisor tags the contact "Do Not Email"
    assert db.contacts[cid].updated_at == before  # Redtail need not bump updated_at for a membership
    run2 = datetime.now(UTC)
    second = list(conn.pull_contacts(first[-1].cursor, run2))
    signals = [s for p in second for s in p.consent]
    assert [s.evidence["contact_id"] for s in signals] == [str(cid)]  # type: ignore[index]
    assert signals[0].occurred_at == run2 and signals[0].state == "withdrawn"  # when seen, not the older edit
    third = list(conn.pull_contacts(second[-1].cursor, datetime.now(UTC)))
    assert [s for p in third for s in p.consent] == []  # seen already: no second withdrawal
    mid = next(m for m, t in db.contacts[cid].tag_memberships.items() if t == tid)
    conn.client.remove_membership(str(cid), mid)
    fourth = list(conn.pull_contacts(third[-1].cursor, datetime.now(UTC)))
    conn.client.add_membership(str(cid), tid)  # left the group, then joined again: a new withdrawal
    fifth = list(conn.pull_contacts(fourth[-1].cursor, datetime.now(UTC)))
    again = [s for p in fifth for s in p.consent]
    assert len(again) == 1 and again[0].vendor_event_id != signals[0].vendor_event_id


def test_suppress_reads_the_contact_fresh_and_clears_tags_another_run_added(rt: RunningRedtail) -> None:
    conn = connect(rt)  # a long-lived connector (segsync serve): it remembers what it wrote
    conn.ensure_schema(PROP, ["vip", "churn"], [])
    db = rt.sim.db
    cid = next(cid for cid, c in db.contacts.items() if not c.tag_memberships)
    conn.push_properties([PropertyUpdate(str(cid), {PROP: "vip"})])
    later = connect(rt)
    later.ensure_schema(PROP, ["vip", "churn"], [])
    later.push_properties([PropertyUpdate(str(cid), {PROP: "vip;churn"})])  # a later run moved the segment
    assert conn.suppress(db.contacts[cid].emails[0]["address"], str(cid), PROP).outcome == "sent"
    assert rt.sim.tags_of(db.contacts[cid].person_key) == {DO_NOT_EMAIL}


def test_two_firms_sharing_a_database_never_remove_each_others_memberships(rt: RunningRedtail) -> None:
    a, b = connect(rt, tag_group="Firm A"), connect(rt, tag_group="Firm B")
    a.ensure_schema(PROP, ["vip"], [])
    b.ensure_schema(PROP, ["vip"], [])
    db = rt.sim.db
    cid = str(next(cid for cid, c in db.contacts.items() if not c.tag_memberships))
    a.push_properties([PropertyUpdate(cid, {PROP: "vip"})])
    b.push_properties([PropertyUpdate(cid, {PROP: "vip"})])
    assert b.push_properties([PropertyUpdate(cid, {PROP: ""})])[0].outcome == "sent"
    assert rt.sim.tags_of(db.contacts[int(cid)].person_key) == {"Firm A: vip"}


def test_a_push_to_a_contact_deleted_in_redtail_is_skipped_as_archived_not_failed(rt: RunningRedtail) -> None:
    conn = connect(rt, pull_accounts=False, pull_notes=False)
    list(conn.pull_contacts(None, datetime.now(UTC)))
    conn.ensure_schema(PROP, ["vip"], [])
    db = rt.sim.db
    cid = next(iter(db.contacts))
    rt.sim.delete(db.contacts[cid].person_key)  # listings omit it from now on
    rt.calls.clear()
    result = conn.push_properties([PropertyUpdate(str(cid), {PROP: "vip"})])[0]
    assert result.outcome == "skipped" and "archived" in result.message and "404" in result.message
    assert len(rt.calls.calls) == 1  # the refused write; no re-read and retry of a contact that is gone
    assert "segsync: vip" not in rt.sim.tags_of(db.contacts[cid].person_key)
    rt.calls.clear()
    assert conn.push_properties([PropertyUpdate(str(cid), {PROP: "vip"})])[0].outcome == "skipped"
    assert rt.calls.calls == []  # known gone: not called again
    archived = [c for p in conn.pull_contacts(None, datetime.now(UTC)) for c in p.contacts if c.archived]
    assert [c.vendor_id for c in archived] == [str(cid)]  # recorded as archived by the next pull (segsync serve)


def test_an_opt_out_marks_every_contact_sharing_the_address(rt: RunningRedtail) -> None:
    db = rt.sim.db
    tid = dne_id(rt)
    free = [cid for cid, c in db.contacts.items() if tid not in c.tag_memberships.values()]
    husband, wife = db.contacts[free[0]], db.contacts[free[1]]
    shared = husband.emails[0]["address"]
    with db.lock:  # spouses share the household address (as the wife's second email)
        wife.emails.append({**husband.emails[0], "id": db.next_id("email"), "contact_id": wife.id,
                            "is_primary": False, "is_preferred": False})
    assert connect(rt).suppress(shared, str(husband.id), PROP).outcome == "sent"
    assert DO_NOT_EMAIL in rt.sim.tags_of(husband.person_key) and DO_NOT_EMAIL in rt.sim.tags_of(wife.person_key)
    assert connect(rt).suppress(shared.upper(), None, PROP).outcome == "sent"
    assert len(rt.calls.writes("redtail")) == 2  # once each; the second opt-out writes nothing


def test_a_membership_removed_meanwhile_is_read_again_not_taken_for_a_deleted_contact(rt: RunningRedtail) -> None:
    conn, cid = tagged_vip(rt)
    db = rt.sim.db
    with db.lock:  # someone removed it in Redtail: our remembered membership id is stale (DELETE answers 404)
        db.contacts[cid].tag_memberships.clear()
    result = conn.push_properties([PropertyUpdate(str(cid), {PROP: ""})])[0]
    assert result.outcome == "sent" and str(cid) not in conn._gone

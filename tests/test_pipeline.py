"""The sync's invariants on in-memory vendors: consent gates, holdout, zero-write re-runs, resume, guard.

The same invariants are checked over real HTTP against the sandbox in test_e2e_sandbox.py; these
run in seconds and pin the pipeline's own logic.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from sync.config import load_config_text
from sync.run.pipeline import RunOptions, TenantRun
from sync.run.plan import CRM, TAGS
from sync.store import open_store
from tests.configs import consent_yaml
from tests.fakes import FakeCrm, FakeEsp, make_book

CONSENT = consent_yaml("a-very-long-webhook-secret")

CONFIG = """
version: 1
store: {store}
model_dir: {models}
tenants:
  - id: acme
    crm: {{type: csv, contacts: unused.csv}}
    esp: {{type: mailchimp, api_key: 0123456789abcdef0123456789abcdef-us6, list_id: abc123}}
    {consent}
    scores:
      - {{name: upgrade, kind: propensity, outcome: {{event: upgrade}}, horizon_days: 90}}
    segments:
      - {{name: likely_upgrade, score: upgrade, top_percent: 20}}
    holdout_percent: 10
"""


@pytest.fixture
def world(tmp_path, sqlite_url):
    yield from _world(tmp_path, sqlite_url)


@pytest.fixture
def pg_world(tmp_path, pg_url):
    yield from _world(tmp_path, pg_url)


def _world(tmp_path, db_url):
    cfg = load_config_text(CONFIG.format(consent=CONSENT, store=db_url, models=tmp_path / "models"))
    store = open_store(db_url)
    people, events = make_book()
    emails = [p["email"] for p in people.values()]
    crm = FakeCrm(people, events)
    esp = FakeEsp(people, unsubscribed=set(emails[:40]), missing=set(emails[40:60]))
    yield cfg, store, crm, esp
    store.close()


def run(cfg, store, crm, esp, **opts):
    return TenantRun(cfg, cfg.tenants[0], store, crm, esp, RunOptions(**opts)).run()


def tagged(esp: FakeEsp) -> dict[str, set[str]]:
    return {e: m["tags"] for e, m in esp.members.items() if m["tags"]}


def test_first_run_pushes_the_plan_and_gates_consent(world):
    cfg, store, crm, esp = world
    report = run(cfg, store, crm, esp)
    assert report["status"] == "ok", report.get("error")
    segments = report["segments"]["likely_upgrade"]
    assert segments["members"] > 50 and segments["holdout"] > 0
    # Vendor state equals what the store says was confirmed.
    members = {
        r["contact_id"] for r in store.segment_members("acme") if not r["holdout"] and r["segment"] == "likely_upgrade"
    }
    held = {r["contact_id"] for r in store.segment_members("acme") if r["holdout"]}
    emails = {c["contact_id"]: c["email"] for c in store.contacts("acme")}
    crm_ids = store.vendor_ids("acme", "fakecrm")
    in_crm = {cid for cid, vid in crm_ids.items() if "likely_upgrade" in crm.props[vid].get("segsync_segments", "")}
    assert in_crm == members
    assert not (in_crm & held), "a holdout contact holds a segment in the CRM"
    # ESP: only subscribed members with a recorded opt-in get tags; never the unsubscribed ones.
    for email, tags in tagged(esp).items():
        assert esp.members[email]["status"] == "subscribed"
        assert tags == {"segsync:likely_upgrade"}
    expected_tagged = {
        emails[c] for c in members if emails[c] in esp.members and esp.members[emails[c]]["status"] == "subscribed"
    }
    assert set(tagged(esp)) == expected_tagged
    assert esp.status_writes == [], "a data sync changed a subscription status"
    # Every planned record ended somewhere; nothing silently dropped.
    planned = sum(d["changes"] for d in report["plan"]["destinations"].values())
    assert sum(report["push"]["totals"].values()) >= planned


@pytest.mark.parametrize("backend", ["world", pytest.param("pg_world", marks=pytest.mark.postgres)])
def test_second_run_makes_zero_write_calls(backend, request):
    cfg, store, crm, esp = request.getfixturevalue(backend)
    run(cfg, store, crm, esp)
    crm_writes, esp_writes = crm.writes(), esp.writes()
    report = run(cfg, store, crm, esp)
    assert report["status"] == "ok"
    assert (crm.writes(), esp.writes()) == (crm_writes, esp_writes)
    assert report["plan"]["total_changes"] == 0
    assert all(m["reused"] for m in report["scoring"]["models"].values())


def test_no_consent_record_means_no_esp_tags(tmp_path, sqlite_url):
    db_url = sqlite_url
    """email_marketing under basis `consent` with no opt-in evidence: nobody is tagged in the ESP."""
    cfg = load_config_text(CONFIG.format(consent=CONSENT, store=db_url, models=tmp_path / "m"))
    store = open_store(db_url)
    people, events = make_book()
    crm, esp = FakeCrm(people, events), FakeEsp(people)
    for m in esp.members.values():
        m["opt"] = None  # the ESP has no opt-in record for anyone
    report = run(cfg, store, crm, esp)
    assert report["status"] == "ok"
    assert tagged(esp) == {} and not any(esp.segments.values())
    assert report["plan"]["suppressed"]  # the reason is reported
    assert any(v.get("segsync_segments") for v in crm.props.values()), (
        "profiling (legitimate interest) still allowed in the CRM"
    )
    store.close()


def test_opt_out_mid_run_wins_before_the_next_batch(world):
    cfg, store, crm, esp = world
    esp_batches = []
    run_ = TenantRun(cfg, cfg.tenants[0], store, crm, esp, RunOptions())
    victims: list[str] = []

    def opt_out_someone():
        esp_batches.append(1)
        if len(esp_batches) == 1:
            # An opt-out arrives through the preference center while the push is running.
            members = {r["contact_id"] for r in store.segment_members("acme") if not r["holdout"]}
            emails = sorted(
                c["email"]
                for c in store.contacts("acme")
                if c["contact_id"] in members and esp.members.get(c["email"], {}).get("status") == "subscribed"
            )
            victims.extend(emails[-3:])
            for e in victims:
                run_.gate.ledger.record(
                    "acme",
                    e,
                    "email_marketing",
                    "withdrawn",
                    basis="consent",
                    source="preference_center",
                    occurred_at=datetime.now(UTC),
                )

    esp.before_batch = opt_out_someone
    # A tiny ESP batch so there is a "next batch" after the opt-out.
    esp.limits = type(esp.limits)(batch_size=10, requests_per_window=10, window_seconds=1, page_size=1000)
    report = run_.run()
    assert victims
    late = [e for e in victims if e in tagged(esp)]
    # Only a victim inside the batch already in flight may have been tagged; later batches must skip them.
    assert len(late) <= 1, late
    assert report["push"]["by_destination"][TAGS].get("suppressed", 0) >= len(victims) - len(late)


def test_failed_records_are_reported_and_retried_next_run(world):
    cfg, store, crm, esp = world
    failing = sorted(crm.people)[100:103]  # subscribed, profiled people
    for vid in failing:
        crm.fail_keys[vid] = "Property values were not valid: INVALID_EMAIL"
    report = run(cfg, store, crm, esp)
    assert report["status"] == "failed_records"
    fails = [f for f in report["push"]["failures"] if f["destination"] == CRM]
    assert len(fails) == 3 and all("INVALID_EMAIL" in f["message"] for f in fails)
    crm.fail_keys.clear()
    before = crm.calls["batch_update"]
    report2 = run(cfg, store, crm, esp)
    assert report2["status"] == "ok"
    assert report2["plan"]["destinations"][CRM]["changes"] == 3, "exactly the failed records are retried"
    assert crm.calls["batch_update"] == before + 1


def test_crash_mid_push_resumes_without_duplicates(world):
    cfg, store, crm, esp = world
    crm.crash_after_batches = 3
    with pytest.raises(SystemExit):
        run(cfg, store, crm, esp)
    crm.crash_after_batches = None
    sent_before = crm.calls["batch_update"]
    assert sent_before == 3
    report = run(cfg, store, crm, esp)
    assert report["status"] == "ok"
    pushed = sum(1 for vid, p in crm.props.items() if "segsync_segments" in p and vid not in crm.optout)
    assert len(crm.optout) == 40  # the ESP's unsubscribes were propagated to the CRM
    # The three confirmed batches are not sent again: the resumed run sends exactly the rest...
    assert report["push"]["by_destination"][CRM]["sent"] + 300 == pushed
    # ...and the end state is an uninterrupted run's: every profiled contact (all but the 40 opted
    # out) outside the holdout, which gets nothing of ours.
    from scoring.segments import holdout

    ids = store.vendor_ids("acme", "fakecrm")
    outside = [cid for cid, vid in ids.items() if vid not in crm.optout and not holdout("acme", cid, 10)]
    assert pushed == len(outside)
    assert run(cfg, store, crm, esp)["plan"]["total_changes"] == 0


def test_change_guard_refuses_a_plan_that_retags_the_book(world, tmp_path):
    cfg, store, crm, esp = world
    run(cfg, store, crm, esp)
    # A broken model: every score flips. Simulate by wiping the confirmed CRM state's values.
    with store.engine.begin() as conn:
        from sync.store.schema import last_sent

        conn.execute(last_sent.update().where(last_sent.c.destination == CRM).values(value='{"segsync_segments":"x"}'))
    writes = crm.writes()
    report = run(cfg, store, crm, esp)
    assert report["status"] == "refused" and "--force" in report["refused"]
    assert crm.writes() == writes
    report = run(cfg, store, crm, esp, force=True)
    assert report["status"] == "ok" and crm.writes() > writes


def test_dry_run_sends_nothing_and_costs_the_push(world):
    cfg, store, crm, esp = world
    report = run(cfg, store, crm, esp, dry_run=True)
    assert report["status"] == "dry_run"
    assert crm.writes() == 0 and esp.writes() == 0
    assert report["plan"]["cost"][CRM]["calls"] == -(-report["plan"]["destinations"][CRM]["changes"] // 100)
    assert store.last_sent("acme", CRM) == {}


def test_a_stop_during_the_pull_keeps_stored_pages_and_sends_nothing(world):
    cfg, store, crm, esp = world
    stop = threading.Event()
    pages = []

    def after_first_page(task, n, total):
        pages.append(task)
        stop.set()  # SIGTERM arrives while the CRM is being pulled

    report = run(cfg, store, crm, esp, stop=stop, progress=after_first_page)
    assert report["status"] == "stopped"
    assert crm.writes() == 0 and esp.writes() == 0
    assert store.cursor("acme", "fakecrm.contacts") == "page0"  # the stored page kept its cursor
    assert len(store.contacts("acme")) == 250
    stop.clear()
    assert run(cfg, store, crm, esp)["status"] == "ok"  # the next run goes on from the stored cursor
    assert len(store.contacts("acme")) == len(crm.people)


def test_score_drift_alone_does_not_trip_the_change_guard(world):
    """New data nudges every score a little; only moves between segments count against max_change_share."""
    import json

    cfg, store, crm, esp = world
    run(cfg, store, crm, esp)
    with store.engine.begin() as conn:
        from sync.store.schema import last_sent

        rows = conn.execute(last_sent.select().where(last_sent.c.destination == CRM)).fetchall()
        for r in rows:
            value = json.loads(r.value)
            value["segsync_score_upgrade"] = "0.99"  # every score differs, no segment does
            conn.execute(
                last_sent.update()
                .where(last_sent.c.tenant_id == r.tenant_id, last_sent.c.destination == CRM, last_sent.c.key == r.key)
                .values(value=json.dumps(value, sort_keys=True))
            )
    report = run(cfg, store, crm, esp)
    assert report["status"] == "ok", report.get("refused")
    assert report["plan"]["destinations"][CRM]["changes"] == len(rows) and report["plan"]["change_share"] == 0


def test_an_opt_out_received_for_a_vendor_id_before_the_pull_still_wins(world):
    """A HubSpot webhook can name a contact segsync has never pulled (``hubspot:<id>``): once a pull
    resolves that id to an email, the recorded withdrawal applies to the person."""
    cfg, store, crm, esp = world
    gate = TenantRun(cfg, cfg.tenants[0], store, crm, esp).gate
    vid = sorted(crm.people)[200]
    gate.ledger.record("acme", f"fakecrm:{vid}", "email_marketing", "withdrawn", basis="consent", source="fakecrm",
                       occurred_at=datetime.now(UTC))
    report = run(cfg, store, crm, esp)
    assert report["consent"]["carried_from_vendor_ids"] >= 1
    assert crm.props[vid].get("segsync_segments") in (None, ""), "an opted-out person was put in a segment"
    email = crm.people[vid]["email"]
    assert not esp.members[email]["tags"]
    cid = store.contact_by_email("acme", email)
    assert gate.decide_people({cid: {email}})[cid][:2] == (False, False)

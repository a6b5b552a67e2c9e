"""Losing the tenant lock mid-run (issue 20, item 4): the run stops cleanly and never overlaps another.

PostgreSQL holds the lock as a session advisory lock on a connection of its own; the lease's fencing
check runs before every batch, so once that session is gone (here: pg_terminate_backend) the run
sends nothing more, and a second run that takes the tenant over never writes alongside it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from sync.config import load_config
from sync.run.pipeline import STOPPED, RunOptions, run_tenant
from sync.store import LockLost, TenantBusy, open_store
from sync.store import schema as t
from sync.store.runs import advisory_key, split_key
from tests.test_crash_push import small_book
from tests.test_e2e_sandbox import check_vendor_state

HUBSPOT_BATCH = "/crm/v3/objects/contacts/batch/update"


def terminate_lock_session(url: str, tenant_id: str) -> int:
    """pg_terminate_backend on the session holding the tenant's advisory lock; returns how many were ended."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            schema = str(conn.execute(sa.text("select current_schema()")).scalar())
            pids = conn.execute(sa.text("select pid from pg_locks where locktype = 'advisory' and granted "
                                        "and classid = :hi and objid = :lo and objsubid = 1"),
                                split_key(advisory_key(schema, tenant_id))).scalars().all()
            for pid in pids:
                conn.execute(sa.text("select pg_terminate_backend(:p)"), {"p": pid})
            return len(pids)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_terminated_lock_session_is_detected_by_the_lease(pg_url):
    store = open_store(pg_url)
    try:
        with store.tenant_lock("t1") as lease:
            lease.check()  # held: no error
            assert terminate_lock_session(pg_url, "t1") == 1
            with pytest.raises(LockLost):
                lease.check()
            # and the tenant is free for someone else at once
            with store.tenant_lock("t1") as other:
                other.check()
    finally:
        store.close()


def test_a_stolen_sqlite_lease_is_detected(sqlite_url):
    store = open_store(sqlite_url)
    try:
        with store.tenant_lock("t1") as lease:
            lease.check()
            with store.engine.begin() as conn:
                conn.execute(t.tenant_locks.update().values(holder="elsewhere:1:x"))
            with pytest.raises(LockLost):
                lease.check()
    finally:
        store.close()


def test_runs_a_killed_process_left_running_are_marked_interrupted(sqlite_url):
    store = open_store(sqlite_url)
    try:
        dead = store.start_run("t1", dry_run=False)  # its process died: nobody will finish it
        with store.tenant_lock("t1"):
            pass
        assert {r["id"]: r["status"] for r in store.runs("t1")}[dead] == "interrupted"
    finally:
        store.close()


@pytest.mark.postgres
def test_terminating_the_lock_session_mid_run_stops_it_and_no_two_runs_overlap(make_sandbox, tmp_path, pg_url):
    sb, config = small_book(make_sandbox, tmp_path)
    config.write_text("\n".join(f"store: {pg_url}" if line.startswith("store:") else line
                                for line in config.read_text().splitlines()))
    cfg = load_config(config)
    sb.faults["hubspot"].set(delay=0.3, only_paths=(HUBSPOT_BATCH,))  # a push long enough to lose the lock in
    first: dict[str, Any] = {}

    def run_first() -> None:
        store = open_store(cfg.store)
        try:
            first.update(run_tenant(cfg, cfg.tenants[0], store, RunOptions(), base_dir=config.parent))
        finally:
            store.close()

    thread = threading.Thread(target=run_first)
    thread.start()
    deadline = time.monotonic() + 120
    while sb.calls.count("hubspot", "POST", HUBSPOT_BATCH) < 1:
        assert thread.is_alive() and time.monotonic() < deadline, "the first run never reached its push"
        time.sleep(0.01)
    batches_at_loss = sb.calls.count("hubspot", "POST", HUBSPOT_BATCH)
    assert terminate_lock_session(pg_url, "firm") == 1
    # A second run takes the tenant over as soon as the server has ended the session.
    store = open_store(cfg.store)
    try:
        for _ in range(200):
            try:
                with store.tenant_lock("firm"):
                    second_took_it = sb.calls.count("hubspot", "POST", HUBSPOT_BATCH)
                    thread.join(timeout=120)  # the first run, while the second holds the tenant
                    after_takeover = sb.calls.count("hubspot", "POST", HUBSPOT_BATCH) - second_took_it
                break
            except TenantBusy:
                time.sleep(0.05)  # the terminated session is still being torn down
        else:
            pytest.fail("the tenant stayed locked after its session was terminated")
    finally:
        store.close()
    assert not thread.is_alive()
    assert first["status"] == STOPPED, first
    assert "lock was lost" in (first.get("error") or ""), first
    # Nothing sent by the first run once the second held the tenant, beyond the batch already on the wire.
    assert after_takeover <= 1, after_takeover
    assert first["push"]["batches"].get("crm.properties", 0) <= batches_at_loss + 1, first["push"]
    sb.faults["hubspot"].reset()
    store = open_store(cfg.store)
    try:
        resumed = run_tenant(cfg, cfg.tenants[0], store, RunOptions(), base_dir=config.parent)
        statuses = [r["status"] for r in store.runs("firm")]
    finally:
        store.close()
    assert resumed["status"] == "ok", resumed
    assert statuses[1] == STOPPED, statuses  # the first run logged as stopped, not failed
    check_vendor_state(config, sb)


def run_losing_the_lease(cfg, config, store, when) -> tuple[dict[str, Any], bool]:
    """Run the tenant on a SQLite store while a thread hands its lease to another holder once ``when()``."""
    stolen = threading.Event()

    def steal() -> None:
        deadline = time.monotonic() + 120
        while not when() and time.monotonic() < deadline:
            time.sleep(0.005)
        with store.engine.begin() as conn:  # another process's lease now (as after an expiry and a takeover)
            conn.execute(t.tenant_locks.update().values(holder="elsewhere:1:x"))
        stolen.set()

    thief = threading.Thread(target=steal)
    thief.start()
    try:
        report = run_tenant(cfg, cfg.tenants[0], store, RunOptions(), base_dir=config.parent)
    finally:
        thief.join()
    return report, stolen.is_set()


def test_a_lock_lost_mid_batch_stops_the_retry_unsent(make_sandbox, tmp_path):
    """The fencing check runs before every vendor call, not only before every batch (issue 20, item 4).

    The first CRM batch is answered 429, so the connector would retry it; the lock is taken over
    while it waits. Checked per batch only, the retry would still go out once the tenant is someone
    else's; checked per call, nothing more is sent and the run stops as "stopped".
    """
    sb, config = small_book(make_sandbox, tmp_path)
    sb.faults["hubspot"].set(storm=1, only_paths=(HUBSPOT_BATCH,))
    cfg = load_config(config)
    store = open_store(cfg.store)
    try:
        report, stolen = run_losing_the_lease(cfg, config, store, lambda: sb.calls.count("hubspot", "POST",
                                                                                          HUBSPOT_BATCH) >= 1)
    finally:
        store.close()
    assert stolen
    assert report["status"] == STOPPED and "lock was lost" in (report.get("error") or ""), report
    assert sb.calls.count("hubspot", "POST", HUBSPOT_BATCH) == 1, "a call was sent after the lock was lost"
    assert [c for c in sb.calls.writes("mailchimp")] == [], "the ESP was written to after the lock was lost"
    sb.faults["hubspot"].reset()
    store = open_store(cfg.store)
    try:
        with store.engine.begin() as conn:  # the other holder finished
            conn.execute(t.tenant_locks.delete())
        resumed = run_tenant(cfg, cfg.tenants[0], store, RunOptions(), base_dir=config.parent)
    finally:
        store.close()
    assert resumed["status"] == "ok", resumed
    check_vendor_state(config, sb)


def test_a_lock_lost_while_draining_opt_outs_fails_none_of_them(make_sandbox, tmp_path):
    """The drain's vendor calls are fenced too; a lost lock stops it without counting a failed attempt
    against any opt-out (they would otherwise run out of attempts and stay undelivered)."""
    from click.testing import CliRunner

    from consent.schema import consent_outbox
    from sync.cli.app import cli

    sb, config = small_book(make_sandbox, tmp_path)
    emails = sorted(p.email for p in sb.book.people if p.in_crm and p.in_esp)[:3]
    for email in emails:
        result = CliRunner().invoke(cli, ["consent", "record", str(config), "--tenant", "firm", "--email", email,
                                          "--purpose", "email_marketing", "--state", "withdrawn"])
        assert result.exit_code == 0, result.output
    cfg = load_config(config)
    store = open_store(cfg.store)
    with store.engine.connect() as conn:
        queued = conn.execute(sa.select(sa.func.count()).select_from(consent_outbox)).scalar_one()
    assert queued >= 3, "the opt-outs queued nothing to drain"
    sb.calls.clear()
    sb.faults["hubspot"].set(delay=0.3)
    sb.faults["mailchimp"].set(delay=0.3)
    try:
        report, stolen = run_losing_the_lease(cfg, config, store, lambda: bool(sb.calls.calls))
        assert stolen
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(consent_outbox)).mappings().all()
    finally:
        store.close()
    assert report["status"] == STOPPED and "lock was lost" in (report.get("error") or ""), report
    assert len(sb.calls.calls) <= 2, "calls were made after the lock was lost"  # the one(s) already on the wire
    assert [r["status"] for r in rows if r["status"] != "done"], "the drain finished: the test proved nothing"
    assert all(r["status"] in ("pending", "done") for r in rows), [(r["status"], r["last_error"]) for r in rows]
    assert not any("lock" in (r["last_error"] or "") for r in rows), [r["last_error"] for r in rows]

"""End to end over real HTTP: the official-SDK connectors against the sandbox vendors, SQLite store.

Vendor state is read back through the vendors' own APIs and compared with what segsync decided:
segments per contact in HubSpot, segsync tags per member in Mailchimp, nothing for the holdout
or for anyone without consent, and a second run that makes no write call at all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from sync.config import load_config
from sync.run.pipeline import RunOptions, run_tenant
from sync.run.plan import CRM
from sync.store import open_store
from tests.configs import sandbox_config

READ_POSTS = ("/search", "/batch/read")  # HubSpot reads sent as POST


def writes(sb, vendor: str) -> list:
    """Calls that change vendor data (HubSpot's search and batch read are POSTs but read only)."""
    return [c for c in sb.calls.writes(vendor) if not c.path.endswith(READ_POSTS)]


def write_config(tmp_path: Path, sb) -> Path:
    return sandbox_config(tmp_path, sb)


def hubspot_segments(sb) -> dict[str, set[str]]:
    """email -> segments in the segsync property, read through HubSpot's list API."""
    out, after = {}, None
    while True:
        params = {"limit": 100, "properties": "email,segsync_segments"}
        if after:
            params["after"] = after
        r = requests.get(f"{sb.hubspot_url}/crm/v3/objects/contacts", params=params,
                         headers={"Authorization": f"Bearer {sb.hubspot_token}"}, timeout=10)
        r.raise_for_status()
        body = r.json()
        for c in body["results"]:
            props = c["properties"]
            if props.get("email"):
                out[props["email"].lower()] = {s for s in (props.get("segsync_segments") or "").split(";") if s}
        after = (body.get("paging") or {}).get("next", {}).get("after")
        if not after:
            return out


def mailchimp_members(sb) -> dict[str, tuple[str, set[str]]]:
    """email -> (status, segsync tags), read through Mailchimp's members API."""
    out, offset = {}, 0
    while True:
        r = requests.get(
            f"{sb.mailchimp_url}/lists/{sb.mailchimp_list_id}/members",
            params={"count": 1000, "offset": offset},
            auth=("x", sb.mailchimp_key),
            timeout=10,
        )
        r.raise_for_status()
        members = r.json()["members"]
        for m in members:
            out[m["email_address"].lower()] = (
                m["status"],
                {t["name"] for t in m.get("tags", []) if t["name"].startswith("segsync:")},
            )
        offset += len(members)
        if not members:
            return out


def sync_once(config: Path) -> dict:
    cfg = load_config(config)
    store = open_store(cfg.store)
    try:
        return run_tenant(cfg, cfg.tenants[0], store, RunOptions(), base_dir=config.parent)
    finally:
        store.close()


def check_vendor_state(config: Path, sb) -> None:
    """Each vendor's state equals segsync's decision for the person behind each record."""
    cfg = load_config(config)
    store = open_store(cfg.store)
    try:
        from sync.run.gate import ConsentGate

        segs: dict[str, set[str]] = {}
        held = set()
        for r in store.segment_members("firm"):
            if r["holdout"]:
                held.add(r["contact_id"])
            else:
                segs.setdefault(r["contact_id"], set()).add(r["segment"])
        verdicts = ConsentGate(store, cfg.tenants[0], "hubspot", "mailchimp").decide_people(store.addresses("firm"))
        person = {v: {e: c for c, e in store.identity_emails("firm", v).items()} for v in ("hubspot", "mailchimp")}
    finally:
        store.close()
    assert segs, "no segment members: the check would prove nothing"
    for email, have in hubspot_segments(sb).items():
        cid = person["hubspot"].get(email)
        want = segs.get(cid, set()) if cid and verdicts[cid][0] else set()
        assert have == want, f"HubSpot {email}: {have} != {want}"
        assert not (have and cid in held), f"holdout contact {email} holds {have}"
    for email, (status, tags) in mailchimp_members(sb).items():
        cid = person["mailchimp"].get(email)
        profiling, email_ok, _ = verdicts.get(cid, (False, False, "")) if cid else (False, False, "")
        want = (
            {f"segsync:{s}" for s in segs.get(cid, set())}
            if status == "subscribed" and profiling and email_ok
            else set()
        )
        assert tags == want, f"Mailchimp {email} ({status}): {tags} != {want}"
        if status != "subscribed" or not email_ok:
            assert not tags, f"{email} without email consent holds {tags}"


def test_sync_makes_vendor_state_equal_the_plan_and_rerun_writes_nothing(make_sandbox, tmp_path):
    sb = make_sandbox(contacts=600, seed=5)
    config = write_config(tmp_path, sb)
    report = sync_once(config)
    assert report["status"] == "ok", report
    assert report["push"]["totals"].get("sent", 0) > 0
    check_vendor_state(config, sb)
    assert sb.mailchimp.subscribe_attempts == [], "segsync tried to set someone subscribed"
    before = {v: len(writes(sb, v)) for v in ("hubspot", "mailchimp")}
    report = sync_once(config)
    assert report["status"] == "ok"
    after = {v: writes(sb, v) for v in before}
    assert {v: len(c) for v, c in after.items()} == before, (
        "a re-run with no change made write calls",
        [(c.method, c.path) for v in after for c in after[v][before[v] :]],
    )


def test_sigkill_mid_push_then_resume_converges_without_duplicates(make_sandbox, tmp_path):
    sb = make_sandbox(contacts=600, seed=5)
    config = write_config(tmp_path, sb)
    sb.faults["hubspot"].set(delay=0.05, only_paths=("/crm/v3/objects/contacts/batch/update",))
    env = {**os.environ, "CI": "true"}
    log = tmp_path / "killed-run.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sync", "sync", str(config)], env=env, stdout=subprocess.DEVNULL, stderr=err
        )
        deadline = time.monotonic() + 120
        while sb.calls.count("hubspot", "POST", "/crm/v3/objects/contacts/batch/update") < 2:
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the push never started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    sb.faults["hubspot"].reset()
    killed_batches = sb.calls.count("hubspot", "POST", "/crm/v3/objects/contacts/batch/update")
    report = sync_once(config)
    assert report["status"] == "ok", report
    check_vendor_state(config, sb)
    # Every contact is written once, plus at most the one batch that was in flight at the kill.
    total_updates = killed_batches + report["push"]["batches"].get(CRM, 0)
    contacts = report["contacts"]["in_crm"]
    assert total_updates <= -(-contacts // 100) + 1, (killed_batches, report["push"]["batches"])


def test_faults_are_survived_and_failures_retried_next_run(make_sandbox, tmp_path):
    sb = make_sandbox(contacts=600, seed=5)
    config = write_config(tmp_path, sb)
    sb.faults["hubspot"].set(error_rate=0.05, storm=5)
    sb.faults["mailchimp"].set(error_rate=0.05, storm=3)
    # and HubSpot answers some batch updates 207 with a few inputs refused
    sb.hubspot.fail_batch_inputs(rate=0.02, seed=3, count=4, message="Property values were not valid (simulated)")
    report = sync_once(config)
    assert report["status"] == "failed_records", report.get("error")
    sb.faults["hubspot"].reset()
    sb.faults["mailchimp"].reset()
    sb.hubspot.fail_batch_inputs()
    failed = report["push"]["totals"].get("failed", 0)
    messages = [f["message"] for f in report["push"]["failures"]]
    assert sum("(simulated)" in m for m in messages) == 4, messages  # each with HubSpot's own message
    again = sync_once(config)
    assert again["status"] == "ok"
    # The second run sends exactly what did not make it the first time.
    assert again["plan"]["total_changes"] == failed
    check_vendor_state(config, sb)


def test_sync_cli_exit_code_and_report(make_sandbox, tmp_path):
    sb = make_sandbox(contacts=300, seed=4)
    config = write_config(tmp_path, sb)
    dry = subprocess.run(
        [sys.executable, "-m", "sync", "sync", str(config), "--dry-run"],
        capture_output=True,
        text=True,
        env={**os.environ, "CI": "true"},
        timeout=300,
    )
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing sent" in dry.stdout and "Plan and push" in dry.stdout
    assert writes(sb, "hubspot") == [] and writes(sb, "mailchimp") == []
    real = subprocess.run([sys.executable, "-m", "sync", "sync", str(config)], capture_output=True, text=True,
                          env={**os.environ, "CI": "true"}, timeout=300)
    assert real.returncode == 0, real.stderr
    assert sb.hubspot_token not in real.stdout + real.stderr
    # Secrets never reach the store either (run reports, outcomes, ledger evidence, cursors).
    stored = (tmp_path / "segsync.db").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("segsync.db-*"))
    for secret in (sb.hubspot_token, sb.mailchimp_key, sb.mailchimp_key.split("-")[0], "e2e-webhook-secret-0123"):
        assert secret.encode() not in stored, "a secret was written to the store"

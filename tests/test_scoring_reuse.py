"""A run whose scoring inputs did not change reuses the stored scores and segments; any input that changed
scores in full (``sync.run.reuse``).

One planted-signal book (300 contacts, ``tests/configs.py``) through ``segsync sync`` over real HTTP, run after
run, each time with one kind of change at the vendors, in the consent ledger or in the config. A stale reuse
would push segments computed from data that is no longer true, so every category of input is changed once
and must be seen; a change to something scoring does not read (a contact's first name) must not cost a rescore.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sandbox import Sandbox
from sandbox.hubspot.schema import iso
from sync.cli import cli
from sync.store import open_store
from tests.configs import signal_sandbox
from tests.test_rerun_quiet import planned, sync, writes


def stored_scores(config: Path) -> dict[str, float]:
    """contact id -> churn_risk as saved in the store."""
    store = open_store(f"sqlite:///{config.parent / 'segsync.db'}")
    try:
        return {cid: value for cid, name, value, _ in store.score_rows("firm") if name == "churn_risk"}
    finally:
        store.close()


def hubspot_record(sb: Sandbox, email: str) -> Any:
    hs = sb.hubspot
    return next(r for r in hs.contacts.records.values() if (r.properties.get("email") or "").lower() == email)


def scored_emails(config: Path) -> dict[str, str]:
    """email -> contact id of the scored contacts that HubSpot holds."""
    store = open_store(f"sqlite:///{config.parent / 'segsync.db'}")
    try:
        scored = {cid for cid, name, _, _ in store.score_rows("firm") if name == "churn_risk"}
        return {c["email"]: c["contact_id"] for c in store.contacts("firm")
                if c["contact_id"] in scored and c["email"] and "email" in (c["properties"] or {})}
    finally:
        store.close()


def model_inputs(config: Path) -> list[str]:
    meta = json.loads((config.parent / "models" / "firm" / "churn_risk" / "metadata.json").read_text())
    return list(meta["feature_names"])


def edit(sb: Sandbox, email: str, **props: str) -> None:
    """Change a HubSpot contact as a user would in HubSpot (the incremental pull reads it back)."""
    hs = sb.hubspot
    with hs.lock:
        rec = hubspot_record(sb, email)
        rec.properties.update(props)
        hs.contacts.touch(rec, hs.clock())


def reused(report: dict[str, Any]) -> str:
    return str(report["scoring"].get("reused") or "")


@pytest.fixture
def settled(monkeypatch):
    """HubSpot's search reads what was written up to the run's start (the simulator indexes at once), so an edit
    made between two runs is pulled by the next one rather than 30 s later."""
    from sync.config import wiring

    build = wiring.build_crm

    def build_crm(*args: Any, **kwargs: Any) -> Any:
        crm = build(*args, **kwargs)
        crm.settle_ms = 0
        return crm

    monkeypatch.setattr(wiring, "build_crm", build_crm)


@pytest.mark.slow
def test_unchanged_inputs_reuse_the_scores_and_each_kind_of_change_rescores(make_sandbox, tmp_path, settled):
    """Eleven runs of a 300-contact book: each step needs a whole run, and one book keeps the training (most of
    the time) to the first run."""
    sb, config = signal_sandbox(make_sandbox, tmp_path, seed=5)
    first = sync(config)
    assert not reused(first) and writes(sb), "the first run must score and push, or the re-runs prove nothing"

    # 1. Nothing changed: the stored scores are reused, the plan is empty, nothing is written.
    before = len(writes(sb))
    quiet = sync(config)
    assert "reused" in reused(quiet), quiet["scoring"]
    assert all(m["reused"] for m in quiet["scoring"]["models"].values())
    assert planned(quiet) == {} and writes(sb)[before:] == []
    assert quiet["segments"] == first["segments"] and quiet["scoring"]["scored"] == first["scoring"]["scored"]
    text = CliRunner().invoke(cli, ["sync", str(config)], obj={}).output
    assert "were reused: nothing scoring reads changed" in text, text[-1500:]

    people = scored_emails(config)
    emails = sorted(people)

    # 2. A property scoring does not read (a first name) changes: still reused.
    edit(sb, emails[0], firstname="Renamed")
    report = sync(config)
    assert report["pull"]["hubspot.contacts"]["changed"] >= 1
    assert "reused" in reused(report)

    # 2b. A person whose Mailchimp address is their CRM contact's additional one unsubscribes at Mailchimp: the
    #     withdrawal is the only input that changes. The contact's address stays the CRM's: it used to follow
    #     whichever record was pulled last, so the next run, re-pulling the CRM record the opt-out was propagated
    #     to, rescored on a "changed" contact (and so did every run at 10,000 contacts in bench_sync.py).
    moved = next(p for p in sb.book.people if p.previous_email and p.esp_email == p.previous_email
                 and p.esp_status == "subscribed" and p.in_crm)
    sb.mailchimp.unsubscribe(moved.esp_email)
    time.sleep(1.1)  # Mailchimp pulls read up to the run's start floored to the second
    report = sync(config)
    assert report["consent"]["withdrawals_recorded"] == 1 and report["scoring"]["changed_inputs"] == ["allowed"]
    again = sync(config)
    assert "reused" in reused(again), again["scoring"]
    store = open_store(f"sqlite:///{config.parent / 'segsync.db'}")
    try:
        assert moved.email in {c["email"] for c in store.contacts("firm")}
        assert moved.previous_email not in {c["email"] for c in store.contacts("firm")}
    finally:
        store.close()

    # 3. A new event (an upgrade won today, a deal: no contact property moves): scored in full, and that
    #    person's churn risk moves.
    scores = stored_scores(config)
    buyer = emails[1]
    hs = sb.hubspot
    with hs.lock:
        now = hs.clock()
        rec = hubspot_record(sb, buyer)
        deal = hs.deals.add({"dealname": "Upgrade (test)", "amount": "25000.00", "closedate": iso(now - timedelta(
            minutes=5)), "dealtype": "upgrade", "dealstage": "closedwon", "pipeline": "default"}, now)
        deal.associations["contacts"] = [rec.id]
        rec.associations.setdefault("deals", []).append(deal.id)
    report = sync(config)
    assert reused(report) == "" and report["pull"]["hubspot.engagement"]["events"] >= 1
    assert "events" in report["scoring"]["changed_inputs"]
    assert stored_scores(config)[people[buyer]] != scores[people[buyer]]

    # 4. A property a model reads changes: scored in full.
    inputs = [n for n in model_inputs(config) if n in hubspot_record(sb, emails[2]).properties]
    assert inputs, f"no model input is a HubSpot property: {model_inputs(config)}"
    old = hubspot_record(sb, emails[2]).properties.get(inputs[0])
    edit(sb, emails[2], **{inputs[0]: "7" if old != "7" else "8"})
    assert reused(sync(config)) == ""
    assert "reused" in reused(sync(config))  # and settled again

    # 5. The person objects to profiling: scored in full, without them.
    objector = emails[3]
    result = CliRunner().invoke(cli, ["consent", "record", str(config), "--tenant", "firm", "--email", objector,
                                      "--purpose", "profiling", "--state", "withdrawn"], obj={})
    assert result.exit_code == 0, result.output
    report = sync(config)
    # (the person who unsubscribed at Mailchimp in 2b is not profiled either: one less again)
    assert reused(report) == "" and report["scoring"]["scored"] == first["scoring"]["scored"] - 2
    assert report["scoring"]["changed_inputs"] == ["allowed"]
    assert people[objector] not in stored_scores(config)

    # 6. The config moves a segment's cut (top 20 % -> top 40 %): scored in full, the segment grows.
    config.write_text(config.read_text().replace("top_percent: 20", "top_percent: 40"))
    report = sync(config)
    assert reused(report) == "" and report["scoring"]["changed_inputs"] == ["config"]
    assert report["segments"]["churn_watch"]["members"] > first["segments"]["churn_watch"]["members"]

    # 7. --retrain and --full-refresh always score in full.
    assert reused(sync(config, "--retrain")) == ""
    assert reused(sync(config, "--full-refresh")) == ""


def test_a_crash_while_saving_scores_leaves_no_mark_so_the_next_run_scores_in_full(tmp_path):
    """The mark is cleared before new scores are saved and written after the segments: a crash in between
    must not leave the old mark next to half-replaced scores."""
    import pandas as pd

    from scoring.segments import SegmentAssignment
    from sync.run.pipeline import TenantRun
    from sync.run.scorer import ScoreResult

    store = open_store(f"sqlite:///{tmp_path / 'segsync.db'}")
    store.set_scoring_mark("t", "the mark of the scores stored before")
    result = ScoreResult(scores={"s": pd.Series({"c1": 0.5})}, mark="the mark of the new scores",
                         assignment=SegmentAssignment(members={"seg": ["c1"]}, holdout={"seg": []}))
    broken = type(store)(store.engine)

    def crash(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("killed while saving segments")

    broken.save_segments = crash  # type: ignore[method-assign]
    run = type("Run", (), {"tenant": type("Tenant", (), {"id": "t"})(), "store": broken})()
    with pytest.raises(RuntimeError):
        TenantRun._save_scores(run, result)  # type: ignore[arg-type]
    assert store.scoring_mark("t") is None
    run.store = store
    TenantRun._save_scores(run, result)  # type: ignore[arg-type]
    assert store.scoring_mark("t") == "the mark of the new scores"
    assert [(cid, name, value) for cid, name, value, _ in store.score_rows("t")] == [("c1", "s", 0.5)]
    store.close()

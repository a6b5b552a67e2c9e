"""A book gated, planned and pushed in chunks (issue 21) ends exactly where one chunk ends, and keeps the invariants.

The run reads its contacts a chunk at a time; with a chunk far smaller than the book (97 of 900, and
smaller than a CRM batch of 100) every step crosses chunk boundaries. The reference is the same book
run as one chunk: same report, same vendor state, and the chunked re-run writes nothing. A crash or a
shutdown between chunks resumes without loss or duplicates.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from sync.config import load_config_text
from sync.run.gate import ConsentGate
from sync.run.pipeline import RunOptions, TenantRun
from sync.run.plan import CRM, TAGS
from sync.store import open_store
from tests.fakes import FakeCrm, FakeEsp, make_book
from tests.test_pipeline import CONFIG, CONSENT, tagged

pytestmark = pytest.mark.slow  # ten syncs of a 900-person book: in `make test`, out of `make test-fast`
SMALL = 97


class World:
    def __init__(self, db_url: str, models: Any) -> None:
        self.cfg = load_config_text(CONFIG.format(consent=CONSENT, store=db_url, models=models))
        self.store = open_store(db_url)
        people, events = make_book()
        emails = [p["email"] for p in people.values()]
        self.crm = FakeCrm(people, events)
        self.esp = FakeEsp(people, unsubscribed=set(emails[:40]), missing=set(emails[40:60]))

    def run(self, chunk: int | None = None, **opts: Any) -> dict[str, Any]:
        run = TenantRun(self.cfg, self.cfg.tenants[0], self.store, self.crm, self.esp, RunOptions(**opts))
        if chunk:
            run.book.size = chunk
        return run.run()

    def state(self) -> tuple[Any, ...]:
        return self.crm.props, tagged(self.esp), self.crm.optout


@dataclass
class Reference:
    """The book run as one chunk: a dry run (with a selection and --plan-out rows), then the real first run."""

    dry: dict[str, Any]
    rows: list[dict[str, Any]]
    first: dict[str, Any]
    state: tuple[Any, ...]
    crm_records_sent: int


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tmp_path_factory.mktemp("models")  # shared: every world of the same book trains the same model once


@pytest.fixture(scope="module")
def reference(tmp_path_factory, models) -> Iterator[Reference]:
    one = World(f"sqlite:///{tmp_path_factory.mktemp('one') / 'one.db'}", models)
    rows: list[dict[str, Any]] = []
    dry = one.run(dry_run=True, select=("likely_upgrade",), plan_sink=lambda _t, r: rows.extend(r))
    first = one.run()
    yield Reference(dry, rows, first, copy.deepcopy(one.state()), sum(one.crm.batch_sizes))
    one.store.close()


@pytest.fixture
def chunked(tmp_path, models) -> Iterator[World]:
    world = World(f"sqlite:///{tmp_path / 'chunked.db'}", models)
    yield world
    world.store.close()


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    push = report.get("push") or {}
    return {"contacts": report["contacts"], "plan": report["plan"], "segments": report["segments"],
            "push": {k: push.get(k) for k in ("by_destination", "totals", "failures_total")}}


def test_a_chunked_book_plans_and_pushes_what_one_chunk_does(reference, chunked):
    rows: list[dict[str, Any]] = []
    dry = chunked.run(SMALL, dry_run=True, select=("likely_upgrade",), plan_sink=lambda _t, r: rows.extend(r))
    assert dry["status"] == "dry_run" and dry["plan"]["selected"]["changes"] > 0
    assert _comparable(dry) == _comparable(reference.dry)
    assert rows and sorted(rows, key=str) == sorted(reference.rows, key=str)  # --plan-out: every change once
    first = chunked.run(SMALL)
    assert first["status"] == reference.first["status"] == "ok"
    assert _comparable(first) == _comparable(reference.first)
    assert first["plan"]["examples"] == reference.first["plan"]["examples"]  # both walk the book in id order
    assert chunked.state() == reference.state
    writes = (chunked.crm.writes(), chunked.esp.writes())
    again = chunked.run(SMALL)
    assert again["plan"]["total_changes"] == 0 and (chunked.crm.writes(), chunked.esp.writes()) == writes
    # A few changes spread over the book: pass 1's chunk plans are kept and sent (no planning again).
    crm_ids = chunked.store.vendor_ids("acme", "fakecrm")
    emails = {c["contact_id"]: c["email"] for c in chunked.store.contacts("acme")}
    segmented = sorted(cid for cid, vid in crm_ids.items() if chunked.crm.props[vid].get("segsync_segments"))
    objectors = segmented[:: len(segmented) // 4][:4]  # four people from different chunks
    ledger = ConsentGate(chunked.store, chunked.cfg.tenants[0], "fakecrm", "fakeesp").ledger
    for cid in objectors:
        ledger.record("acme", emails[cid], "profiling", "withdrawn", basis="legitimate_interest",
                      source="preference_center", occurred_at=datetime.now(UTC))
    sent_before = sum(chunked.crm.batch_sizes)
    objected = chunked.run(SMALL)
    planned = objected["plan"]["destinations"][CRM]
    assert objected["status"] == "ok" and planned["removes"] == len(objectors) < planned["changes"] < 2 * SMALL
    # (a top-20 % segment: four people out, about as many in) - each change sent once
    assert sum(chunked.crm.batch_sizes) - sent_before == planned["changes"]
    assert all(not chunked.crm.props[crm_ids[cid]].get("segsync_segments") for cid in objectors)


def test_a_crash_between_chunks_resumes_without_loss_or_duplicates(reference, chunked):
    chunked.crm.crash_after_batches = 3  # three CRM batches of a chunk or less each, then the process dies
    with pytest.raises(SystemExit):
        chunked.run(SMALL)
    chunked.crm.crash_after_batches = None
    assert len(chunked.crm.batch_sizes) == 3
    report = chunked.run(SMALL)
    assert report["status"] == "ok"
    assert chunked.state() == reference.state
    # Every record reached the CRM once: what the crashed and the resumed run sent adds up to one run's push.
    assert sum(chunked.crm.batch_sizes) == reference.crm_records_sent


def test_a_shutdown_between_chunks_reports_the_rest_as_not_sent_and_the_next_run_sends_it(reference, chunked):
    run = TenantRun(chunked.cfg, chunked.cfg.tenants[0], chunked.store, chunked.crm, chunked.esp, RunOptions())
    run.book.size = SMALL
    chunked.esp.before_batch = run.opts.stop.set  # asked to stop while the first chunk's tags are sent
    report = run.run()
    chunked.esp.before_batch = None
    assert report["status"] == "stopped" and report["push"]["stopped"]
    planned = report["plan"]["destinations"]
    outcomes = report["push"]["by_destination"]
    for dest in (CRM, TAGS):  # every planned record ended somewhere: sent, suppressed or failed (not sent)
        assert sum(outcomes.get(dest, {}).values()) == planned[dest]["changes"]
    assert outcomes[CRM]["failed"] > 0 and report["push"]["failures_total"] >= outcomes[CRM]["failed"]
    again = chunked.run(SMALL)
    assert again["status"] == "ok"
    assert chunked.state() == reference.state
    assert sum(chunked.crm.batch_sizes) == reference.crm_records_sent


def test_the_plan_takes_the_gate_verdicts_unless_the_ledger_moved(reference, chunked, monkeypatch):
    """The gate pass and the plan's first pass decide the same people one after the other: the plan takes the
    gate's verdicts (a no-change run asked the ledger twice for everyone) - unless something was recorded in the
    ledger in between: then everyone is decided again, and an opt-out that came in while scoring is planned."""
    assert chunked.run(SMALL)["status"] == "ok"
    chunks = -(-len(chunked.store.contacts("acme")) // SMALL)
    asked: list[int] = []
    decide = ConsentGate.decide_people

    def counted(self: ConsentGate, addresses: Any) -> Any:
        asked.append(len(addresses))
        return decide(self, addresses)

    monkeypatch.setattr(ConsentGate, "decide_people", counted)
    quiet = chunked.run(SMALL)
    assert quiet["plan"]["total_changes"] == 0 and len(asked) == chunks  # the gate's questions only

    crm_ids = chunked.store.vendor_ids("acme", "fakecrm")
    emails = {c["contact_id"]: c["email"] for c in chunked.store.contacts("acme")}
    objector = next(cid for cid in sorted(crm_ids) if chunked.crm.props[crm_ids[cid]].get("segsync_segments"))
    ledger = ConsentGate(chunked.store, chunked.cfg.tenants[0], "fakecrm", "fakeesp").ledger
    score = TenantRun._score

    def objection_while_scoring(self: TenantRun, allowed: Any) -> Any:
        ledger.record("acme", emails[objector], "profiling", "withdrawn", basis="legitimate_interest",
                      source="preference_center", occurred_at=datetime.now(UTC))
        return score(self, allowed)

    monkeypatch.setattr(TenantRun, "_score", objection_while_scoring)
    asked.clear()
    report = chunked.run(SMALL)
    assert report["plan"]["destinations"][CRM]["removes"] >= 1 and len(asked) >= 2 * chunks
    assert not chunked.crm.props[crm_ids[objector]].get("segsync_segments")

"""A book gated, planned and pushed in chunks (issue 21) ends exactly where one chunk ends, and keeps the invariants.

The run reads its contacts a chunk at a time; with a chunk far smaller than the book (97 of 900, and
batches of 100 that straddle chunks) every step crosses chunk boundaries. The reference is the same book
run as one chunk: same report, same vendor state, and the chunked re-run writes nothing. A crash or a
shutdown between chunks resumes without loss or duplicates.
"""

from __future__ import annotations

from typing import Any

import pytest

from sync.config import load_config_text
from sync.run.pipeline import RunOptions, TenantRun
from sync.run.plan import CRM, TAGS
from sync.store import open_store
from tests.fakes import FakeCrm, FakeEsp, make_book
from tests.test_pipeline import CONFIG, CONSENT, tagged

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


@pytest.fixture
def worlds(tmp_path):
    # One model directory: the second world reuses the first one's model (the same book trains the same one).
    one = World(f"sqlite:///{tmp_path / 'one.db'}", tmp_path / "models")
    chunked = World(f"sqlite:///{tmp_path / 'chunked.db'}", tmp_path / "models")
    yield one, chunked
    one.store.close()
    chunked.store.close()


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    push = report.get("push") or {}
    return {"contacts": report["contacts"], "plan": report["plan"], "segments": report["segments"],
            "push": {k: push.get(k) for k in ("by_destination", "totals", "failures_total")}}


def test_a_chunked_book_plans_and_pushes_what_one_chunk_does(worlds):
    one, chunked = worlds
    rows: dict[str, list[dict[str, Any]]] = {"one": [], "chunked": []}
    for name, world, size in (("one", one, None), ("chunked", chunked, SMALL)):
        # The dry run's report and --plan-out rows of a selection, then the real run.
        dry = world.run(size, dry_run=True, select=("likely_upgrade",),
                        plan_sink=lambda _t, r, name=name: rows[name].extend(r))
        assert dry["status"] == "dry_run" and dry["plan"]["selected"]["changes"] > 0
        rows[f"{name}-dry"] = [_comparable(dry)]
    assert rows["chunked"] and sorted(rows["chunked"], key=str) == sorted(rows["one"], key=str)
    assert rows["chunked-dry"] == rows["one-dry"]
    first_one, first_chunked = one.run(), chunked.run(SMALL)
    assert first_one["status"] == first_chunked["status"] == "ok"
    assert _comparable(first_chunked) == _comparable(first_one)
    assert first_chunked["plan"]["examples"] == first_one["plan"]["examples"]  # both walk the book in id order
    assert chunked.state() == one.state()
    writes = (chunked.crm.writes(), chunked.esp.writes())
    again = chunked.run(SMALL)
    assert again["plan"]["total_changes"] == 0 and (chunked.crm.writes(), chunked.esp.writes()) == writes


def test_a_crash_between_chunks_resumes_without_loss_or_duplicates(worlds):
    one, chunked = worlds
    one.run()
    chunked.crm.crash_after_batches = 3  # three CRM batches of a chunk or less each, then the process dies
    with pytest.raises(SystemExit):
        chunked.run(SMALL)
    chunked.crm.crash_after_batches = None
    assert len(chunked.crm.batch_sizes) == 3
    report = chunked.run(SMALL)
    assert report["status"] == "ok"
    assert chunked.state() == one.state()
    # Every record reached the CRM once: what the crashed and the resumed run sent adds up to one run's push.
    assert sum(chunked.crm.batch_sizes) == sum(one.crm.batch_sizes)


def test_a_shutdown_between_chunks_reports_the_rest_as_not_sent_and_the_next_run_sends_it(worlds):
    one, chunked = worlds
    one.run()
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
    assert chunked.state() == one.state()
    assert sum(chunked.crm.batch_sizes) == sum(one.crm.batch_sizes)

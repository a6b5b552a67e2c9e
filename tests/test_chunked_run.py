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

"""The typed run report: the stored/--json dict round-trips, sections a run never reached stay absent,
and the renderer and /metrics read old or partial stored reports without digging."""

from __future__ import annotations

from rich.console import Console

from sync.cli.report import render_run, runs_table
from sync.run.report import DrainSummary, PushSummary, RunReport, ScoringSummary

FULL = {
    "tenant": "acme",
    "dry_run": False,
    "status": "failed_records",
    "run_id": 7,
    "started_at": "2026-12-01T12:00:00+00:00",
    "duration_s": 1.5,
    "pull": {"hubspot.contacts": {"pages": 1, "records": 3, "new": 3, "changed": 0, "events": 0}},
    "consent": {"signals_seen": 2, "withdrawals_recorded": 1},
    "contacts": {"total": 3, "profiling_allowed": 2},
    "scoring": {
        "scored": 2,
        "as_of": "2026-12-01",
        "models": {},
        "insufficient": {"churn": "insufficient data: 2 rows"},
        "holdout_percent": 10,
        "holdout_contacts": 0,
    },
    "segments": {},
    "plan": {"total_changes": 2, "destinations": {"crm.properties": {"adds": 2}}},
    "push": {
        "by_destination": {"crm.properties": {"sent": 1, "failed": 1}},
        "totals": {"sent": 1, "failed": 1},
        "failures": [{"destination": "crm.properties", "contact_id": "c1", "message": "INVALID_EMAIL"}],
        "failures_total": 1,
        "batches": {"crm.properties": 1},
        "stopped": False,
    },
    "outbox_before": {"done": 0, "retrying": 0, "failed": 0, "errors": [], "depth": 0},
    "outbox_after": {"done": 1, "retrying": 0, "failed": 0, "errors": [], "depth": 0},
    "api": {"crm": {"total_calls": 4, "rate_limited": 0}, "esp": {}},
    "sandbox_write_calls": {"hubspot": 1},  # added by a caller (the demo): kept, not dropped
}


def test_a_stored_report_round_trips_unchanged():
    run = RunReport.from_dict(FULL)
    assert isinstance(run.push, PushSummary) and run.push.totals == {"sent": 1, "failed": 1}
    assert isinstance(run.scoring, ScoringSummary) and run.scoring.insufficient == {
        "churn": "insufficient data: 2 rows"
    }
    assert isinstance(run.outbox_after, DrainSummary) and run.outbox_after.eventful and not run.outbox_before.eventful
    assert run.extra == {"sandbox_write_calls": {"hubspot": 1}}
    assert run.to_dict() == FULL


def test_sections_a_run_never_reached_are_absent_not_empty():
    stopped = RunReport(tenant="acme", status="stopped", run_id=3, pull={"hubspot.contacts": {"pages": 1}})
    assert stopped.to_dict() == {"tenant": "acme", "status": "stopped", "dry_run": False, "run_id": 3,
                                 "pull": {"hubspot.contacts": {"pages": 1}}}
    dry = RunReport.from_dict({"tenant": "acme", "dry_run": True, "status": "dry_run", "plan": {"total_changes": 0}})
    assert dry.push is None and "push" not in dry.to_dict()


def test_the_renderer_reads_a_partial_report_and_shows_what_failed():
    console = Console(record=True, width=160)
    console.print(render_run({"tenant": "acme", "status": "error", "error": "token revoked"}))
    console.print(render_run(FULL))
    console.print(
        runs_table([{"id": 7, "tenant_id": "acme", "started_at": "2026-12-01", "status": "ok", "report": None}])
    )
    text = console.export_text()
    assert "token revoked" in text and "INVALID_EMAIL" in text and "insufficient data: 2 rows" in text


def test_metrics_count_a_run_from_its_report_and_tolerate_a_run_that_never_pushed():
    from sync.serve import Metrics

    metrics = Metrics()
    metrics.record_run(FULL)
    metrics.record_run({"tenant": "acme", "status": "error", "error": "token revoked"})
    sample = metrics.registry.get_sample_value
    assert sample("segsync_records_total", {"tenant": "acme", "outcome": "failed"}) == 1
    assert sample("segsync_api_calls_total", {"tenant": "acme", "vendor": "crm"}) == 4
    assert sample("segsync_runs_total", {"tenant": "acme", "status": "error"}) == 1

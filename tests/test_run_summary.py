"""A multi-firm run ends with one summary table; a failed firm reads as failed (never `run #None`);
`runs` counts suppressed records the way the report lists them, in the tenant's own time zone."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from sync.cli import cli
from tests.test_csv_sync import CONFIG, CONSENT, write_book


@pytest.fixture
def two_firms(tmp_path, monkeypatch):
    """csv-firm syncs; broken-firm's export is missing."""
    monkeypatch.setenv("CI", "true")
    monkeypatch.chdir(tmp_path)
    write_book(tmp_path)
    broken = CONFIG.split("tenants:\n", 1)[1].replace("id: csv-firm", "id: broken-firm").replace(
        "contacts: contacts.csv", "contacts: missing.csv").replace("output: segments-out.csv", "output: broken-out.csv")
    text = CONFIG.format(consent=CONSENT, db=tmp_path / "s.db", models=tmp_path / "models")
    text += broken.format(consent=CONSENT)
    text = text.replace("  - id: csv-firm\n", "  - id: csv-firm\n    timezone: America/New_York\n")
    (tmp_path / "segsync.yaml").write_text(text)
    return tmp_path / "segsync.yaml"


def test_two_firms_one_failing_end_with_one_summary_table(two_firms):
    result = CliRunner().invoke(cli, ["sync", str(two_firms)], obj={})
    assert result.exit_code == 1, result.output
    out = result.output
    assert "run #None" not in out and "Traceback" not in out
    summary = out[out.index("Summary: 2 firms, 1 ok, 1 need attention"):]
    lines = [line for line in summary.splitlines()[1:] if line.strip()]
    rows = {line.split()[0]: line for line in lines if line.split()[0].endswith("-firm")}
    assert set(rows) == {"csv-firm", "broken-firm"}
    ok = rows["csv-firm"].split()
    assert ok[1] == "ok" and int(ok[2].replace(",", "")) > 0 and int(ok[3].replace(",", "")) > 0  # changes, sent
    assert ok[5] == "0"  # failed
    assert re.match(r"\d+(\.\d+)?$", ok[6])  # seconds
    broken = rows["broken-firm"]
    assert broken.split()[1] == "error" and "missing.csv" in summary
    assert re.search(r"broken-firm\s+run #\d+\s+error", out)  # its own report names the logged run


def test_json_reports_of_a_failed_firm_carry_its_run_and_duration(two_firms):
    result = CliRunner().invoke(cli, ["sync", str(two_firms), "--json"], obj={})
    reports = {r["tenant"]: r for r in json.loads(result.output)}
    broken = reports["broken-firm"]
    assert broken["status"] == "error" and isinstance(broken["run_id"], int) and broken["duration_s"] is not None
    assert "missing.csv" in broken["error"]


def test_runs_counts_suppressed_like_the_report_in_the_tenants_zone(two_firms):
    from sync.cli.report import outcome_counts
    from sync.run.report import RunReport

    # Profiling needs a recorded opt-in here, and nobody gave one: every contact is suppressed, with its reason.
    text = two_firms.read_text()
    two_firms.write_text(text.replace("profiling: {basis: legitimate_interest}", "profiling: {basis: consent}", 1))
    CliRunner().invoke(cli, ["sync", str(two_firms), "--tenant", "csv-firm"], obj={})
    listing = CliRunner().invoke(cli, ["runs", str(two_firms), "--tenant", "csv-firm", "--json"], obj={})
    report = RunReport.from_dict(json.loads(listing.output)[0]["report"])
    counts = outcome_counts(report)
    not_sent = sum(report.plan["suppressed"].values())
    assert not_sent > 100
    assert counts["suppressed"] == not_sent + report.push.totals.get("suppressed", 0)
    table = CliRunner().invoke(cli, ["runs", str(two_firms), "--tenant", "csv-firm"], obj={}).output
    line = next(line for line in table.splitlines() if "csv-firm" in line)
    assert "America/New_York" in line
    assert f"{counts['suppressed']:,}" in line.split("America/New_York", 1)[1]


def test_progress_has_a_line_per_firm_and_stage_on_a_terminal_and_is_quiet_when_piped(monkeypatch):
    import io

    from rich.console import Console

    from sync.cli import run_cmds

    monkeypatch.delenv("CI", raising=False)
    with run_cmds.progress_bars(True) as bars:
        assert bars is None  # piped (as under pytest): no bars at all
    monkeypatch.setattr(run_cmds, "console", Console(file=io.StringIO(), force_terminal=True))
    screen = io.StringIO()
    monkeypatch.setattr(run_cmds, "err_console", Console(file=screen, force_terminal=True, width=100))
    with run_cmds.progress_bars(True) as bars:
        assert bars is not None
        harbor = bars("harbor")
        harbor("pull mailchimp.members", 500, 1200)  # the vendor's total arrives with the page
        harbor("pull mailchimp.members", 500, 1200)
        bars("summit")("score", 1, 1)
    text = screen.getvalue()
    assert "harbor: pull mailchimp.members" in text and "summit: score" in text
    assert "1000/1200" in text  # n of the vendor's total


def test_a_report_names_its_start_in_the_tenants_zone():
    from sync.cli.report import render_run

    report = {"tenant": "harbor", "status": "ok", "run_id": 7, "started_at": "2026-12-01T13:00:00+00:00",
              "timezone": "America/New_York", "duration_s": 1.5}
    from rich.console import Console

    console = Console(width=160, record=True)
    console.print(render_run(report))
    text = console.export_text()
    assert "run #7" in text and "started 2026-12-01 08:00:00 America/New_York" in text  # 13:00 UTC, EST


def test_an_unreachable_store_is_one_plain_sentence_without_the_password(tmp_path):
    config = tmp_path / "c.yaml"
    two = "postgresql+psycopg://segsync:hunter2-db-password@127.0.0.1:1/segsync"  # nothing listens on port 1
    config.write_text(CONFIG.format(consent=CONSENT, db="x", models=tmp_path / "m").replace("sqlite:///x", two))
    result = CliRunner().invoke(cli, ["runs", str(config)], obj={})
    assert result.exit_code == 1
    assert "store: cannot open postgresql+psycopg://segsync:***@127.0.0.1:1/segsync" in result.output
    assert "hunter2" not in result.output and "unexpected" not in result.output and "Traceback" not in result.output

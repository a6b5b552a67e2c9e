"""Hostile input (issue 20, items 6 and the low ones): a bad CSV row is quarantined at the edge, one
tenant's failure of any kind never stops the others, and ``--json`` reports a lone tenant's failure."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from connectors.csvfile.rows import parse_time
from sync.cli.app import cli
from tests.test_csv_sync import CONFIG, CONSENT, write_book


def configure(tmp_path, extra: str = "") -> None:
    write_book(tmp_path)
    (tmp_path / "segsync.yaml").write_text(
        CONFIG.format(consent=CONSENT, db=tmp_path / "s.db", models=tmp_path / "models") + extra)


def sync_json(tmp_path, *args: str) -> tuple[int, list[dict]]:
    result = CliRunner().invoke(cli, ["sync", str(tmp_path / "segsync.yaml"), "--json", *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, json.loads(result.stdout)


@pytest.mark.parametrize("text", ["9999-12-31", "9999-12-31T23:59:59Z", "1200-01-01", "99999999999999"])
def test_placeholder_and_out_of_range_times_are_rejected_at_the_edge(text):
    with pytest.raises(ValueError, match=r"future|before 1900|out of range|not ISO"):
        parse_time(text)


def test_an_event_dated_9999_is_quarantined_with_a_report_and_never_stored(tmp_path):
    configure(tmp_path)
    with (tmp_path / "events.csv").open("a") as f:
        first_id = (tmp_path / "contacts.csv").read_text().splitlines()[1].split(",")[0]
        f.write(f"{first_id},login,9999-12-31,,\n")
    lines = len((tmp_path / "events.csv").read_text().splitlines())
    code, reports = sync_json(tmp_path)
    assert code == 0, reports
    report = reports[0]
    assert report["status"] == "ok", report.get("error")
    quarantined = report["api"]["crm"]["quarantined"]
    assert any(f"events.csv:{lines}:" in q and "future" in q for q in quarantined), quarantined
    # Never stored: the rerun (nothing changed in the files) reads nothing and still succeeds.
    code, reports = sync_json(tmp_path)
    assert code == 0 and reports[0]["status"] == "ok", reports[0].get("error")


def test_a_tenant_failing_with_an_unexpected_error_does_not_stop_the_next(tmp_path):
    (tmp_path / "out-is-a-directory").mkdir()
    second = CONFIG.split("tenants:\n", 1)[1].replace("id: csv-firm", "id: second-firm").replace(
        "output: segments-out.csv", "output: second-out.csv")
    first_broken = CONFIG.split("tenants:\n", 1)[1].replace("id: csv-firm", "id: broken-firm").replace(
        "output: segments-out.csv", "output: out-is-a-directory")
    configure(tmp_path)
    text = (tmp_path / "segsync.yaml").read_text().split("tenants:\n", 1)[0]
    (tmp_path / "segsync.yaml").write_text(text + "tenants:\n" + first_broken.format(consent=CONSENT)
                                           + second.format(consent=CONSENT))
    code, reports = sync_json(tmp_path)
    by_tenant = {r["tenant"]: r for r in reports}
    assert by_tenant["broken-firm"]["status"] == "error" and by_tenant["broken-firm"]["error"], by_tenant["broken-firm"]
    assert by_tenant["second-firm"]["status"] == "ok", by_tenant["second-firm"].get("error")
    assert (tmp_path / "second-out.csv").exists()
    assert code == 1


def test_json_prints_the_failure_when_the_only_tenant_fails(tmp_path):
    configure(tmp_path)
    (tmp_path / "contacts.csv").unlink()
    code, reports = sync_json(tmp_path)
    assert code == 2, reports
    assert len(reports) == 1 and reports[0]["status"] == "error" and "contacts.csv" in reports[0]["error"], reports


def test_erasure_removes_the_contact_id_from_older_run_reports(tmp_path):
    from connectors.base import Contact
    from sync.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        store.store_page("t1", [Contact(source="hubspot", vendor_id="1", email="gone@x.com"),
                                Contact(source="hubspot", vendor_id="2", email="stay@x.com")], [], None)
        ids = {c["email"]: c["contact_id"] for c in store.contacts("t1")}
        gone, stay = ids["gone@x.com"], ids["stay@x.com"]
        run = store.start_run("t1", dry_run=False)
        store.finish_run(run, "failed_records", {
            "push": {"failures": [{"contact_id": gone, "message": "x"}, {"contact_id": stay, "message": "y"}]},
            "plan": {"examples": {"crm.properties": [{"contact": gone, "to": {"s": "a"}}]}},
        })
        store.erase("t1", "gone@x.com")
        report = store.runs("t1")[0]["report"]
    finally:
        store.close()
    assert gone not in json.dumps(report), report
    assert stay in json.dumps(report)  # only the erased person's ids go


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda text: text.replace("store: sqlite:///", "store: mysql://u@h/db?x=", 1), "mysql"),
        (lambda text: text + "deep: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
        (lambda text: text + "huge: " + "9" * 5001 + "\n", "huge"),
    ],
    ids=["mysql-store", "deep-nesting", "5001-digit-integer"],
)
def test_malformed_configs_get_a_clear_error_from_validate(tmp_path, mutate, needle):
    configure(tmp_path)
    path = tmp_path / "segsync.yaml"
    path.write_text(mutate(path.read_text()))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "unexpected" not in result.output, result.output

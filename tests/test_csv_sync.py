"""A CRM export as CSV, end to end through the CLI: sync, scores written back to a CSV, zero-change rerun,
and a broken file reported with file:line without writing anything."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

from tests.configs import consent_yaml
from tests.fakes import make_book

CONSENT = consent_yaml("csv-webhook-secret-0123")

CONFIG = """version: 1
store: sqlite:///{db}
model_dir: {models}
tenants:
  - id: csv-firm
    crm:
      type: csv
      contacts: contacts.csv
      events: events.csv
      event_columns: {{contact_id: contact_id, type: type, timestamp: occurred_at, value: value, url: url}}
      output: segments-out.csv
    {consent}
    scores:
      - {{name: upgrade, kind: propensity, outcome: {{event: upgrade}}, horizon_days: 90}}
    segments:
      - {{name: likely_upgrade, score: upgrade, top_percent: 20}}
"""


def write_book(folder) -> None:
    people, events = make_book(n=900, seed=5)
    with (folder / "contacts.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "email", "tier"])
        for vid, p in people.items():
            w.writerow([vid, p["email"], p["props"]["tier"]])
    with (folder / "events.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["contact_id", "type", "occurred_at", "value", "url"])
        for e in events:
            w.writerow([e.contact_vendor_id, e.type, e.occurred_at.isoformat(), "" if e.value is None else e.value,
                        e.attributes.get("url", "")])


def segsync(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sync", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "CI": "true"}, timeout=300)


def test_csv_export_sync_writes_segments_and_reruns_with_no_change(tmp_path):
    write_book(tmp_path)
    (tmp_path / "segsync.yaml").write_text(
        CONFIG.format(consent=CONSENT, db=tmp_path / "s.db", models=tmp_path / "models")
    )
    first = segsync("sync", "segsync.yaml", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    with (tmp_path / "segments-out.csv").open() as f:
        rows = list(csv.DictReader(f))
    members = [r for r in rows if "likely_upgrade" in (r.get("segsync_segments") or "")]
    assert len(members) > 50, f"{len(members)} segment members written"
    second = segsync("sync", "segsync.yaml", "--json", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert '"total_changes": 0' in second.stdout


def test_broken_csv_is_reported_with_file_and_line_and_nothing_is_written(tmp_path):
    write_book(tmp_path)
    (tmp_path / "contacts.csv").write_text("identifier;mail\n1;a@example.com\n")  # wrong header and delimiter
    (tmp_path / "segsync.yaml").write_text(
        CONFIG.format(consent=CONSENT, db=tmp_path / "s.db", models=tmp_path / "models")
    )
    result = segsync("sync", "segsync.yaml", cwd=tmp_path)
    assert result.returncode in (1, 2)
    assert "contacts.csv" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "segments-out.csv").exists()


def test_one_broken_firm_does_not_stop_the_others(tmp_path):
    """An agency's YAML holds many firms: a missing export for one is reported, the rest still sync."""
    write_book(tmp_path)
    broken = CONFIG.split("tenants:\n", 1)[1].replace("id: csv-firm", "id: broken-firm").replace(
        "contacts: contacts.csv", "contacts: missing.csv").replace("output: segments-out.csv", "output: broken-out.csv")
    (tmp_path / "segsync.yaml").write_text(
        CONFIG.format(consent=CONSENT, db=tmp_path / "s.db", models=tmp_path / "models")
        + broken.format(consent=CONSENT)
    )
    result = segsync("sync", "segsync.yaml", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "missing.csv" in result.stdout and "Traceback" not in result.stdout + result.stderr
    assert (tmp_path / "segments-out.csv").exists() and not (tmp_path / "broken-out.csv").exists()

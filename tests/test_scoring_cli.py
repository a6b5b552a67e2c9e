"""The scoring path as users drive it: `segsync score` and `segsync sync` on a CSV book (not the library).

- `score` on an empty store says to run `segsync sync` first (exit 2), not "0 positives";
- with no declared features, property inputs are discovered and named; a sensitive attribute is never one;
- contacts without an email are counted and reported; an empty segment comes with its reason;
- fairness of the segments actually pushed: a four-fifths breach is a warning in the sync report, and
  `fairness: block` keeps the breaching segment out of the push;
- `validate` refuses a sensitive attribute listed as a model input.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.configs import consent_yaml

CONSENT = consent_yaml("csv-webhook-secret-0123")

CONFIG = """version: 1
store: sqlite:///{db}
model_dir: {models}
tenants:
  - id: firm
    crm:
      type: csv
      contacts: contacts.csv
      events: events.csv
      event_columns: {{contact_id: contact_id, type: type, timestamp: occurred_at}}
      output: out.csv
    {consent}
    scores:
      - {{name: opens_account, kind: propensity, outcome: {{property: converted, equals: "yes"}}}}
    segments:
      - {{name: likely, score: opens_account, top_percent: 20}}
      - {{name: certain, score: opens_account, min: 0.999}}
    features: {features}
    fairness: {fairness}
"""


def write_book(folder: Path, n: int = 2000, seed: int = 7) -> None:
    """Income drives the outcome and differs by group: a top-20% segment under-selects group B."""
    rng = np.random.default_rng(seed)
    group = np.where(rng.random(n) < 0.5, "A", "B")
    income = rng.normal(loc=np.where(group == "A", 1.0, -1.0), scale=1.0)
    visits = rng.poisson(3, size=n)
    y = rng.random(n) < 1 / (1 + np.exp(-(-1.5 + 1.6 * income + 0.1 * visits)))
    with (folder / "contacts.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "email", "income", "visits", "gender", "converted"])
        for i in range(n):
            email = "" if i < 7 else f"p{i}@example.com"  # seven contacts nobody can check consent for
            w.writerow([f"p{i}", email, round(float(income[i]), 3), int(visits[i]), group[i], "yes" if y[i] else "no"])
    (folder / "events.csv").write_text("contact_id,type,occurred_at\n")


def segsync(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sync", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "CI": "true"}, timeout=300)


def config(folder: Path, features: str = "{sensitive_attributes: [gender]}", fairness: str = "warn") -> None:
    (folder / "segsync.yaml").write_text(CONFIG.format(consent=CONSENT, db=folder / "s.db", models=folder / "models",
                                                       features=features, fairness=fairness))


def test_score_on_an_empty_store_says_run_sync_first(tmp_path):
    write_book(tmp_path, n=50)
    config(tmp_path)
    result = segsync("score", "segsync.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "run `segsync sync CONFIG` first" in result.stderr + result.stdout
    assert "positives" not in result.stderr + result.stdout and "Traceback" not in result.stderr


def test_validate_refuses_a_sensitive_attribute_used_as_a_model_input(tmp_path):
    write_book(tmp_path, n=50)
    config(tmp_path, features="{numeric_properties: [income], categorical_properties: [gender], "
                              "sensitive_attributes: [gender]}")
    result = segsync("validate", "segsync.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "sensitive attribute(s) gender listed as model inputs" in result.stderr + result.stdout


def test_sync_reports_fairness_breach_no_email_and_empty_segment_and_score_names_discovered_inputs(tmp_path):
    write_book(tmp_path)
    config(tmp_path)
    run = segsync("sync", "segsync.yaml", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    report = report[0] if isinstance(report, list) else report
    scoring = report["scoring"]
    assert "opens_account" not in scoring["insufficient"], scoring["insufficient"]
    warnings = scoring["warnings"]
    assert any(w.startswith("7 contact(s) have no email address") for w in warnings), warnings
    assert any(w.startswith("segment certain is empty: no contact passes the rule (min 0.999") for w in warnings)
    breach = [w for w in warnings if w.startswith("fairness: segment likely fails the four-fifths rule by gender")]
    assert breach, warnings
    fair = scoring["fairness"]["likely"]["gender"]
    rates = {g["group"]: g["membership_rate"] for g in fair["groups"]}
    assert rates["A"] > rates["B"] and fair["disparate_impact"] < 0.8 and fair["passes_four_fifths"] is False
    assert report["segments"]["likely"]["members"] > 0  # warn: pushed, and said so
    human = segsync("sync", "segsync.yaml", cwd=tmp_path)  # the readable report of a rerun shows it too
    assert human.returncode == 0 and "warning: fairness: segment likely fails the four-fifths" in human.stdout

    score = segsync("score", "segsync.yaml", "--json", cwd=tmp_path)
    assert score.returncode == 0, score.stderr
    out = json.loads(score.stdout)
    card = out["scores"][0]
    assert set(card["extra"]["property_inputs"]) == {"income", "visits"}  # gender is sensitive, converted the outcome
    assert any("discovered automatically: income, visits" in n for n in out["notes"])
    assert any(p["input"] == "income" and p["attribute"] == "gender" for p in card["extra"]["proxies"])
    assert card["gate"]["passed"] and card["extra"]["later_rows_check"]["ordered_by"] == "source row order"


def test_fairness_block_keeps_a_breaching_segment_out_of_the_push(tmp_path):
    write_book(tmp_path)
    config(tmp_path, fairness="block")
    run = segsync("sync", "segsync.yaml", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["segments"]["likely"]["members"] == 0
    assert "fairness: segment likely is not pushed this run (fairness: block)" in report["scoring"]["warnings"]
    with (tmp_path / "out.csv").open() as fh:
        assert not any("likely" in (r.get("segsync_segments") or "") for r in csv.DictReader(fh))

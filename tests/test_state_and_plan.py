"""State controls (`state show|reset`, `sync --full-refresh`), `--plan-out`, readable dry-run examples, `--select`."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from sync.cli import cli
from sync.run.plan import CRM, SEGMENT, TAGS, Change, Plan
from sync.run.plan_text import describe_change, in_words, mask_email
from sync.run.select import select_plan
from tests.test_csv_sync import CONFIG, CONSENT, write_book


@pytest.fixture
def firm(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.chdir(tmp_path)
    write_book(tmp_path)
    path = tmp_path / "segsync.yaml"
    path.write_text(CONFIG.format(consent=CONSENT, db=tmp_path / "s.db", models=tmp_path / "models")
                    .replace("  - id: csv-firm\n", "  - id: csv-firm\n    timezone: Europe/Paris\n"))
    return path


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), obj={}, input=input)


def sync_json(config, *extra: str) -> dict:
    result = invoke("sync", str(config), "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)[0]


def pulled(report: dict) -> int:
    return sum(s.get("records", 0) for s in report.get("pull", {}).values())


def test_state_reset_then_the_next_run_pulls_in_full_without_duplicate_writes(firm):
    first = sync_json(firm)
    assert pulled(first) == 900 and first["push"]["totals"]["sent"] > 0
    assert pulled(sync_json(firm)) == 0  # unchanged export: the cursor says so

    shown = json.loads(invoke("state", "show", str(firm), "--tenant", "csv-firm", "--json").output)
    streams = [s["stream"] for s in shown["streams"]]
    assert streams == ["csv.contacts", "csv.engagement"] and shown["timezone"] == "Europe/Paris"
    assert "Europe/Paris" in invoke("state", "show", str(firm), "--tenant", "csv-firm").output

    dry = invoke("state", "reset", str(firm), "--tenant", "csv-firm", "--dry-run")
    assert "would reset csv.contacts, csv.engagement" in dry.output
    refused = invoke("state", "reset", str(firm), "--tenant", "csv-firm", input="n\n")
    assert refused.exit_code == 1  # aborted at the confirmation
    assert pulled(sync_json(firm)) == 0  # neither the dry run nor the refusal reset anything

    typo = invoke("state", "reset", str(firm), "--tenant", "csv-firm", "--stream", "csv.contact", "--yes")
    assert typo.exit_code == 2 and "did you mean csv.contacts?" in typo.output
    done = invoke("state", "reset", str(firm), "--tenant", "csv-firm", "--stream", "csv.contacts", "--yes")
    assert done.exit_code == 0 and "reset csv.contacts" in done.output
    after = sync_json(firm)
    assert after["pull"]["csv.contacts"]["records"] == 900 and after["pull"]["csv.engagement"].get("events", 0) == 0
    assert after["push"]["totals"].get("sent", 0) == 0  # the vendors already have it all: a full pull writes nothing

    refreshed = sync_json(firm, "--full-refresh")
    assert refreshed["pull"]["csv.contacts"]["records"] == 900 and refreshed["pull"]["csv.engagement"]["events"] > 0


def test_plan_out_writes_the_whole_plan_and_dry_run_examples_are_readable(firm, tmp_path):
    out = tmp_path / "plan.csv"
    result = invoke("sync", str(firm), "--dry-run", "--plan-out", str(out))
    assert result.exit_code == 0, result.output
    with out.open() as f:
        rows = list(csv.DictReader(f))
    report = sync_json(firm, "--dry-run")
    assert len(rows) == report["plan"]["total_changes"] > 0
    assert {r["destination"] for r in rows} == {CRM} and {r["tenant"] for r in rows} == {"csv-firm"}
    joined = [r for r in rows if r["joined"]]
    assert joined and all(r["joined"] == "likely_upgrade" for r in joined)
    assert all(r["email"].count("*") == 3 and "@" in r["email"] for r in rows)  # masked, domain kept
    assert all(r["vendor_id"] not in ("", "-") for r in rows)  # the CRM's own record id
    assert any("upgrade set to 0." in r["scores"] for r in rows)
    # the dry-run report shows the same: masked email, vendor id, the move in words; no internal hash or dict
    assert "joined likely_upgrade" in result.output and "***@" in result.output
    assert "{'segsync_segments'" not in result.output


def change(dest: str, previous, desired, cid: str = "c1") -> Change:
    return Change(dest, cid, "jane.doe@example.com", "vid", desired, previous)


def test_changes_are_described_in_words_with_a_masked_email():
    c = change(CRM, {"segs": "a", "segsync_score_p": "0.42"}, {"segs": "b", "segsync_score_p": "0.61"})
    row = describe_change(c, "1234", segment_property="segs", tag_prefix="segsync:")
    assert (row["email"], row["vendor_id"], row["action"]) == ("j***@example.com", "1234", "update")
    assert in_words(row) == "joined b; left a; p 0.42 -> 0.61"
    assert in_words(describe_change(change(TAGS, ["segsync:a"], None), "h", segment_property="segs",
                                    tag_prefix="segsync:")) == "left a"
    assert mask_email(None) == "-"


def test_select_pushes_only_one_segments_moves_and_never_holds_back_consent_clearing():
    plan = Plan("t", segment_property="segs")
    plan.changes = {
        CRM: [change(CRM, {"segs": "a", "segsync_score_p": "0.1"}, {"segs": "a;b", "segsync_score_p": "0.9"}, "c1"),
              change(CRM, {"segs": "a"}, {"segs": "a", "segsync_score_p": "0.5"}, "c2"),  # score only: not selected
              change(CRM, {"segs": "c"}, None, "c3")],  # consent clearing: always sent
        TAGS: [change(TAGS, ["segsync:a"], ["segsync:b", "segsync:c"], "c1")],
        SEGMENT + "b": [change(SEGMENT + "b", None, True, "c1")],
        SEGMENT + "c": [change(SEGMENT + "c", None, True, "c1")],
    }
    picked = select_plan(plan, ["b"], "segsync:")
    crm = {c.contact_id: c.desired for c in picked.changes[CRM]}
    assert crm == {"c1": {"segs": "a;b", "segsync_score_p": "0.1"}, "c3": None}  # b joined; a and the score untouched
    assert [c.desired for c in picked.changes[TAGS]] == [["segsync:a", "segsync:b"]]  # c waits for a full run
    assert SEGMENT + "c" not in picked.changes and len(picked.changes[SEGMENT + "b"]) == 1


def test_select_names_an_unknown_segment_clearly(firm):
    result = invoke("sync", str(firm), "--select", "segment:likely_upgrad")
    assert result.exit_code == 2 and "did you mean likely_upgrade?" in result.output


def test_chunk_plans_add_up_to_the_whole_books_plan():
    """Planning a book chunk by chunk (issue 21) is planning it whole: the chunk plans' changes, the report's counts
    and the guard's share add up, given which destinations are new for the whole book (no chunk can tell)."""
    from sync.run.plan import Person, PlanTally, build_plan

    people = [Person(f"c{i:02d}", f"p{i}@example.com", f"h{i}", f"m{i}" if i % 3 else None,
                     "unsubscribed" if i % 7 == 0 else "subscribed", i % 5 != 0, i % 4 != 0,
                     "" if i % 5 else "objected") for i in range(24)]
    segments = {p.contact_id: {"a"} if i % 2 else {"a", "b"} for i, p in enumerate(people)}
    scores = {p.contact_id: {"p": i / 24} for i, p in enumerate(people)}
    # Confirmed state only for the second half of the book: the first chunks alone would think it new.
    last = {CRM: {p.contact_id: json.dumps({"segs": "a", "segsync_score_p": "0.10"}, sort_keys=True,
                                           separators=(",", ":")) for p in people[12:]},
            TAGS: {p.contact_id: '["segsync:a"]' for p in people[14:]}}
    unsure = {TAGS: {people[20].contact_id}}
    kwargs = dict(property_name="segs", score_names=["p"], segment_names=["a", "b"], push_scores=True,
                  esp_tags=True, esp_segments=False, tag_prefix="segsync:", has_esp=True)
    whole = build_plan("t", people, segments, scores, last, unsure=unsure, **kwargs)
    assert whole.changed_contacts() > 0 and whole.forget and whole.suppressed
    tally = PlanTally(initial=whole.initial)
    changes: dict[str, list[Change]] = {}
    for i in range(0, len(people), 5):
        ids = {p.contact_id for p in people[i:i + 5]}
        part = build_plan("t", people[i:i + 5], segments, scores,
                          {d: {k: v for k, v in rows.items() if k in ids} for d, rows in last.items()},
                          unsure={d: ids & keys for d, keys in unsure.items()}, initial=whole.initial, **kwargs)
        tally.add(part)
        for dest, cs in part.changes.items():
            changes.setdefault(dest, []).extend(cs)
    assert changes == whole.changes
    assert tally.summary() == whole.summary() and tally.count() == whole.count()
    assert (tally.changed_contacts, tally.total_contacts) == (whole.changed_contacts(), whole.total_contacts)
    assert tally.change_share() == whole.change_share() and tally.forget == len(whole.forget)

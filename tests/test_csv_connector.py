"""The CSV source: contacts and events from files, bad rows reported with file:line, atomic output."""

from __future__ import annotations

import csv
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.base import CrmConnector, PropertyUpdate
from connectors.csvfile import CsvConnector
from core.errors import ConfigError, InputError

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def contacts_of(conn: CsvConnector, cursor: str | None = None) -> list:
    return [c for page in conn.pull_contacts(cursor, NOW) for c in page.contacts]


def events_of(conn: CsvConnector, cursor: str | None = None) -> list:
    return [e for page in conn.pull_engagement(cursor, NOW) for e in page.events]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    contacts = write(tmp_path / "contacts.csv",
                     "id,email,signup,tier,age\n"
                     "c1, Ann@Example.COM ,2024-01-05,core,44\n"
                     "c2,bob@example.com,2024-02-01T10:00:00Z,premier,\n"
                     "c3,,2024-03-01,core,61\n")
    events = write(tmp_path / "events.csv",
                   "cid,kind,when,amount,page\n"
                   "c1,deposit,2025-01-02T03:04:05Z,1500.5,\n"
                   "c1,page_view,2025-01-03,,/pricing\n"
                   "c2,email_open,1735689600,,\n"
                   "c1,deposit,2025-01-02T03:04:05Z,1500.5,\n")
    return contacts, events


def make(files: tuple[Path, Path], tmp_path: Path, **kw) -> CsvConnector:
    contacts, events = files
    return CsvConnector(contacts, events, created_column="signup", output=tmp_path / "out" / "segsync.csv",
                        event_columns={"contact_id": "cid", "type": "kind", "timestamp": "when", "value": "amount",
                                       "url": "page"}, **kw)


def test_is_a_crm_connector_named_csv(files, tmp_path):
    conn = make(files, tmp_path)
    assert isinstance(conn, CrmConnector) and conn.name == "csv"
    conn.ensure_schema("segsync_segments", ["a"], ["s"])  # a no-op, must not fail


def test_contacts_are_read_with_normalised_email_and_properties(files, tmp_path):
    conn = make(files, tmp_path)
    got = {c.vendor_id: c for c in contacts_of(conn)}
    assert set(got) == {"c1", "c2", "c3"}
    c1 = got["c1"]
    assert (c1.source, c1.email) == ("csv", "ann@example.com")
    assert c1.properties == {"tier": "core", "age": "44", "_source_row": "2"}  # the row: time order for scoring
    assert c1.created_at == datetime(2024, 1, 5, tzinfo=UTC)
    assert got["c2"].properties == {"tier": "premier", "_source_row": "3"}  # blanks are absent, not ""
    assert got["c3"].email is None
    assert conn.problems == []


def test_events_map_columns_and_have_stable_distinct_ids(files, tmp_path):
    conn = make(files, tmp_path)
    evs = events_of(conn)
    assert [e.type for e in evs] == ["deposit", "page_view", "email_open", "deposit"]
    assert evs[0].value == 1500.5 and evs[0].occurred_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert evs[1].attributes == {"url": "/pricing"} and evs[1].value is None
    assert evs[2].occurred_at == datetime(2025, 1, 1, tzinfo=UTC)  # epoch seconds
    ids = [e.event_id for e in evs]
    assert len(set(ids)) == 4, "two identical rows are two events"
    assert ids == [e.event_id for e in events_of(make(files, tmp_path))], "ids are stable across reads"


def test_bad_rows_are_skipped_and_reported_with_file_and_line(tmp_path, caplog):
    contacts = write(tmp_path / "c.csv",
                     "id,email,score\n"
                     "a1,a1@example.com,3\n"
                     ",nobody@example.com,1\n"            # line 3: no id
                     "a2,not-an-email,2\n"                 # line 4: bad email
                     "a1,again@example.com,4\n"            # line 5: duplicate id
                     "a3,a3@example.com\n"                 # line 6: too few fields
                     "\n"                                  # line 7: blank, ignored
                     "a4,a4@example.com,5\n")
    events = write(tmp_path / "e.csv",
                   "contact_id,type,timestamp,value\n"
                   "a1,deposit,2025-01-01,10\n"
                   "a1,deposit,yesterday,10\n"             # line 3
                   "a1,deposit,2025-01-01,ten\n"           # line 4
                   "zz,deposit,2025-01-01,1\n"             # line 5: unknown contact
                   "a4,,2025-01-01,1\n")                   # line 6: no type
    conn = CsvConnector(contacts, events)
    with caplog.at_level(logging.WARNING, logger="segsync.csv"):
        got = [c.vendor_id for c in contacts_of(conn)]
        evs = events_of(conn)
    assert got == ["a1", "a4"]
    assert len(evs) == 1
    c, e = str(contacts), str(events)
    assert conn.problems[:4] == [
        f"{c}:3: no id (column 'id' is blank)",
        f"{c}:4: email 'not-an-email' is not a valid address",
        f"{c}:5: duplicate id 'a1' (first on line 2)",
        f"{c}:6: expected 3 fields, found 2",
    ]
    assert conn.problems[4].startswith(f"{e}:3: timestamp 'yesterday' is not ISO 8601")
    assert conn.problems[5:] == [f"{e}:4: value 'ten' is not a number",
                                 f"{e}:5: contact id 'zz' is not in c.csv", f"{e}:6: no event type"]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 8
    assert conn.stats()["bad_rows"] == 8


def test_wrong_header_is_an_input_error_naming_the_columns(tmp_path):
    contacts = write(tmp_path / "c.csv", "ident,mail\nx,x@example.com\n")
    with pytest.raises(InputError, match=r"c\.csv:1: header is missing id \(column 'id'\), email \(column 'email'\)"):
        contacts_of(CsvConnector(contacts))


def test_all_rows_bad_is_an_input_error_listing_them(tmp_path):
    contacts = write(tmp_path / "c.csv", "id,email\n,a@example.com\nx,bad\n")
    with pytest.raises(InputError) as err:
        contacts_of(CsvConnector(contacts))
    assert "every one of the 2 contact rows is bad" in str(err.value)
    assert "c.csv:2: no id" in str(err.value) and "c.csv:3: email 'bad'" in str(err.value)


@pytest.mark.parametrize("content, needle", [
    (b"", "the file is empty"),
    (b"id,email\nx,\xff\xfe@example.com\n", "c.csv:2: not UTF-8"),
    (b'id,email\nx,"unterminated\n', "c.csv:2: malformed CSV"),
], ids=["empty", "not-utf8", "bad-quoting"])
def test_unreadable_files_are_clear_input_errors(tmp_path, content, needle):
    path = tmp_path / "c.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=needle):
        contacts_of(CsvConnector(path))


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot open"):
        contacts_of(CsvConnector(tmp_path / "nope.csv"))


def test_unknown_event_column_key_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown keys when"):
        CsvConnector(tmp_path / "c.csv", event_columns={"when": "ts"})


def test_unchanged_files_yield_nothing_after_their_cursor(files, tmp_path):
    conn = make(files, tmp_path)
    pages = list(conn.pull_contacts(None, NOW))
    cursor = pages[-1].cursor
    assert cursor and cursor.startswith("sha256:")
    assert contacts_of(conn, cursor) == []
    files[0].write_text(files[0].read_text() + "c4,d@example.com,2024-04-01,core,30\n")
    assert [c.vendor_id for c in contacts_of(conn, cursor)][-1] == "c4"


def test_contacts_come_in_pages_of_a_thousand(tmp_path):
    rows = "".join(f"k{i},k{i}@example.com\n" for i in range(2500))
    conn = CsvConnector(write(tmp_path / "c.csv", "id,email\n" + rows))
    pages = list(conn.pull_contacts(None, NOW))
    assert [len(p.contacts) for p in pages] == [1000, 1000, 500]
    assert [p.cursor is not None for p in pages] == [False, False, True]


def test_semicolon_delimiter_and_email_as_key(tmp_path):
    path = write(tmp_path / "c.csv", "email;age\nA@x.org;30\nb@x.org;40\n")
    got = contacts_of(CsvConnector(path, delimiter=";", id_column=None))
    assert [(c.vendor_id, c.properties) for c in got] == [("a@x.org", {"age": "30", "_source_row": "2"}),
                                                            ("b@x.org", {"age": "40", "_source_row": "3"})]


def test_push_writes_merges_and_suppress_records(files, tmp_path):
    conn = make(files, tmp_path)
    out = tmp_path / "out" / "segsync.csv"
    res = conn.push_properties([PropertyUpdate("c1", {"segsync_segments": "hot", "upgrade": "0.8"}),
                                PropertyUpdate("c2", {"segsync_segments": "cold"})])
    assert [(r.key, r.outcome) for r in res] == [("c1", "sent"), ("c2", "sent")]
    conn.push_properties([PropertyUpdate("c2", {"upgrade": "0.1"})])
    assert conn.suppress("ANN@example.com", None, "segsync_segments").outcome == "sent"
    assert conn.suppress("ghost@example.com", None, "segsync_segments").outcome == "skipped"
    with out.open(newline="") as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    assert rows["c1"] == {"id": "c1", "segsync_segments": "", "upgrade": "0.8", "email_optout": "true"}
    assert rows["c2"] == {"id": "c2", "segsync_segments": "cold", "upgrade": "0.1", "email_optout": ""}
    assert not [p for p in out.parent.iterdir() if p.name != out.name], "no temporary files left behind"


def test_push_without_output_is_a_config_error(files):
    conn = CsvConnector(files[0])
    with pytest.raises(ConfigError, match="output"):
        conn.push_properties([PropertyUpdate("c1", {"a": "b"})])


def test_line_numbers_stay_right_after_a_quoted_multi_line_field(tmp_path):
    path = write(tmp_path / "c.csv", 'id,email,note\nq1,q1@x.org,"two\nlines"\nq2,,\n,q3@x.org,x\n')
    conn = CsvConnector(path)
    got = contacts_of(conn)
    assert got[0].properties == {"note": "two\nlines", "_source_row": "2"}
    assert [c.vendor_id for c in got] == ["q1", "q2"]
    assert conn.problems == [f"{path}:5: no id (column 'id' is blank)"]


def test_output_edited_between_pushes_is_read_again(files, tmp_path):
    conn = make(files, tmp_path)
    out = tmp_path / "out" / "segsync.csv"
    conn.push_properties([PropertyUpdate("c1", {"s": "1"})])
    out.write_text("id,s,note\nc9,9,kept by hand\n")
    conn.push_properties([PropertyUpdate("c2", {"s": "2"})])
    with out.open(newline="") as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    assert rows == {"c2": {"id": "c2", "s": "2", "note": ""}, "c9": {"id": "c9", "s": "9", "note": "kept by hand"}}
    out.write_text("name,s\nx,1\n")
    with pytest.raises(InputError, match="not a segsync output file"):
        conn.push_properties([PropertyUpdate("c2", {"s": "3"})])


def test_repeated_rows_far_apart_keep_the_ids_a_small_read_gives(tmp_path, monkeypatch):
    """Which repeat of an identical row an event is survives the seen-rows set spilling into sorted arrays
    (forced here after every 2 rows): the ids are those of a read that never spills, none are equal."""
    from connectors.csvfile import seen

    contacts = write(tmp_path / "c.csv", "id,email\n" + "".join(f"p{i},p{i}@x.org\n" for i in range(30)))
    rows = [f"p{i % 30},page_view,2025-01-{1 + i % 3:02d},," for i in range(200)]  # each content 2-3 times
    events = write(tmp_path / "e.csv", "contact_id,type,timestamp,value,url\n" + "\n".join(rows) + "\n")
    whole = [e.event_id for e in events_of(CsvConnector(contacts, events))]
    monkeypatch.setattr(seen, "RECENT_MAX", 2)
    spilled = [e.event_id for e in events_of(CsvConnector(contacts, events))]
    assert spilled == whole and len(set(whole)) == 200
    assert len(seen.Fingerprints(range(1, 50))) == 49
    assert seen.Fingerprints(range(1, 50)).contains([3, 49, 50, 0]) == [True, True, False, False]


def test_output_merged_in_batches_stays_one_sorted_row_per_id(files, tmp_path):
    conn = make(files, tmp_path)
    out = tmp_path / "out" / "segsync.csv"
    conn.push_properties([PropertyUpdate(f"k{i:03d}", {"s": str(i)}) for i in range(0, 100, 2)])
    conn.push_properties([PropertyUpdate(f"k{i:03d}", {"t": "x"}) for i in range(0, 100, 3)])
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == sorted({f"k{i:03d}" for i in range(100) if i % 2 == 0 or i % 3 == 0})
    by_id = {r["id"]: r for r in rows}
    assert by_id["k006"] == {"id": "k006", "s": "6", "t": "x"} and by_id["k003"] == {"id": "k003", "s": "", "t": "x"}
    assert by_id["k004"] == {"id": "k004", "s": "4", "t": ""}
    assert conn.stats()["output_writes"] == 2

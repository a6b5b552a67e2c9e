"""Pull contract: every record exactly once, resumable, archived and merged records reported, incremental."""

from __future__ import annotations

from collections.abc import Iterable

from connectors.base import PullPage
from tests.contract.subjects import ARCHIVE, INCREMENTAL, LIVE_SOURCE, MERGE, Subject, needs


def ids_of(pages: Iterable[PullPage]) -> list[str]:
    """Vendor ids of the live records in ``pages`` (archived and merged-away ones are reported apart)."""
    return [c.vendor_id for p in pages for c in p.contacts if not c.archived]


def last_cursor(pages: list[PullPage], cursor: str | None) -> str | None:
    """The cursor the pipeline would have stored after these pages."""
    return next((p.cursor for p in reversed(pages) if p.cursor is not None), cursor)


def full_then_incremental(subject: Subject, conn) -> str | None:
    """A full pull, then one incremental pull (which re-reads the clock-skew overlap), as two runs would."""
    cursor = last_cursor(list(subject.pull(conn, None, subject.started())), None)
    return last_cursor(list(subject.pull(conn, cursor, subject.started())), cursor)


def test_pull_reads_every_record_once_while_the_vendor_changes_records(subject: Subject) -> None:
    conn = subject.connect()
    before = subject.live_ids()
    pages = subject.pull(conn, None, subject.started())
    first = next(pages)
    seen = ids_of([first])
    changed: list[str] = []
    if LIVE_SOURCE not in subject.lacks:  # changes mid-pull: some records already read, some not yet
        changed = seen[:5] + sorted(before - set(seen))[:5]
        subject.modify(changed)
    rest = list(pages)
    seen += ids_of(rest)
    assert len(seen) == len(set(seen)), "a record came twice in one pull"
    assert all(len(ids_of([p])) <= conn.limits.page_size for p in [first, *rest])
    if len(before) > conn.limits.page_size:
        assert len(rest) >= 1, "more records than one page holds, yet one page"
    missing = before - set(seen)
    assert missing <= set(changed), f"records lost by the pull: {sorted(missing)[:5]}"
    if missing:  # a record that changed mid-pull may wait for the next run, but not longer
        later = ids_of(subject.pull(conn, last_cursor([first, *rest], None), subject.started()))
        assert missing <= set(later)


def test_pull_resumes_from_the_stored_cursor_after_a_kill_between_pages(subject: Subject) -> None:
    conn = subject.connect()
    before = subject.live_ids()
    started = subject.started()
    pages = subject.pull(conn, None, started)
    first = next(pages)  # the pipeline stored this page and its cursor, then the process died
    pages.close()
    resumed = ids_of(subject.pull(subject.connect(), first.cursor, started))
    assert len(resumed) == len(set(resumed))
    assert before <= set(ids_of([first])) | set(resumed), "records lost across the kill"
    if first.cursor is not None:  # a page cursor: the resumed pull does not start over
        assert set(ids_of([first])) - set(resumed)


def test_a_rerun_with_nothing_changed_reads_nothing(subject: Subject) -> None:
    conn = subject.connect()
    cursor = full_then_incremental(subject, conn)
    assert ids_of(subject.pull(conn, cursor, subject.started())) == []


def test_an_incremental_pull_reads_only_what_changed(subject: Subject) -> None:
    needs(subject, INCREMENTAL)
    conn = subject.connect()
    cursor = full_then_incremental(subject, conn)
    changed = sorted(subject.live_ids())[:7]
    subject.modify(changed)
    got = ids_of(subject.pull(conn, cursor, subject.started()))
    assert sorted(got) == changed


def test_archived_and_merged_records_are_reported_as_such(subject: Subject) -> None:
    needs(subject, ARCHIVE)
    conn = subject.connect()
    cursor = full_then_incremental(subject, conn)
    ids = sorted(subject.live_ids())
    gone = ids[0]
    subject.archive(gone)
    if MERGE not in subject.lacks:
        survivor, loser = ids[1], ids[2]
        merged = subject.merge(survivor, loser)
    contacts = [c for p in subject.pull(conn, cursor, subject.started()) for c in p.contacts]
    reported = {c.vendor_id: c for c in contacts if c.archived or c.status == "archived"}
    assert gone in reported and reported[gone].merged_into is None
    if MERGE not in subject.lacks:
        assert reported[loser].merged_into == merged and reported[loser].archived
        assert merged in ids_of([PullPage(contacts=contacts)])

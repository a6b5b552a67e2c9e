"""Shared fixtures: database URLs over SQLite and the real PostgreSQL, and the vendor sandbox.

PostgreSQL cases run against 127.0.0.1:5432 (database ``test``, trust auth), each test in a
schema of its own that is dropped afterwards. Under CI (CI=true) an unreachable server is a
failure, never a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

PG_URL = os.environ.get("SEGSYNC_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_available() -> str | None:
    try:
        engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


_PG_PROBLEM: str | bool | None = False  # False = not probed yet


def require_postgres() -> None:
    """Skip locally, fail in CI, when PostgreSQL does not answer."""
    global _PG_PROBLEM
    if _PG_PROBLEM is False:
        _PG_PROBLEM = _pg_available()
    if _PG_PROBLEM:
        message = f"PostgreSQL at {PG_URL} is not reachable: {_PG_PROBLEM}"
        if IN_CI:
            pytest.fail(message + " (CI must run the PostgreSQL cases)")
        pytest.skip(message)


def require_file(path, what: str) -> None:
    """Skip locally, fail in CI, when a data file the test needs is missing (CI has ../shared beside the clone)."""
    if not path.exists():
        message = f"{what} not found at {path}"
        if IN_CI:
            pytest.fail(message + " (CI must run this check)")
        pytest.skip(message)


# The files that take longest (per-file totals of a whole-suite run with --durations, 2026-12-01), heaviest first.
# Only the ORDER changes, and only under pytest-xdist (`make test` runs ``-n auto --dist loadfile``): each file goes
# to one worker whole, so its module fixtures are built once, and starting the long files first keeps one worker
# from being handed a five-minute file while the other has nothing left. A file missing here runs after these.
# Re-measured per file on their own (branch suite, load average 3.7-5.3): test_vendor_reality.py about 195 s, more
# than test_wealthbox_sync.py; test_e2e_sandbox.py about 117 s, more than test_rerun_quiet.py now that its
# settle-window test waits 10 s instead of 30.
LONGEST_FILES = (
    "test_vendor_reality.py", "test_wealthbox_sync.py", "test_redtail_sync.py", "test_scoring_datasets.py",
    "test_crash_suite.py", "test_workers_scale.py", "test_e2e_sandbox.py", "test_rerun_quiet.py",
    "test_scoring_pipeline.py", "test_pipeline.py", "test_serve.py", "test_pages_browser.py", "test_crash_push.py",
    "test_scoring_snapshots.py", "test_scoring_cli.py", "test_lock_loss.py", "test_csv_sync.py",
)


def pytest_collection_modifyitems(config, items) -> None:
    """Under xdist, the longest files first (a stable sort: within a file, and among the rest, order is kept)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(autouse=True, scope="session")
def _consent_keys_file(tmp_path_factory) -> Iterator[None]:
    """Generated consent keys go to a temporary key file, never the developer's ~/.config/segsync."""
    old = os.environ.get("SEGSYNC_KEYS_FILE")
    os.environ["SEGSYNC_KEYS_FILE"] = str(tmp_path_factory.mktemp("segsync-keys") / "keys.json")
    yield
    if old is None:
        os.environ.pop("SEGSYNC_KEYS_FILE", None)
    else:
        os.environ["SEGSYNC_KEYS_FILE"] = old


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    require_postgres()
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'create schema "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'drop schema "{schema}" cascade'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'segsync.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request) -> str:
    """Parametrized over both backends: every store contract test runs on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def make_sandbox(request):
    """Factory: ``make_sandbox(contacts=..., seed=..., **options)`` starts a sandbox stopped after the test.

    After every test outside the sandbox's own conformance suite (which tries resubscribing on
    purpose, to prove the refusal), the Mailchimp simulator's audit must show that nothing ever
    asked to set anyone ``subscribed``: segsync never subscribes or resubscribes, suite-wide.
    """
    from sandbox import start_sandbox

    started = []

    def factory(**options):
        sb = start_sandbox(**options)
        started.append(sb)
        return sb

    yield factory
    for sb in started:  # all asked first, so that their shutdowns overlap
        sb.request_stop()
    for sb in started:
        sb.stop()
    if not request.module.__name__.split(".")[-1].startswith("test_sandbox_"):
        attempts = [a for sb in started for a in sb.mailchimp.subscribe_attempts]
        assert attempts == [], f"a request tried to set members subscribed: {attempts[:5]}"


@pytest.fixture
def sandbox(make_sandbox):
    """A small sandbox (300 contacts, fixed seed) with both vendors over real HTTP on loopback."""
    return make_sandbox(contacts=300, seed=11)

"""Transient vendor answers (issue 20, item 8): a connection cut mid-body and a 2xx whose body is an HTML
page or cut short are retried inside the one retry loop, not raised after it."""

from __future__ import annotations

import pytest
import requests
import responses

from connectors.kit.http import CallPolicy, HttpClient, RetrySettings
from core.errors import RetriableApiError

BASE = "https://api.example.test"


def client(sleeps: list[float], attempts: int = 4) -> HttpClient:
    policy = CallPolicy("example", retry=RetrySettings(max_attempts=attempts, initial_wait=0.5, max_wait=30),
                        sleep=sleeps.append)
    return HttpClient("example", BASE, policy)


@responses.activate
@pytest.mark.parametrize("body", ["<html><body>502 Bad Gateway</body></html>", '{"results": [{"id": "1"'],
                         ids=["html-page", "truncated-json"])
def test_a_2xx_with_a_body_that_is_not_json_is_retried_then_succeeds(body):
    sleeps: list[float] = []
    responses.get(f"{BASE}/x", status=200, body=body, content_type="text/html")
    responses.get(f"{BASE}/x", status=200, json={"results": []})
    assert client(sleeps).json("GET", "/x") == {"results": []}
    assert len(responses.calls) == 2 and len(sleeps) == 1


@responses.activate
def test_a_body_that_never_decodes_gives_up_with_the_retry_count():
    sleeps: list[float] = []
    for _ in range(3):
        responses.get(f"{BASE}/x", status=200, body="<html>maintenance</html>")
    with pytest.raises(RetriableApiError, match=r"was not JSON.*gave up after 3 attempts"):
        client(sleeps, attempts=3).json("GET", "/x")
    assert len(responses.calls) == 3


@responses.activate
def test_a_connection_cut_mid_response_is_retried():
    sleeps: list[float] = []
    responses.get(f"{BASE}/x", body=requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"))
    responses.get(f"{BASE}/x", status=200, json={"n": 1})
    assert client(sleeps).json("GET", "/x") == {"n": 1}
    assert len(sleeps) == 1


def test_a_vendor_answer_of_the_wrong_shape_is_a_vendor_error_not_a_usage_error(tmp_path, sqlite_url):
    """A 200 whose JSON has the wrong shape ends the run as a vendor error (exit 1), never as exit 2."""
    from core.errors import FatalApiError, InputError
    from sync.config import load_config_text
    from sync.run.pipeline import RunOptions, TenantRun
    from sync.store import open_store
    from tests.fakes import FakeCrm, make_book
    from tests.test_pipeline import CONFIG, CONSENT

    class ShapelessCrm(FakeCrm):
        def pull_contacts(self, cursor, run_started):
            raise InputError("fakecrm: the answer to GET /contacts has no 'results' list: {'data': []}")
            yield  # a generator, like the real one

    cfg = load_config_text(CONFIG.format(consent=CONSENT, store=sqlite_url, models=tmp_path / "models"))
    store = open_store(sqlite_url)
    try:
        people, events = make_book()
        with pytest.raises(FatalApiError, match="no 'results' list") as exc:
            TenantRun(cfg, cfg.tenants[0], store, ShapelessCrm(people, events), None, RunOptions()).run()
        assert not isinstance(exc.value, InputError)
        assert store.runs("acme")[0]["status"] == "error"

        class BadKeyFileCrm(FakeCrm):  # the user's own input, met during a run: stays a usage error
            def pull_contacts(self, cursor, run_started):
                raise InputError("keys.json: not a segsync key file")
                yield

        with pytest.raises(InputError, match="key file"):
            TenantRun(cfg, cfg.tenants[0], store, BadKeyFileCrm(people, events), None, RunOptions()).run()
    finally:
        store.close()

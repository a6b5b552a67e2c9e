"""The one HTTP layer: retry on 429/5xx/connection errors, Retry-After, redaction, rate limiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
import responses

from connectors.kit.http import (
    CallPolicy,
    HttpClient,
    RateLimiter,
    RetrySettings,
    parse_retry_after,
    redact,
    register_secret,
)
from core.errors import FatalApiError, RateLimitedError, RejectedRecordError, RetriableApiError

BASE = "https://api.example.test"
TOKEN = "pat-na1-supersecret-token-0001"


def client(sleeps: list[float], **retry) -> HttpClient:
    register_secret(TOKEN)
    policy = CallPolicy(
        "example",
        retry=RetrySettings(**{"max_attempts": 4, "initial_wait": 0.5, "max_wait": 30, **retry}),
        sleep=sleeps.append,
    )
    return HttpClient("example", BASE, policy, headers={"Authorization": f"Bearer {TOKEN}"})


@responses.activate
def test_429_then_200_honours_retry_after():
    sleeps: list[float] = []
    responses.get(f"{BASE}/x", status=429, headers={"Retry-After": "7"}, json={"message": "slow down"})
    responses.get(f"{BASE}/x", status=200, json={"ok": True})
    c = client(sleeps)
    assert c.json("GET", "/x") == {"ok": True}
    assert sleeps == [7.0]
    assert c.policy.stats.rate_limited == 1 and c.policy.stats.retries == 1


@responses.activate
def test_retry_after_as_http_date():
    sleeps: list[float] = []
    when = datetime.now(UTC) + timedelta(seconds=20)
    responses.get(f"{BASE}/x", status=503, headers={"Retry-After": format_datetime(when, usegmt=True)})
    responses.get(f"{BASE}/x", status=200, json={})
    client(sleeps).json("GET", "/x")
    assert 15 <= sleeps[0] <= 21


@responses.activate
def test_500_three_times_then_gives_up_with_a_clear_error():
    sleeps: list[float] = []
    for _ in range(3):
        responses.get(f"{BASE}/x", status=500, json={"message": "boom"})
    c = client(sleeps, max_attempts=3)
    with pytest.raises(RetriableApiError) as exc:
        c.json("GET", "/x")
    assert "example answered 500" in str(exc.value) and "gave up after 3 attempts" in str(exc.value)
    assert sleeps == [0.5, 1.0]  # capped exponential backoff
    assert len(responses.calls) == 3


@responses.activate
def test_connection_error_is_retried():
    sleeps: list[float] = []
    responses.get(f"{BASE}/x", body=requests.ConnectionError("reset by peer"))
    responses.get(f"{BASE}/x", status=200, json={"n": 1})
    assert client(sleeps).json("GET", "/x") == {"n": 1}
    assert len(sleeps) == 1


@responses.activate
@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, RejectedRecordError),
        (401, FatalApiError),
        (403, FatalApiError),
        (404, RejectedRecordError),
        (429, RateLimitedError),
        (502, RetriableApiError),
    ],
    ids=["400-rejected", "401-fatal", "403-fatal", "404-rejected", "429-retriable", "502-retriable"],
)
def test_status_classification(status, error):
    responses.get(f"{BASE}/x", status=status, json={"message": "nope"})
    with pytest.raises(error):
        client([], max_attempts=1).json("GET", "/x")


@responses.activate
def test_token_never_in_errors_even_when_the_vendor_echoes_it():
    # A vendor error that echoes the credential back, in the body and in a query string.
    responses.get(f"{BASE}/x", status=401, json={"message": f"Authentication credentials not valid: Bearer {TOKEN}"})
    with pytest.raises(FatalApiError) as exc:
        client([]).json("GET", f"/x?hapikey={TOKEN}")
    text = str(exc.value) + exc.value.detail + repr(exc.value)
    assert TOKEN not in text
    assert "***" in text


def test_redact_masks_auth_headers_and_query_secrets():
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
    assert redact("https://x/y?api_key=zzz&b=1") == "https://x/y?api_key=***&b=1"


def test_rate_limiter_spaces_calls_to_the_budget():
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    bucket = RateLimiter(10, 10.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(25):
        bucket.acquire()
    # 10 free in the burst, then one per second for the other 15
    assert round(sum(slept), 6) == 15.0


def test_parse_retry_after_rejects_garbage():
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("2.5") == 2.5


# --------------------------------------------------------------------------- the kit's paginators and batch sender


def test_paginators_stop_on_a_repeated_token_or_a_page_that_never_changes():
    from connectors.kit.paging import OffsetPaginator, PageNumberPaginator, PagingLoopError, TokenPaginator, paginate

    answers = iter([{"items": [1], "next": "a"}, {"items": [2], "next": "b"}, {"items": [3], "next": "a"}])
    pager = TokenPaginator("v: GET /x", lambda body: (body["items"], body["next"]))
    with pytest.raises(PagingLoopError, match="repeated the paging token 'a'"):
        list(paginate(lambda: next(answers), pager))
    same = PageNumberPaginator("v: GET /y", lambda body: (body, None), per_page=2)
    with pytest.raises(PagingLoopError, match="page 2 with the same records"):
        list(paginate(lambda: [1, 2], same))
    # an offset window that shrinks (records left it mid-pull) steps back instead of skipping
    totals = iter([(list(range(3)), 10), (list(range(3)), 8), (list(range(3)), 8), (list(range(4)), 8)])
    offsets: list[int] = []
    pager = OffsetPaginator("v: GET /z", lambda body: body, shrinking_window=True)
    pages = list(paginate(lambda: (offsets.append(pager.offset), next(totals))[1], pager))
    assert offsets == [0, 3, 1, 4] and len(pages) == 3 and pager.done
    endless = OffsetPaginator("v: GET /w", lambda body: ([1], 10**9), max_pages=5)
    with pytest.raises(PagingLoopError, match="past 5 pages"):
        list(paginate(lambda: None, endless))


def test_the_batch_sender_isolates_bad_inputs_within_its_call_budget():
    from connectors.kit.batch import CallBudget, send_isolating
    from core.errors import RejectedRecordError

    calls: list[int] = []

    def send(items):
        calls.append(len(items))
        if "bad" in items:
            raise RejectedRecordError("refused", status=400, body={"bad": ["bad"]})
        return {i: ("sent", "") for i in items}

    items = [f"k{i}" for i in range(15)] + ["bad"]
    out = send_isolating(items, send, key=str, budget=CallBudget(None))
    assert out["bad"] == ("failed", "refused") and sum(v[0] == "sent" for v in out.values()) == 15
    assert calls == [16, 8, 8, 4, 4, 2, 2, 1, 1]  # halves down to the one bad input
    calls.clear()
    named = send_isolating(items, send, key=str, budget=CallBudget(10), named=lambda exc, _: {"bad": "named"})
    assert named["bad"] == ("failed", "named") and calls == [16, 15]  # the vendor said which: one resend
    calls.clear()
    capped = send_isolating(items, send, key=str, budget=CallBudget(2))
    assert calls == [16, 8, 8] and sum(v[0] == "failed" for v in capped.values()) == 8  # budget spent

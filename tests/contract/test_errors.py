"""Error contract: credentials, rate limits, transient failures, unreadable answers, and no secret anywhere."""

from __future__ import annotations

import logging

import pytest

from connectors.kit import CallPolicy, RetrySettings
from core.errors import FatalApiError, RetriableApiError, SegsyncError
from tests.contract.scripted import CUT_JSON, HTML_502, ScriptedVendor
from tests.contract.subjects import HTTP, RETRY_AFTER, Subject, needs

WRONG = "wrong-credential-0000-not-a-real-secret-us6"


def scripted(subject: Subject, faults: list) -> ScriptedVendor:
    return ScriptedVendor(subject.probe_routes, subject.probe_target, faults)


def test_401_is_a_config_error_naming_the_credential(subject: Subject, caplog) -> None:
    needs(subject, HTTP)
    caplog.set_level(logging.DEBUG)
    conn = subject.connect(token=WRONG)
    with pytest.raises(FatalApiError) as err:
        subject.probe(conn)
    assert err.value.status == 401 and subject.credential in str(err.value)
    assert WRONG not in str(err.value) and WRONG not in caplog.text and WRONG not in repr(conn.stats())


def test_403_is_a_config_error_naming_the_credential_and_scopes(subject: Subject) -> None:
    needs(subject, HTTP)
    conn = subject.connect()
    subject.sb.faults[subject.vendor].set(error_rate=1.0, error_status=403)
    with pytest.raises(FatalApiError) as err:
        subject.probe(conn)
    subject.sb.faults[subject.vendor].reset()
    assert err.value.status == 403 and subject.credential in str(err.value)
    for scope in subject.scopes:
        assert scope in str(err.value)
    assert conn.stats()["retries"] == 0  # fatal: never retried


def test_429_is_retried_honouring_retry_after(subject: Subject) -> None:
    needs(subject, HTTP)
    vendor = scripted(subject, [(429, {"Retry-After": "7"}, b'{"message": "slow down"}', "application/json")])
    slept: list[float] = []
    try:
        conn = subject.connect_to(vendor.url, sleep=slept.append,
                                  retry=RetrySettings(max_attempts=3, initial_wait=0.01, max_wait=30.0))
        subject.probe(conn)
    finally:
        vendor.stop()
    assert vendor.hits == 2 and conn.stats()["rate_limited"] == 1 and conn.stats()["retries"] == 1
    if RETRY_AFTER in subject.lacks:
        assert slept and max(slept) < 7.0  # its own backoff: nothing told it to wait 7 s
    else:
        assert 7.0 in slept


def test_5xx_and_connection_resets_are_retried_by_the_one_policy(subject: Subject) -> None:
    needs(subject, HTTP)
    conn = subject.connect()
    assert isinstance(conn.client.policy, CallPolicy)  # the kit's policy: one tenacity loop, no other
    faults = subject.sb.faults[subject.vendor]
    faults.set(reset_next=2)
    subject.probe(conn)
    assert conn.stats()["retries"] == 2
    faults.set(error_rate=1.0, error_status=503)
    with pytest.raises(RetriableApiError, match="gave up after 4 attempts") as err:
        subject.probe(conn)
    faults.reset()
    assert err.value.status == 503 and conn.stats()["failures"] == 1


@pytest.mark.parametrize("fault", [
    pytest.param((502, {}, HTML_502, "text/html"), id="html-502"),
    pytest.param((200, {}, CUT_JSON, "application/json"), id="cut-json-200"),
])
def test_an_unreadable_answer_is_a_clear_vendor_error(subject: Subject, fault) -> None:
    needs(subject, HTTP)
    vendor = scripted(subject, [fault] * 4)
    try:
        conn = subject.connect_to(vendor.url, sleep=lambda _s: None)
        with pytest.raises(SegsyncError) as err:
            subject.probe(conn)
    finally:
        vendor.stop()
    message = str(err.value)
    assert message.startswith(subject.vendor) and "Traceback" not in message and len(message) < 400


def test_secrets_never_appear_in_errors_logs_or_stats(subject: Subject, caplog) -> None:
    needs(subject, HTTP)
    caplog.set_level(logging.DEBUG)
    conn = subject.connect()
    faults = subject.sb.faults[subject.vendor]
    faults.set(storm=2)
    subject.probe(conn)
    faults.set(error_rate=1.0, error_status=500)
    with pytest.raises(RetriableApiError) as err:
        subject.probe(conn)
    faults.reset()
    text = caplog.text + str(err.value) + repr(err.value.body) + repr(conn.stats()) + repr(conn)
    assert "retrying" in caplog.text
    for secret in subject.secrets:
        assert secret not in text


def test_the_client_paces_within_the_declared_limits(subject: Subject) -> None:
    needs(subject, HTTP)
    conn = subject.connect(**subject.paced_options)
    limits = conn.limits
    if limits.max_connections is not None:  # a concurrency limit (Mailchimp), not a rate
        assert conn.client.max_connections <= limits.max_connections
        return
    bucket = conn.client.policy.limiters["default"]
    per_window = limits.window_seconds / bucket.per * bucket.rate  # the most calls the bucket lets through
    assert per_window <= limits.requests_per_window

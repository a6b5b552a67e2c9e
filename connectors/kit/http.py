"""The one HTTP layer: timeouts, classification, retry, rate limiting and redaction.

(Moved here from ``connectors/http.py``, which re-exports it for older imports.)

Every vendor call in segsync goes through :class:`CallPolicy` - raw ``requests`` calls via
:class:`HttpClient`, and the official SDKs by wrapping their calls with :meth:`CallPolicy.call`
and a function that turns the SDK's exception into one of ours. So there is one retry policy,
not one per SDK: the SDKs' own retries stay off.

A response is classified exactly once (:func:`raise_for_response`); the retry loop looks only
at exception types (:class:`~core.errors.RetriableApiError` is retried, all else is not).
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
import tenacity

# ``X as X``: re-exported, so callers import the whole HTTP layer from one place.
from connectors.kit.ratelimit import RateLimiter as RateLimiter
from connectors.kit.redact import RedactingFilter as RedactingFilter
from connectors.kit.redact import redact as redact
from connectors.kit.redact import register_secret as register_secret
from connectors.kit.stats import CallStats
from core import times
from core.errors import ApiError, FatalApiError, RateLimitedError, RejectedRecordError, RetriableApiError

log = logging.getLogger("segsync.http")
T = TypeVar("T")

DEFAULT_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds; never None

# --------------------------------------------------------------------------- classification


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or times.now()
    return max(0.0, (when - now).total_seconds())


def default_detail(body: Any, text: str) -> str:
    """Pull a human message out of a vendor error body (HubSpot JSON, problem+json, plain text)."""
    if isinstance(body, Mapping):
        for key in ("detail", "message", "title", "error_description", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
    return text[:300]


@dataclass(frozen=True)
class ErrorShape:
    """Where a vendor puts its error code and request id, in the body or the headers."""

    code_keys: tuple[str, ...] = ("code", "type", "title")
    request_id_keys: tuple[str, ...] = ("request_id", "requestId", "instance")
    request_id_headers: tuple[str, ...] = ("X-Request-Id",)

    def fields(self, body: Any, headers: Mapping[str, str] | None) -> dict[str, Any]:
        """``code``, ``request_id`` and ``body`` for :class:`ApiError` from a decoded body and headers."""
        code = request_id = ""
        if isinstance(body, Mapping):
            code = next((str(body[k]) for k in self.code_keys if body.get(k)), "")
            request_id = next((str(body[k]) for k in self.request_id_keys if body.get(k)), "")
        if not request_id and headers is not None and hasattr(headers, "get"):
            request_id = next((str(headers.get(h)) for h in self.request_id_headers if headers.get(h)), "")
        return {"code": code, "request_id": request_id, "body": body}


def decode_json(raw: Any) -> Any:
    """A JSON value from whatever a client handed over (dict, list, str, bytes, None); None if it is not JSON."""
    if isinstance(raw, (dict, list)):
        return raw
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str) and raw.strip()[:1] in ("{", "["):
        try:
            return json.loads(raw)
        except ValueError:
            return None
    return None


def classify_status(
    vendor: str,
    status: int,
    detail: str,
    *,
    what: str = "",
    retry_after: float | None = None,
    code: str = "",
    request_id: str = "",
    body: Any = None,
) -> ApiError:
    """Map an HTTP status to the exception that says what the caller should do."""
    where = f" ({what})" if what else ""
    message = redact(f"{vendor} answered {status}{where}: {detail}")
    kwargs: dict[str, Any] = {"vendor": vendor, "status": status, "detail": redact(detail), "retry_after": retry_after,
                              "code": code, "request_id": request_id, "body": body}
    if status == 429:
        return RateLimitedError(message, **kwargs)
    if status >= 500 or status in (408, 0):
        return RetriableApiError(message, **kwargs)
    if status in (401, 403):
        return FatalApiError(message, **kwargs)
    return RejectedRecordError(message, **kwargs)


def response_error(vendor: str, response: requests.Response, what: str = "",
                   detail: Callable[[Any, str], str] = default_detail, shape: ErrorShape = ErrorShape()) -> ApiError:
    """The :class:`ApiError` for an error response: its status, decoded body, vendor code and request id."""
    body = decode_json(response.content)
    return classify_status(
        vendor,
        response.status_code,
        detail(body, response.text or response.reason or ""),
        what=what,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        **shape.fields(body, response.headers),
    )


def raise_for_response(vendor: str, response: requests.Response, what: str = "") -> None:
    """Classify a response once: return on 2xx, raise the matching :class:`ApiError` otherwise."""
    if response.status_code >= 400:
        raise response_error(vendor, response, what)


# --------------------------------------------------------------------------- the policy


@dataclass(frozen=True)
class RetrySettings:
    """How hard to try: attempts, exponential backoff with a cap, and a total time budget."""

    max_attempts: int = 6
    initial_wait: float = 0.5
    max_wait: float = 30.0
    total_budget: float = 180.0


class CallPolicy:
    """Retry + rate limit + stats for one vendor account. Used by raw HTTP and by the SDKs alike."""

    def __init__(
        self,
        vendor: str,
        limiters: Mapping[str, RateLimiter] | None = None,
        retry: RetrySettings | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.vendor = vendor
        self.limiters = dict(limiters or {})
        self.retry = retry or RetrySettings()
        self.stats = CallStats()
        self._sleep = sleep
        # Run before every attempt (retries and split batches too); raising stops the call unsent. The
        # push sets the tenant lease's fencing check here, so a run that lost its lock sends nothing more.
        self.guard: Callable[[], None] | None = None

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        backoff = min(self.retry.max_wait, self.retry.initial_wait * 2 ** (state.attempt_number - 1))
        if isinstance(exc, ApiError) and exc.retry_after is not None:
            return min(self.retry.max_wait, max(exc.retry_after, 0.0))
        return float(backoff)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.stats.bump("retries")
        log.warning("%s: retrying after %s (attempt %d)", self.vendor, redact(exc), state.attempt_number)

    def call(
        self,
        fn: Callable[[], T],
        *,
        endpoint: str = "default",
        limiter: str | None = None,
        translate: Callable[[BaseException], BaseException | None] | None = None,
    ) -> T:
        """Run ``fn`` under the policy.

        ``limiter`` names the rate-limit bucket (defaults to ``endpoint`` if such a bucket
        exists, else ``default``). ``translate`` maps a foreign exception (an SDK's) to one of
        ours, or returns None to let it through unchanged.
        """
        bucket = self.limiters.get(limiter or endpoint) or self.limiters.get("default")
        sent = [0]  # attempts sent so far (told to the caller on the error: was the first one the last?)

        def attempt() -> T:
            if bucket is not None:
                bucket.acquire()
            try:
                if self.guard is not None:
                    self.guard()  # after the rate-limit wait: the last moment before the request leaves
            except BaseException:
                if bucket is not None:
                    bucket.release()  # nothing sent: the acquired slot must not stay open in the window guard
                raise
            self.stats.count(endpoint)
            sent[0] += 1
            try:
                return fn()
            except ApiError as exc:
                self._note(exc)
                raise
            except BaseException as exc:
                mapped = translate(exc) if translate else None
                if mapped is None:
                    raise
                if isinstance(mapped, ApiError):
                    self._note(mapped)
                raise mapped from None
            finally:
                if bucket is not None:
                    bucket.settle()  # answered (or failed): a window-guarded bucket counts it from now

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(RetriableApiError),
            stop=tenacity.stop_after_attempt(self.retry.max_attempts)
            | tenacity.stop_after_delay(self.retry.total_budget),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except RetriableApiError as exc:
            self.stats.bump("failures")
            gave_up = type(exc)(f"{exc} - gave up after {sent[0]} attempts", **exc.fields())
            gave_up.attempts = sent[0]
            raise gave_up from None
        except ApiError as exc:
            exc.attempts = sent[0]
            raise

    def _note(self, exc: ApiError) -> None:
        if isinstance(exc, RateLimitedError):
            self.stats.bump("rate_limited")


# No (complete) answer arrived: a timeout, a refused or reset connection, a body cut off mid-response.
TRANSPORT_ERRORS = (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError)


def transport_error(vendor: str, exc: BaseException, what: str = "") -> ApiError | None:
    """Map a ``requests`` transport failure (timeout, reset, refused) to a retriable error."""
    if isinstance(exc, TRANSPORT_ERRORS):
        where = f" ({what})" if what else ""
        return RetriableApiError(
            redact(f"{vendor}: no response{where}: {type(exc).__name__}"), vendor=vendor, status=0
        )
    return None


class HttpClient:
    """A ``requests.Session`` bound to one vendor base URL, sending every call through a :class:`CallPolicy`."""

    def __init__(
        self,
        vendor: str,
        base_url: str,
        policy: CallPolicy,
        *,
        headers: Mapping[str, str] | None = None,
        auth: Any = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        detail: Callable[[Any, str], str] = default_detail,
        shape: ErrorShape = ErrorShape(),
        session: requests.Session | None = None,
        observe: Callable[[Mapping[str, str]], None] | None = None,
    ) -> None:
        self.vendor = vendor
        self.observe = observe  # sees every answer's headers (a vendor's announced rate limit), errors included
        self.base_url = base_url.rstrip("/")
        self.policy = policy
        self.timeout = timeout
        self.detail = detail
        self.shape = shape
        self.session = session or requests.Session()
        self.session.headers.update(headers or {})
        self.session.headers.setdefault("User-Agent", "segsync/0.1")
        if auth is not None:
            self.session.auth = auth

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send one request under the policy (keywords as :meth:`_call`); statuses in ``accept`` are
        returned, not raised."""
        response: requests.Response = self._call(method, path, **kwargs)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Like :meth:`request`, decoding the JSON body (None for an empty body).

        The body is decoded inside the retry loop: an HTML error page or a body cut short under a 2xx
        is a transient fault of the vendor's edge, retried like a 503, not an error after the fact.
        """
        return self._call(method, path, decode=True, **kwargs)

    def _call(
        self,
        method: str,
        path: str,
        *,
        endpoint: str = "default",
        limiter: str | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        accept: tuple[int, ...] = (),
        decode: bool = False,
    ) -> Any:
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        what = f"{method} {redact(url.split('?')[0])}"

        def send() -> Any:
            try:
                response = self.session.request(
                    method, url, params=params, json=json, data=data, timeout=self.timeout
                )
            except requests.RequestException as exc:
                mapped = transport_error(self.vendor, exc, what)
                if mapped is None:
                    raise
                raise mapped from None
            if self.observe is not None:
                self.observe(response.headers)
            if response.status_code in accept:
                return response
            if response.status_code >= 400:
                raise response_error(self.vendor, response, what, self.detail, self.shape)
            return self._decode(response, method, path) if decode else response

        return self.policy.call(send, endpoint=endpoint, limiter=limiter)

    def _decode(self, response: requests.Response, method: str, path: str) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise RetriableApiError(
                f"{self.vendor}: a {response.status_code} answer to {method} {redact(path)} was not JSON",
                vendor=self.vendor,
                status=response.status_code,
            ) from None

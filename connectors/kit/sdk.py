"""The SDK adapter base: run an official SDK's calls under the one policy, and turn any exception it
raises into the one error tree.

A vendor adapter says three things and inherits the rest:

- :meth:`SdkAdapter.sdk_failure`: is this exception the SDK's error answer? Then its status,
  headers and raw body (the SDKs keep them in different attributes);
- :meth:`SdkAdapter.invoke`: how to call one SDK method and get ``(status, raw body)`` back;
- :meth:`SdkAdapter.classify`: vendor rules on top of :func:`~connectors.kit.http.classify_status`
  (HubSpot's daily 429 is fatal, Mailchimp's compliance refusal is a rejected record).

Every error this produces is an :class:`~core.errors.ApiError` carrying the status, the
vendor's error code, the request id and the decoded body; a transport failure inside the SDK
(urllib3 or requests) is a :class:`~core.errors.RetriableApiError` with status 0. The SDKs'
own retries stay off: the policy's tenacity loop is the only one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import urllib3

from connectors.kit.http import (
    TRANSPORT_ERRORS,
    CallPolicy,
    ErrorShape,
    classify_status,
    decode_json,
    default_detail,
    parse_retry_after,
    redact,
)
from core.errors import ApiError, RetriableApiError

SdkFailure = tuple[int, Mapping[str, str], Any]  # (status, headers, raw body)


class SdkAdapter:
    """One vendor SDK behind one :class:`~connectors.kit.http.CallPolicy`."""

    vendor: ClassVar[str]
    shape: ClassVar[ErrorShape] = ErrorShape()

    def __init__(self, policy: CallPolicy) -> None:
        self.policy = policy

    # ----------------------------------------------------------------- what a vendor adapter says

    def sdk_failure(self, exc: BaseException, what: str) -> SdkFailure | ApiError | None:
        """The SDK's error answer as (status, headers, raw body), an error already mapped, or None if foreign."""
        return None

    def invoke(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
               what: str) -> tuple[int, Any]:
        """Call one SDK method; return (HTTP status, decoded body). Default: the SDK returns the body."""
        return 200, fn(*args, **kwargs)

    def detail(self, body: Any, text: str) -> str:
        """The vendor's human message from an error body."""
        return default_detail(body, text)

    def classify(self, status: int, body: Any, text: str, what: str, retry_after: float | None,
                 fields: dict[str, Any]) -> ApiError:
        """The error for one error answer; vendors add their rules by overriding."""
        return classify_status(self.vendor, status, self.detail(body, text), what=what, retry_after=retry_after,
                               **fields)

    # ----------------------------------------------------------------- shared

    def error_for(self, status: int, raw: Any, what: str, headers: Mapping[str, str] | None = None) -> ApiError:
        """Decode an error answer once and classify it, keeping code, request id and body on the error."""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw if isinstance(raw, str) else ""
        body = decode_json(raw)
        retry_after = parse_retry_after(headers.get("Retry-After")) if headers is not None and hasattr(
            headers, "get") else None
        return self.classify(status, body, text, what, retry_after, self.shape.fields(body, headers))

    def transport_error(self, exc: BaseException, what: str) -> ApiError | None:
        """urllib3 and requests transport failures (timeouts, resets, refused connections): retriable."""
        if isinstance(exc, (urllib3.exceptions.HTTPError, *TRANSPORT_ERRORS)):
            return RetriableApiError(redact(f"{self.vendor}: no response ({what}): {type(exc).__name__}"),
                                     vendor=self.vendor, status=0)
        return None

    def translate(self, what: str) -> Callable[[BaseException], BaseException | None]:
        """The exception translator the policy applies to everything the SDK raises."""

        def translate(exc: BaseException) -> BaseException | None:
            mapped = self.transport_error(exc, what)
            if mapped is not None:
                return mapped
            if isinstance(exc, json.JSONDecodeError):  # the SDK decoded a 2xx body that is not JSON
                return RetriableApiError(redact(f"{self.vendor}: {what} answered a body that is not valid JSON: {exc}"),
                                         vendor=self.vendor, status=200)
            failure = self.sdk_failure(exc, what)
            if failure is None or isinstance(failure, ApiError):
                return failure
            status, headers, raw = failure
            return self.error_for(status, raw, what, headers)

        return translate

    def call(self, endpoint: str, what: str, fn: Callable[..., Any], *args: Any, limiter: str | None = None,
             accept: Sequence[int] = (), **kwargs: Any) -> tuple[int, Any]:
        """Call an SDK method under the policy; return (status, decoded body).

        A status in ``accept`` (say, 409 "already exists") is returned with the error's decoded body
        instead of raised.
        """
        try:
            return self.policy.call(lambda: self.invoke(fn, args, kwargs, what), endpoint=endpoint, limiter=limiter,
                                    translate=self.translate(what))
        except ApiError as exc:
            if exc.status in accept:
                return exc.status, exc.body if exc.body is not None else {"message": exc.detail}
            raise

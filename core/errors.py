"""The one exception root of segsync, branched by what the caller should do.

It lives in :mod:`core`, the bottom layer that imports nothing of ours, so every package may use it
without breaking the rule that connectors, consent and scoring never import each other.

    SegsyncError                      anything segsync raises on purpose
    ├── ConfigError                   bad config or usage: fix the input (CLI exit 2)
    ├── InputError                    bad input data (CSV row, webhook body): reject that input
    ├── ApiError                      a vendor answered with an error
    │   ├── RetriableApiError         429, 5xx, timeouts, connection errors: back off and retry
    │   │   └── RateLimitedError      429, with the vendor's Retry-After if any
    │   ├── FatalApiError             401/403/404 on a resource we need: stop this tenant, fix config
    │   └── RejectedRecordError       the vendor refused one record: record it and move on
    └── ConsentRefusedError           consent says no: the record is suppressed, not sent

Messages never contain secrets: build them from redacted URLs (see ``connectors.kit.http.redact``).
"""

from __future__ import annotations

from typing import TypedDict


class ApiErrorFields(TypedDict):
    """What an :class:`ApiError` carries besides its message (see :meth:`ApiError.fields`)."""

    vendor: str
    status: int
    detail: str
    retry_after: float | None
    code: str
    request_id: str
    body: object


class SegsyncError(Exception):
    """Root of every error segsync raises on purpose."""


class ConfigError(SegsyncError):
    """The configuration or the command line is wrong; the message says what and where."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class InputError(SegsyncError):
    """An input record or document is malformed (a CSV row, a webhook body)."""


class ApiError(SegsyncError):
    """A vendor API answered with an error.

    ``status`` is the HTTP status (0 when no response arrived), ``vendor`` names the API,
    ``detail`` is the vendor's own message, decoded from its error body, ``code`` the vendor's
    error code (HubSpot's ``category``, Mailchimp's problem ``title``), ``request_id`` the id the
    vendor gave the request (quote it to their support) and ``body`` the decoded error body
    (a batch refusal names its bad inputs there).
    """

    #: How many times the call was sent before this error (the kit's retry policy sets it; 1 = first try).
    attempts: int = 1

    def __init__(
        self,
        message: str,
        *,
        vendor: str = "",
        status: int = 0,
        detail: str = "",
        retry_after: float | None = None,
        code: str = "",
        request_id: str = "",
        body: object = None,
    ) -> None:
        super().__init__(message)
        self.vendor = vendor
        self.status = status
        self.detail = detail or message
        self.retry_after = retry_after
        self.code = code
        self.request_id = request_id
        self.body = body

    def fields(self) -> ApiErrorFields:
        """The keyword arguments that rebuild this error with another message (or another class)."""
        return {"vendor": self.vendor, "status": self.status, "detail": self.detail, "retry_after": self.retry_after,
                "code": self.code, "request_id": self.request_id, "body": self.body}


class RetriableApiError(ApiError):
    """Transient: 429, 5xx, timeouts, dropped connections. Safe to retry after a pause."""


class RateLimitedError(RetriableApiError):
    """429 Too Many Requests."""


class FatalApiError(ApiError):
    """Retrying will not help (bad credentials, missing scope, unknown list): stop and fix config."""


class RejectedRecordError(ApiError):
    """The vendor refused one record (invalid email, compliance state); the rest may proceed."""


class ConsentRefusedError(SegsyncError):
    """The consent ledger does not allow this purpose for this contact right now."""

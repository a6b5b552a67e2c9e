"""The connector kit: what every vendor connector needs and none should write again.

    http     the one HTTP layer: CallPolicy (one tenacity policy), HttpClient, classification
    redact   register_secret / redact / RedactingFilter: no secret in messages, logs or reports
    ratelimit  RateLimiter: a token bucket per endpoint class
    sdk      SdkAdapter: an official SDK's calls under the policy, its exceptions into core.errors
    paging   I/O-free paginators (offset, token, page number, keyset) with loop detection; paginate()
    batch    send_isolating(): split a refused batch to isolate bad inputs within a CallBudget
    stats    CallStats: calls per endpoint class, write calls, 429s, retries

A vendor package (``connectors/<vendor>/``) keeps only vendor knowledge: endpoints and limits as
data, the mapping of its records, and the few rules its errors need. See docs/connectors.md.
"""

from connectors.kit.batch import CallBudget, send_isolating
from connectors.kit.http import CallPolicy, ErrorShape, HttpClient, RateLimiter, RetrySettings, redact, register_secret
from connectors.kit.paging import (
    OffsetPaginator,
    PageNumberPaginator,
    PagingLoopError,
    TokenPaginator,
    chunked,
    paginate,
)
from connectors.kit.sdk import SdkAdapter
from connectors.kit.stats import CallStats

__all__ = [
    "CallBudget", "CallPolicy", "CallStats", "ErrorShape", "HttpClient", "OffsetPaginator", "PageNumberPaginator",
    "PagingLoopError", "RateLimiter", "RetrySettings", "SdkAdapter", "TokenPaginator", "chunked", "paginate", "redact",
    "register_secret", "send_isolating",
]

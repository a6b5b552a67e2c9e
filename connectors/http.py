"""Old import path of the one HTTP layer, now :mod:`connectors.kit.http`; kept so callers in sync/ keep working."""

from connectors.kit.http import *  # noqa: F403 - a re-export, nothing else
from connectors.kit.http import (  # noqa: F401 - names star-import leaves out or callers import directly
    DEFAULT_TIMEOUT,
    CallPolicy,
    HttpClient,
    RateLimiter,
    RedactingFilter,
    RetrySettings,
    classify_status,
    parse_retry_after,
    redact,
    register_secret,
    transport_error,
)
from connectors.kit.stats import CallStats  # noqa: F401

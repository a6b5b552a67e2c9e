"""Moved to :mod:`core.errors`; this alias keeps branches written before the move importable.

Import from ``core.errors`` in new code; this module goes once every open branch has merged.
"""

from core.errors import (
    ApiError,
    ConfigError,
    ConsentRefusedError,
    FatalApiError,
    InputError,
    RateLimitedError,
    RejectedRecordError,
    RetriableApiError,
    SegsyncError,
)

__all__ = [
    "ApiError", "ConfigError", "ConsentRefusedError", "FatalApiError", "InputError", "RateLimitedError",
    "RejectedRecordError", "RetriableApiError", "SegsyncError",
]

"""Redaction: secrets are registered once and masked in every message, log line and report."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
_QUERY_SECRET = re.compile(
    r"(?i)((?:api[_-]?key|apikey|hapikey|access_token|token|secret|password|client_secret)=)[^&\s\"']+"
)
_AUTH_HEADER = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:bearer|basic|userkeyauth)\s+)[^\s'\",}]+")


def register_secret(value: str | None) -> None:
    """Remember a secret so that :func:`redact` and the log filter mask it everywhere."""
    if value and len(value) >= 4:
        with _SECRETS_LOCK:
            _SECRETS.add(value)


def redact(text: object, extra: Iterable[str] = ()) -> str:
    """Return ``text`` with every registered secret, credential query parameter and auth header masked."""
    out = str(text)
    with _SECRETS_LOCK:
        secrets = sorted(_SECRETS | {s for s in extra if s}, key=len, reverse=True)
    for secret in secrets:
        out = out.replace(secret, "***")
    out = _QUERY_SECRET.sub(r"\1***", out)
    return _AUTH_HEADER.sub(r"\1***", out)


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in every record that passes a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True

"""Log formats: plain text for people, one JSON object per line for log shippers (``--log-format json``).

Every record is rendered from its final message, after the redacting filters ran, so a secret masked in
text is masked in JSON too. uvicorn's access lines become structured (client, method, path, status) with
the path already masked by :class:`sync.serve.AccessLogFilter` (webhook secrets in URLs, link tokens).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

ENV = "SEGSYNC_LOG_FORMAT"  # "text" | "json"; set by `segsync --log-format` so every part of the process agrees


def json_logs() -> bool:
    """Whether this process logs JSON lines."""
    return os.environ.get(ENV, "text").lower() == "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message; access lines add request fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            client, method, path, version, status = args
            out.update(
                {
                    "event": "http_request",
                    "client": str(client),
                    "method": method,
                    "path": path,
                    "http_version": version,
                    "status": int(str(status)) if str(status).isdigit() else status,
                }
            )
        if record.exc_info and record.levelno >= logging.ERROR:
            out["error"] = self.formatException(record.exc_info).splitlines()[-1]  # the last line, not a traceback
        return json.dumps(out, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def formatter() -> logging.Formatter:
    """The formatter this process's handlers use."""
    return JsonFormatter() if json_logs() else logging.Formatter(TEXT_FORMAT)

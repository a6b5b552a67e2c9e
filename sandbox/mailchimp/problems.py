"""Mailchimp-shaped errors, timestamps and the ``fields``/``exclude_fields`` filter.

Every error Mailchimp returns is ``application/problem+json`` with ``type``, ``title``,
``status``, ``detail`` and ``instance``; the sandbox raises :class:`SimError` anywhere in the
state or the routes and turns it into that body in one place.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

PROBLEM_TYPE = "https://mailchimp.com/developer/marketing/docs/errors/"
PROBLEM_CONTENT_TYPE = "application/problem+json"


class SimError(Exception):
    """An API error with Mailchimp's title and detail; becomes a problem+json response."""

    def __init__(self, status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors


def not_found(detail: str = "The requested resource could not be found.") -> SimError:
    """Mailchimp's 404 for an unknown list, member, segment, campaign or batch."""
    return SimError(404, "Resource Not Found", detail)


def invalid(detail: str, errors: list[dict[str, str]] | None = None) -> SimError:
    """Mailchimp's generic 400 for a request body it cannot accept."""
    return SimError(400, "Invalid Resource", detail, errors)


def problem_body(status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The problem+json body; ``instance`` is a fresh id like Mailchimp's request ids."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": str(uuid.uuid4()),
    }
    if errors:
        body["errors"] = errors
    return body


def problem_response(
    status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None
) -> Response:
    """A ready-to-send problem+json response."""
    return Response(
        json.dumps(problem_body(status, title, detail, errors)),
        status_code=status,
        media_type=PROBLEM_CONTENT_TYPE,
    )


def error_response(exc: SimError) -> Response:
    """Turn a :class:`SimError` into its HTTP response."""
    return problem_response(exc.status, exc.title, exc.detail, exc.errors)


def fmt_time(value: datetime | None) -> str:
    """Mailchimp's timestamp format: second resolution, explicit UTC offset (``+00:00``); '' for unknown."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0).isoformat()


def parse_time(value: str, name: str) -> datetime:
    """Parse an ISO 8601 query parameter; naive values are taken as UTC, garbage is a 400."""
    try:
        text = value.strip()
        if "T" in text:
            # an unencoded "+00:00" in a query string arrives as " 00:00"
            text = text.replace(" ", "+")
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise invalid(f"The value of '{name}' is not a valid ISO 8601 time: {value!r}.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _paths(spec: str | None) -> list[list[str]]:
    return [p.strip().split(".") for p in (spec or "").split(",") if p.strip()]


def _include(obj: Any, paths: list[list[str]]) -> Any:
    if isinstance(obj, list):
        return [_include(item, paths) for item in obj]
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    for key, value in obj.items():
        matching = [p for p in paths if p[0] == key]
        if not matching:
            continue
        if any(len(p) == 1 for p in matching):
            out[key] = value
        else:
            out[key] = _include(value, [p[1:] for p in matching])
    return out


def _exclude(obj: Any, paths: list[list[str]]) -> Any:
    if isinstance(obj, list):
        return [_exclude(item, paths) for item in obj]
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    for key, value in obj.items():
        matching = [p for p in paths if p[0] == key]
        if any(len(p) == 1 for p in matching):
            continue
        out[key] = _exclude(value, [p[1:] for p in matching]) if matching else value
    return out


def filter_fields(body: Any, fields: str | None, exclude_fields: str | None) -> Any:
    """Apply Mailchimp's dotted ``fields``/``exclude_fields`` lists (e.g. ``members.email_address``)."""
    if fields:
        body = _include(body, _paths(fields))
    if exclude_fields:
        body = _exclude(body, _paths(exclude_fields))
    return body

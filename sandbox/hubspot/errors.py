"""HubSpot's error bodies, in one place so every route answers in the same shape."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.responses import JSONResponse


class HubSpotError(Exception):
    """Raised by simulator logic; the app turns it into HubSpot's error JSON."""

    def __init__(self, status: int, message: str, category: str, sub_category: str | None = None,
                 context: dict[str, list[str]] | None = None, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.category = status, message, category
        self.sub_category, self.context, self.errors = sub_category, context, errors


def correlation_id() -> str:
    """A fresh id, like the one HubSpot puts on every error."""
    return str(uuid.uuid4())


def error_body(message: str, category: str, sub_category: str | None = None,
               context: dict[str, list[str]] | None = None,
               errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``{status:"error", message, correlationId, category, ...}`` as HubSpot sends it."""
    body: dict[str, Any] = {"status": "error", "message": message, "correlationId": correlation_id(),
                            "category": category}
    if sub_category:
        body["subCategory"] = sub_category
    if context:
        body["context"] = context
    if errors:
        body["errors"] = errors
    return body


def error_response(exc: HubSpotError) -> JSONResponse:
    """The JSON response for a raised :class:`HubSpotError`."""
    return JSONResponse(error_body(exc.message, exc.category, exc.sub_category, exc.context, exc.errors),
                        status_code=exc.status)


def batch_error(message: str, category: str, ids: list[str], sub_category: str | None = None) -> dict[str, Any]:
    """One entry of a 207 ``errors`` list (shape of the SDK's StandardError: all fields present)."""
    entry: dict[str, Any] = {"status": "error", "category": category, "message": message,
                             "context": {"ids": ids}, "links": {}, "errors": []}
    if sub_category:
        entry["subCategory"] = sub_category
    return entry


def not_found(object_type: str, object_id: str) -> HubSpotError:
    """404 for a missing record."""
    return HubSpotError(404, f"resource not found: {object_type} {object_id} does not exist", "OBJECT_NOT_FOUND")


def validation(message: str, **kw: Any) -> HubSpotError:
    """400 VALIDATION_ERROR."""
    return HubSpotError(400, message, "VALIDATION_ERROR", **kw)


def int_param(value: Any, name: str, default: int) -> int:
    """An integer request parameter (query or body), or HubSpot's 400 naming it."""
    if value is None or value == "":
        return default
    try:
        return int(str(value))
    except ValueError:
        raise validation(f"Invalid value for {name}: {value!r} is not an integer") from None

"""Request helpers and the JSON shapes of members, segments and lists, as Mailchimp returns them."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.mailchimp.problems import SimError, error_response, filter_fields, fmt_time, invalid
from sandbox.mailchimp.segments import Segment
from sandbox.mailchimp.state import ListState, Member

MAX_COUNT = 1000
DEFAULT_COUNT = 10
T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]


def endpoint(fn: Handler) -> Handler:
    """Turn any :class:`SimError` raised by a handler into its problem+json response.

    Anything else is a simulator bug: it still answers like Mailchimp's 500 (problem+json), naming the
    exception so the failing test says what broke.
    """

    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except SimError as exc:
            return error_response(exc)
        except Exception as exc:
            return error_response(SimError(500, "Internal Server Error",
                                           f"Sandbox bug in {fn.__name__}: {type(exc).__name__}: {exc}"))

    return wrapper


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; Mailchimp answers 400 "JSON Parse Exception" otherwise."""
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise SimError(400, "JSON Parse Exception", "We encountered an unspecified JSON parsing error.") from None
    if not isinstance(body, dict):
        raise SimError(400, "JSON Parse Exception", "The request body must be a JSON object.")
    return body


def api_path(request: Request) -> str:
    """The request path relative to the API root (``/lists/{id}/members/{hash}``), as batch operations name it."""
    path = request.url.path
    return path[4:] if path.startswith("/3.0/") else path


def ok(request: Request, body: Any, status: int = 200) -> Response:
    """A JSON response with the request's ``fields``/``exclude_fields`` applied."""
    q = request.query_params
    return JSONResponse(filter_fields(body, q.get("fields"), q.get("exclude_fields")), status_code=status)


def paging(request: Request) -> tuple[int, int]:
    """``count`` (default 10, capped at 1000 like Mailchimp) and ``offset`` from the query."""
    q = request.query_params
    try:
        count = int(q.get("count", DEFAULT_COUNT))
        offset = int(q.get("offset", 0))
    except ValueError:
        raise invalid("count and offset must be integers.") from None
    if count < 0 or offset < 0:
        raise invalid("count and offset must not be negative.")
    return min(count, MAX_COUNT), offset


def page(items: Sequence[T], count: int, offset: int) -> list[T]:
    return list(items[offset : offset + count])


def member_json(state: ListState, m: Member) -> dict[str, Any]:
    """A member as ``GET /lists/{id}/members/{hash}`` returns it (the fields segsync and most tools use)."""
    tags = [{"id": seg.id, "name": seg.name} for seg in state.segments.values() if m.unique_email_id in seg.members]
    body: dict[str, Any] = {
        "id": m.id,
        "email_address": m.email,
        "unique_email_id": m.unique_email_id,
        "contact_id": m.unique_email_id,
        "full_name": f"{m.merge_fields.get('FNAME', '')} {m.merge_fields.get('LNAME', '')}".strip(),
        "web_id": m.web_id,
        "email_type": "html",
        "status": m.status,
        "merge_fields": dict(m.merge_fields),
        "stats": {"avg_open_rate": 0, "avg_click_rate": 0},
        "ip_signup": m.ip_signup,
        "timestamp_signup": fmt_time(m.timestamp_signup),
        "ip_opt": m.ip_opt,
        "timestamp_opt": fmt_time(m.timestamp_opt),
        "member_rating": m.member_rating,
        "last_changed": fmt_time(m.last_changed),
        "language": "",
        "vip": False,
        "email_client": "",
        "source": "API - Generic",
        "tags_count": len(tags),
        "tags": tags,
        "list_id": state.list_id,
    }
    if m.status == "unsubscribed":
        body["unsubscribe_reason"] = m.unsubscribe_reason
    return body


def segment_json(state: ListState, seg: Segment) -> dict[str, Any]:
    return {
        "id": seg.id,
        "name": seg.name,
        "member_count": len(seg.members),
        "type": "static",
        "created_at": fmt_time(seg.created_at),
        "updated_at": fmt_time(seg.updated_at),
        "options": {},
        "list_id": state.list_id,
    }


def list_json(state: ListState) -> dict[str, Any]:
    counts = {s: 0 for s in ("subscribed", "unsubscribed", "cleaned")}
    for m in state.members.values():
        if m.status in counts:
            counts[m.status] += 1
    return {
        "id": state.list_id,
        "web_id": 42,
        "name": state.name,
        "contact": {"company": "Sandbox Advisors", "country": "US"},
        "permission_reminder": "You are receiving this email because you opted in with your advisor.",
        "date_created": fmt_time(state.created_at),
        "list_rating": 3,
        "double_optin": True,
        "stats": {
            "member_count": counts["subscribed"],
            "unsubscribe_count": counts["unsubscribed"],
            "cleaned_count": counts["cleaned"],
            "total_contacts": len(state.members),
            "last_sub_date": "",
            "last_unsub_date": "",
        },
    }

"""Audience routes: the list, members (paging, upsert, tags, activity), batch subscribe, segments.

``since_last_changed`` is inclusive (members changed at or after the instant), ordering without
``sort_field`` is insertion order, and ``count`` is capped at 1000 rather than refused. Members are
addressed by subscriber hash, email or contact_id; ``DELETE`` archives. Segment member listings hide
cleaned/unsubscribed/transactional members unless ``include_<status>=true``, as Mailchimp does.
Every body asking for ``subscribed`` is recorded in ``state.subscribe_attempts`` before it is judged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.mailchimp.problems import SimError, fmt_time, invalid, not_found, parse_time
from sandbox.mailchimp.segments import MAX_BATCH_MEMBERS, check_strings
from sandbox.mailchimp.state import ListState, Member, validate_email, validate_status
from sandbox.mailchimp.views import (
    api_path,
    endpoint,
    list_json,
    member_json,
    ok,
    page,
    paging,
    read_json,
    segment_json,
)

_SORT_FIELDS = {"last_changed", "timestamp_opt", "timestamp_signup"}


def list_routes(state: ListState) -> list[Route]:
    """The routes of one audience, bound to its state (relative to the API root, no ``/3.0``).

    Starlette tries routes in order; the groups keep the order the routes always had."""
    return [*_audience_routes(state), *_member_routes(state), *_member_detail_routes(state),
            *_segment_routes(state), *_segment_member_routes(state)]


def _checker(state: ListState) -> Callable[[Request], None]:
    """A check that the request names this audience."""

    def check_list(request: Request) -> None:
        if request.path_params["list_id"] != state.list_id:
            raise not_found()  # Mailchimp's exact body: it does not echo the unknown id

    return check_list


def _audience_routes(state: ListState) -> list[Route]:
    """The audience itself, its member listing and batch subscribe."""
    check_list = _checker(state)

    @endpoint
    async def get_list(request: Request) -> Response:
        check_list(request)
        with state.lock:
            return ok(request, list_json(state))

    @endpoint
    async def list_members(request: Request) -> Response:
        check_list(request)
        q = request.query_params
        count, offset = paging(request)
        with state.lock:
            members = list(state.members.values())
            if q.get("status"):
                validate_status(q["status"])
                members = [m for m in members if m.status == q["status"]]
            if q.get("since_last_changed"):
                since = parse_time(q["since_last_changed"], "since_last_changed")
                members = [m for m in members if m.last_changed >= since]
            if q.get("before_last_changed"):
                before = parse_time(q["before_last_changed"], "before_last_changed")
                members = [m for m in members if m.last_changed < before]
            sort_field = q.get("sort_field")
            if sort_field:
                if sort_field not in _SORT_FIELDS:
                    raise invalid(f"sort_field must be one of {', '.join(sorted(_SORT_FIELDS))}.")
                desc = q.get("sort_dir", "ASC").upper() == "DESC"
                # web_id breaks ties so offset paging is stable across calls
                members.sort(key=lambda m: (_sort_key(m, sort_field), m.web_id), reverse=desc)
            body = {
                "members": [member_json(state, m) for m in page(members, count, offset)],
                "list_id": state.list_id,
                "total_items": len(members),
            }
            return ok(request, body)

    @endpoint
    async def batch_subscribe(request: Request) -> Response:
        check_list(request)
        body = await read_json(request)
        members = body.get("members")
        if not isinstance(members, list):
            raise invalid("The resource submitted could not be validated.",
                          [{"field": "members", "message": "This value should not be blank."}])
        if len(members) > MAX_BATCH_MEMBERS:
            raise invalid(f"You may only add up to {MAX_BATCH_MEMBERS} members per batch; {len(members)} were sent.",
                          [{"field": "members", "message": f"Expected at most {MAX_BATCH_MEMBERS} items."}])
        with state.lock:
            for item in members:
                state.audit(item, api_path(request))
            result = _batch_subscribe(state, members, bool(body.get("update_existing")), bool(body.get("sync_tags")))
            return ok(request, result)

    base = "/lists/{list_id}"
    return [
        Route(base, get_list, methods=["GET"]),
        Route(base, batch_subscribe, methods=["POST"]),
        Route(base + "/members", list_members, methods=["GET"]),
    ]


def _member_routes(state: ListState) -> list[Route]:
    """One member: read, upsert, archive, delete permanently, create."""
    check_list = _checker(state)

    @endpoint
    async def get_member(request: Request) -> Response:
        check_list(request)
        with state.lock:
            return ok(request, member_json(state, state.get(request.path_params["member"])))

    @endpoint
    async def put_member(request: Request) -> Response:
        check_list(request)
        body = await read_json(request)
        with state.lock:
            state.audit(body, api_path(request), request.path_params["member"])
            member, _ = state.upsert(request.path_params["member"], body, patch=request.method == "PATCH")
            return ok(request, member_json(state, member))

    @endpoint
    async def archive_member(request: Request) -> Response:
        """``DELETE .../members/{hash}`` archives: status "archived", compliance state kept, 204."""
        check_list(request)
        with state.lock:
            state.set_status(state.get(request.path_params["member"]), "archived")
        return Response(status_code=204)

    @endpoint
    async def delete_permanent(request: Request) -> Response:
        """``POST .../members/{hash}/actions/delete-permanent``: erase the member for good (204)."""
        check_list(request)
        with state.lock:
            state.delete_permanently(state.get(request.path_params["member"]))
        return Response(status_code=204)

    @endpoint
    async def post_member(request: Request) -> Response:
        check_list(request)
        body = await read_json(request)
        with state.lock:
            state.audit(body, api_path(request))
            email = validate_email(body.get("email_address"))
            if state.find(email) is not None:
                raise SimError(400, "Member Exists",
                               f"{email} is already a list member. Use PUT to insert or update list members.")
            member, _ = state.upsert(email, body, patch=False)
            return ok(request, member_json(state, member))

    base = "/lists/{list_id}"
    member = base + "/members/{member}"
    return [
        Route(base + "/members", post_member, methods=["POST"]),
        Route(member, get_member, methods=["GET"]),
        Route(member, put_member, methods=["PUT", "PATCH"]),
        Route(member, archive_member, methods=["DELETE"]),
        Route(member + "/actions/delete-permanent", delete_permanent, methods=["POST"]),
    ]


def _member_detail_routes(state: ListState) -> list[Route]:
    """A member's tags and activity."""
    check_list = _checker(state)

    @endpoint
    async def member_tags(request: Request) -> Response:
        check_list(request)
        if request.method == "GET":
            with state.lock:
                member = state.get(request.path_params["member"])
                tags = [{"id": s.id, "name": s.name, "date_added": ""} for s in state.segments.values()
                        if member.unique_email_id in s.members]
                return ok(request, {"tags": tags, "total_items": len(tags)})
        body = await read_json(request)
        tags = body.get("tags")  # type: ignore[assignment]  # a body value, checked on the next line
        if not isinstance(tags, list):
            raise invalid("The resource submitted could not be validated.",
                          [{"field": "tags", "message": "Schema describes array, object found instead"}])
        with state.lock:
            state.apply_tags(state.get(request.path_params["member"]), tags)
        return Response(status_code=204)

    @endpoint
    async def activity_feed(request: Request) -> Response:
        check_list(request)
        count, offset = paging(request)
        with state.lock:
            member = state.get(request.path_params["member"])
            items = sorted(member.activity, key=lambda a: a["created_at_timestamp"], reverse=True)
            activity = [_activity_json(a) for a in page(items, count, offset)]
            return ok(request, {"activity": activity, "email_id": member.id, "list_id": state.list_id,
                                "total_items": len(items)})

    @endpoint
    async def activity(request: Request) -> Response:
        """The older ``/activity`` endpoint: the member's last 50 events as ``{action, timestamp, ...}``."""
        check_list(request)
        with state.lock:
            member = state.get(request.path_params["member"])
            items = sorted(member.activity, key=lambda a: a["created_at_timestamp"], reverse=True)[:50]
            out = []
            for a in items:
                entry = {"action": a["activity_type"], "timestamp": fmt_time(a["created_at_timestamp"]), "type": "",
                         "campaign_id": a.get("campaign_id") or "", "title": a.get("campaign_title") or ""}
                if a.get("link_clicked"):
                    entry["url"] = a["link_clicked"]
                out.append(entry)
            return ok(request, {"activity": out, "email_id": member.id, "list_id": state.list_id,
                                "total_items": len(out)})

    base = "/lists/{list_id}"
    member = base + "/members/{member}"
    return [
        Route(member + "/tags", member_tags, methods=["GET", "POST"]),
        Route(member + "/activity-feed", activity_feed, methods=["GET"]),
        Route(member + "/activity", activity, methods=["GET"]),
    ]


def _segment_routes(state: ListState) -> list[Route]:
    """Segments and tags: list, create, read, update, delete."""
    check_list = _checker(state)

    @endpoint
    async def segments(request: Request) -> Response:
        check_list(request)
        if request.method == "POST":
            body = await read_json(request)
            if "static_segment" not in body and "options" not in body:
                raise invalid('Must provide either an "options" field or a "static_segment" field')
            if "options" in body and "static_segment" not in body:
                raise invalid("The sandbox supports static segments only (send static_segment).")
            emails = body.get("static_segment") or []
            if not isinstance(emails, list):
                raise invalid("static_segment must be an array of email addresses.")
            with state.lock:
                return ok(request, segment_json(state, state.create_segment(body.get("name", ""), emails)))
        count, offset = paging(request)
        with state.lock:
            kind = request.query_params.get("type", "static")
            items = list(state.segments.values()) if kind == "static" else []
            body = {"segments": [segment_json(state, s) for s in page(items, count, offset)],
                    "list_id": state.list_id, "total_items": len(items)}
            return ok(request, body)

    @endpoint
    async def segment(request: Request) -> Response:
        check_list(request)
        if request.method == "POST":
            body = await read_json(request)
            add, remove = body.get("members_to_add") or [], body.get("members_to_remove") or []
            with state.lock:
                result = state.update_segment(state.segment(request.path_params["segment_id"]), add, remove)
                return ok(request, {
                    "members_added": [member_json(state, m) for m in result["added"]],
                    "members_removed": [member_json(state, m) for m in result["removed"]],
                    "errors": result["errors"],
                    "total_added": len(result["added"]),
                    "total_removed": len(result["removed"]),
                    "error_count": result["error_count"],
                })
        if request.method == "PATCH":
            body = await read_json(request)
            with state.lock:
                seg = state.segment(request.path_params["segment_id"])
                state.patch_segment(seg, body.get("name"), body.get("static_segment"))
                return ok(request, segment_json(state, seg))
        with state.lock:
            seg = state.segment(request.path_params["segment_id"])
            if request.method == "DELETE":
                del state.segments[seg.id]
                return Response(status_code=204)
            return ok(request, segment_json(state, seg))

    base = "/lists/{list_id}"
    return [
        Route(base + "/segments", segments, methods=["GET", "POST"]),
        Route(base + "/segments/{segment_id}", segment, methods=["GET", "POST", "PATCH", "DELETE"]),
    ]


def _segment_member_routes(state: ListState) -> list[Route]:
    """Segment membership and tag search."""
    check_list = _checker(state)

    @endpoint
    async def segment_member(request: Request) -> Response:
        """``DELETE /segments/{id}/members/{hash}``: take one member out of a static segment."""
        check_list(request)
        with state.lock:
            seg = state.segment(request.path_params["segment_id"])
            member = state.get(request.path_params["member"])
            if member.unique_email_id not in seg.members:
                raise not_found()
            state.update_segment(seg, [], [member.email])
        return Response(status_code=204)

    @endpoint
    async def segment_members(request: Request) -> Response:
        check_list(request)
        if request.method == "POST":
            body = await read_json(request)
            with state.lock:
                seg = state.segment(request.path_params["segment_id"])
                email = validate_email(body.get("email_address"))
                member = state.get(email)
                state.update_segment(seg, [member.email], [])
                return ok(request, member_json(state, member))
        count, offset = paging(request)
        with state.lock:
            seg = state.segment(request.path_params["segment_id"])
            # like Mailchimp: cleaned, unsubscribed and transactional members only when asked for
            q = request.query_params
            hidden = {s for s in ("cleaned", "unsubscribed", "transactional")
                      if q.get(f"include_{s}", "false").lower() != "true"}
            members = [m for m in state.members.values() if m.unique_email_id in seg.members and m.status not in hidden]
            return ok(request, {"members": [member_json(state, m) for m in page(members, count, offset)],
                                "total_items": len(members)})

    @endpoint
    async def tag_search(request: Request) -> Response:
        check_list(request)
        name = request.query_params.get("name", "").lower()
        with state.lock:
            tags = [{"id": s.id, "name": s.name} for s in state.segments.values() if name in s.name.lower()]
        return ok(request, {"tags": tags, "total_items": len(tags)})

    base = "/lists/{list_id}"
    return [
        Route(base + "/segments/{segment_id}/members", segment_members, methods=["GET", "POST"]),
        Route(base + "/segments/{segment_id}/members/{member}", segment_member, methods=["DELETE"]),
        Route(base + "/tag-search", tag_search, methods=["GET"]),
    ]



def _sort_key(m: Member, field: str) -> Any:
    value = getattr(m, field)
    return value.timestamp() if value is not None else 0.0


def _activity_json(a: dict[str, Any]) -> dict[str, Any]:
    return {**a, "created_at_timestamp": fmt_time(a["created_at_timestamp"])}


def _batch_subscribe(state: ListState, items: list[Any], update_existing: bool, sync_tags: bool) -> dict[str, Any]:
    """``POST /lists/{id}``: each member succeeds or fails alone, errors are entries not a 400."""
    new: list[Member] = []
    updated: list[Member] = []
    errors: list[dict[str, str]] = []
    for item in items:
        email = item.get("email_address", "") if isinstance(item, dict) else ""
        try:
            if not isinstance(item, dict):
                raise invalid("Each member must be an object.")
            validate_email(email)
            existing = state.find(email)
            if existing is not None:
                if not update_existing:
                    errors.append({"email_address": email, "error_code": "ERROR_CONTACT_EXISTS", "field": "",
                                   "field_message": "",
                                   "error": f"{email} is already a list member, do you want to update? "
                                            "please provide update_existing:true in the request body"})
                    continue
                state.update(existing, item)
                if "tags" in item:
                    state.sync_tags(existing, item["tags"] or [], replace=sync_tags)
                updated.append(existing)
                continue
            status = item.get("status") or item.get("status_if_new")
            if not status:
                raise invalid("The resource submitted could not be validated: status is required for a new member.")
            check_strings(item.get("tags") or [], "tags")
            member = state.add(email, status, item.get("merge_fields"), ip=item.get("ip_signup", ""))
            state.sync_tags(member, item.get("tags") or [], replace=False)
            new.append(member)
        except SimError as exc:
            errors.append({"email_address": email, "error": exc.detail, "error_code": "ERROR_GENERIC",
                           "field": "", "field_message": ""})
    return {
        "new_members": [member_json(state, m) for m in new],
        "updated_members": [member_json(state, m) for m in updated],
        "errors": errors,
        "total_created": len(new),
        "total_updated": len(updated),
        "error_count": len(errors),
    }

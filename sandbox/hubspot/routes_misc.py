"""Properties, lists v3 and web-analytics event routes (communication preferences: :mod:`prefs`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from sandbox.hubspot.errors import HubSpotError, int_param, not_found, validation
from sandbox.hubspot.http import json_body, json_object, store_for
from sandbox.hubspot.schema import iso, new_property, option, to_millis

if TYPE_CHECKING:
    from sandbox.hubspot.sim import HubSpotSim


def _conflict(message: str) -> HubSpotError:
    return HubSpotError(409, message, "OBJECT_ALREADY_EXISTS")


# -- properties -----------------------------------------------------------------

async def list_properties(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """GET /crm/v3/properties/{type}."""
    store = store_for(sim, request)
    return 200, {"results": [p for p in store.schema.values() if not p["archived"]]}


async def create_property(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """POST /crm/v3/properties/{type}; 409 when the name exists."""
    store = store_for(sim, request)
    body = await json_object(request)
    with sim.lock:
        if body.get("name") in store.schema:
            raise _conflict(f"A property named '{body['name']}' already exists.")
        prop = new_property(body, sim.groups if store is sim.contacts else {body.get("groupName"): {}},
                            datetime.now(UTC))
        store.schema[prop["name"]] = prop
    return 201, prop


async def get_property(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """GET /crm/v3/properties/{type}/{name}."""
    prop = store_for(sim, request).schema.get(request.path_params["name"])
    if prop is None:
        raise not_found("property", request.path_params["name"])
    return 200, prop


async def patch_property(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """PATCH /crm/v3/properties/{type}/{name}: label/description/options (options replace the list)."""
    prop = store_for(sim, request).schema.get(request.path_params["name"])
    if prop is None:
        raise not_found("property", request.path_params["name"])
    if prop["hubspotDefined"]:
        raise validation(f"Property {prop['name']} is HubSpot-defined and cannot be modified",
                         sub_category="READ_ONLY_DEFINITION")
    body = await json_object(request)
    with sim.lock:
        for key in ("label", "description", "groupName", "fieldType", "displayOrder", "hidden"):
            if key in body:
                prop[key] = body[key]
        if "options" in body:
            if not isinstance(body["options"] or [], list) or not all(
                    isinstance(o, dict) and o.get("value") for o in body["options"] or []):
                raise validation("options must be a list of {label, value} objects")
            prop["options"] = [option(o["value"], o.get("label"), o.get("displayOrder", i))
                               for i, o in enumerate(body["options"] or [])]
        prop["updatedAt"] = iso(datetime.now(UTC))
    return 200, prop


async def list_groups(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """GET /crm/v3/properties/{type}/groups."""
    store_for(sim, request)
    return 200, {"results": list(sim.groups.values())}


async def create_group(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """POST /crm/v3/properties/{type}/groups; 409 when the name exists."""
    store_for(sim, request)
    body = await json_object(request)
    if not body.get("name") or not body.get("label"):
        raise validation("name and label are required")
    with sim.lock:
        if body["name"] in sim.groups:
            raise _conflict(f"A property group named '{body['name']}' already exists.")
        group = {"name": body["name"], "label": body["label"], "displayOrder": body.get("displayOrder", -1),
                 "archived": False}
        sim.groups[group["name"]] = group
    return 201, group


# -- lists v3 -------------------------------------------------------------------

def _list_view(sim: HubSpotSim, lst: dict[str, Any]) -> dict[str, Any]:
    return {**lst, "size": len(sim.memberships.get(lst["listId"], {}))}


def _get_list(sim: HubSpotSim, list_id: str) -> dict[str, Any]:
    lst = sim.lists.get(list_id)
    if lst is None:
        raise not_found("list", list_id)
    return lst


async def create_list(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """POST /crm/v3/lists {name, objectTypeId, processingType}."""
    body = await json_object(request)
    for required in ("name", "objectTypeId", "processingType"):
        if not body.get(required):
            raise validation(f"Missing required field: {required}")
    with sim.lock:
        if any(x["name"] == body["name"] for x in sim.lists.values()):
            raise validation(f"A list named '{body['name']}' already exists.", sub_category="LIST_NAME_ALREADY_EXISTS")
        now = iso(datetime.now(UTC))
        list_id = str(len(sim.lists) + 1)
        lst = {"listId": list_id, "name": body["name"], "objectTypeId": body["objectTypeId"],
               "processingType": body["processingType"], "processingStatus": "COMPLETE", "listVersion": 1,
               "createdAt": now, "updatedAt": now, "filtersUpdatedAt": now}
        sim.lists[list_id] = lst
        sim.memberships[list_id] = {}
    return 200, {"list": _list_view(sim, lst)}


async def list_by_name(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """GET /crm/v3/lists/object-type-id/{objectTypeId}/name/{name}."""
    name = request.path_params["name"]
    lst = next((x for x in sim.lists.values() if x["name"] == name), None)
    if lst is None:
        raise not_found("list", name)
    return 200, {"list": _list_view(sim, lst)}


async def get_list(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """GET /crm/v3/lists/{listId}."""
    return 200, {"list": _list_view(sim, _get_list(sim, request.path_params["list_id"]))}


async def search_lists(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """POST /crm/v3/lists/search {query, offset, count}."""
    body = await json_object(request)
    query = (body.get("query") or "").lower()
    hits = [_list_view(sim, x) for x in sim.lists.values() if query in x["name"].lower()]
    offset, count = int_param(body.get("offset"), "offset", 0), int_param(body.get("count"), "count", 20)
    return 200, {"lists": hits[offset:offset + count], "hasMore": offset + count < len(hits),
                 "offset": offset + count, "total": len(hits)}


def _change_members(sim: HubSpotSim, list_id: str, add: list[Any], remove: list[Any]) -> dict[str, Any]:
    members = sim.memberships[_get_list(sim, list_id)["listId"]]
    now = datetime.now(UTC)
    added, removed, missing = [], [], []
    for rid in map(str, add):
        if sim.resolve(sim.contacts, rid) is None:
            missing.append(rid)
        elif rid not in members:
            members[rid] = now
            added.append(rid)
    for rid in map(str, remove):
        if members.pop(rid, None) is not None:
            removed.append(rid)
    return {"recordIdsAdded": added, "recordIdsRemoved": removed, "recordIdsMissing": missing}


async def change_members(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """PUT /crm/v3/lists/{listId}/memberships/add | remove (JSON array of ids) | add-and-remove."""
    op, body = request.path_params["op"], await json_body(request)
    list_id = request.path_params["list_id"]
    if op == "add-and-remove":
        if not isinstance(body, dict):
            raise validation("Expected {recordIdsToAdd, recordIdsToRemove}")
        add, remove = body.get("recordIdsToAdd") or [], body.get("recordIdsToRemove") or []
    elif op in ("add", "remove"):
        if not isinstance(body, list):
            raise validation("Expected a JSON array of record ids")
        add, remove = (body, []) if op == "add" else ([], body)
    else:
        raise not_found("memberships operation", op)
    with sim.lock:
        out = _change_members(sim, list_id, add, remove)
    if op == "add":
        out.pop("recordIdsRemoved")
    elif op == "remove":
        out.pop("recordIdsAdded")
    return 200, out


async def list_members(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """GET /crm/v3/lists/{listId}/memberships?after=&limit= (ordered by record id)."""
    with sim.lock:
        members = sim.memberships[_get_list(sim, request.path_params["list_id"])["listId"]]
        rows = sorted(members.items(), key=lambda kv: int(kv[0]))
    limit = min(int_param(request.query_params.get("limit"), "limit", 100), 250)
    after = int_param(request.query_params.get("after"), "after", 0)
    rows = [r for r in rows if int(r[0]) > after]
    body: dict[str, Any] = {"results": [{"recordId": rid, "membershipTimestamp": iso(at)} for rid, at in rows[:limit]]}
    if len(rows) > limit:
        body["paging"] = {"next": {"after": rows[limit - 1][0]}}
    return 200, body


# -- web analytics events ------------------------------------------------------------
# HubSpot documents the event analytics API as "Marketing Hub Enterprise, Sales Hub Enterprise, Service
# Hub Enterprise, or CMS Hub Enterprise only" (developers.hubspot.com/docs/api/events/event-analytics).
# Below Enterprise it answers 403 with category MISSING_SCOPES and a message naming the missing
# "auth details" event-detail-read and web-analytics-api-access, as reproduced on a free portal in
# github.com/PipedreamHQ/pipedream/issues/11810. Inferred: the same answer on Starter and Professional.

def events_refused() -> HubSpotError:
    """The 403 a portal below Enterprise gets from the events API (whatever scopes the token has)."""
    return HubSpotError(403, "Your app doesn't have the scopes needed to make this call. Do you have access to "
                        "the 'business-intelligence' scope?  Missing auth details: event-detail-read,"
                        "web-analytics-api-access", "MISSING_SCOPES")


async def events(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """GET /events/v3/events?objectType=contact&eventType=&objectId=&occurredAfter=&occurredBefore=&after=&limit=."""
    q = request.query_params
    if sim.tier != "enterprise":
        raise events_refused()
    if q.get("objectType", "contact").lower() not in ("contact", "contacts", "0-1"):
        raise validation("Only objectType=contact is simulated")
    event_type = q.get("eventType")
    after_ms, before_ms = to_millis(q.get("occurredAfter")), to_millis(q.get("occurredBefore"))
    limit = int_param(q.get("limit"), "limit", 100)
    if not 1 <= limit <= 1000:
        raise validation(f"limit must be between 1 and 1000 (got {limit})")
    offset = int_param(q.get("after"), "after", 0)
    with sim.lock:
        if event_type and event_type != "e_visited_page":
            rows: Sequence[int] = []
        else:
            rows = sim.web_events.rows(*sim.web_events.window(after_ms, before_ms), q.get("objectId"))
        if q.get("sort") == "-occurredAt":
            rows = rows[::-1]
        body: dict[str, Any] = {"results": [sim.web_events.serialise(i) for i in rows[offset:offset + limit]]}
    if offset + limit < len(rows):
        body["paging"] = {"next": {"after": str(offset + limit)}}
    return 200, body


ROUTES = [
    ("/crm/v3/properties/{object_type}/groups", list_groups, ["GET"]),
    ("/crm/v3/properties/{object_type}/groups", create_group, ["POST"]),
    ("/crm/v3/properties/{object_type}", list_properties, ["GET"]),
    ("/crm/v3/properties/{object_type}", create_property, ["POST"]),
    ("/crm/v3/properties/{object_type}/{name}", get_property, ["GET"]),
    ("/crm/v3/properties/{object_type}/{name}", patch_property, ["PATCH"]),
    ("/crm/v3/lists", create_list, ["POST"]),
    ("/crm/v3/lists/search", search_lists, ["POST"]),
    ("/crm/v3/lists/object-type-id/{object_type_id}/name/{name}", list_by_name, ["GET"]),
    ("/crm/v3/lists/{list_id}", get_list, ["GET"]),
    ("/crm/v3/lists/{list_id}/memberships", list_members, ["GET"]),
    ("/crm/v3/lists/{list_id}/memberships/{op}", change_members, ["PUT"]),
    ("/events/v3/events", events, ["GET"]),
]

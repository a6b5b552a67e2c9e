"""Properties, lists v3, communication preferences v3 and web-analytics event routes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from sandbox.hubspot.app import json_body, store_for
from sandbox.hubspot.errors import HubSpotError, not_found, validation
from sandbox.hubspot.loader import MARKETING_SUBSCRIPTION_ID
from sandbox.hubspot.schema import EMAIL_RE, iso, new_property, option, to_millis

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
    body = await json_body(request)
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
    body = await json_body(request)
    with sim.lock:
        for key in ("label", "description", "groupName", "fieldType", "displayOrder", "hidden"):
            if key in body:
                prop[key] = body[key]
        if "options" in body:
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
    body = await json_body(request)
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
    body = await json_body(request)
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
    body = await json_body(request)
    query = (body.get("query") or "").lower()
    hits = [_list_view(sim, x) for x in sim.lists.values() if query in x["name"].lower()]
    offset, count = int(body.get("offset") or 0), int(body.get("count") or 20)
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
    limit = min(int(request.query_params.get("limit") or 100), 250)
    after = int(request.query_params.get("after") or 0)
    rows = [r for r in rows if int(r[0]) > after]
    body: dict[str, Any] = {"results": [{"recordId": rid, "membershipTimestamp": iso(at)} for rid, at in rows[:limit]]}
    if len(rows) > limit:
        body["paging"] = {"next": {"after": rows[limit - 1][0]}}
    return 200, body


# -- communication preferences v3 --------------------------------------------------

async def definitions(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """GET /communication-preferences/v3/definitions."""
    return 200, {"subscriptionDefinitions": sim.subscriptions}


def _statuses(sim: HubSpotSim, email: str) -> list[dict[str, Any]]:
    mine = sim.sub_status.get(email.lower(), {})
    out = []
    for d in sim.subscriptions:
        st = mine.get(d["id"], {"status": "SUBSCRIBED" if sim.contact_by_email(email) else "NOT_SUBSCRIBED",
                                "legalBasis": None, "legalBasisExplanation": None, "sourceOfStatus": "DEFAULT"})
        out.append({"id": d["id"], "name": d["name"], "description": d["description"],
                    "preferenceGroupName": None, **st})
    return out


async def status(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """GET /communication-preferences/v3/status/email/{email}."""
    email = request.path_params["email"]
    with sim.lock:
        return 200, {"recipient": email, "subscriptionStatuses": _statuses(sim, email)}


async def change_subscription(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """POST /communication-preferences/v3/unsubscribe | subscribe {emailAddress, subscriptionId, legalBasis...}."""
    op, body = request.path_params["op"], await json_body(request)
    email, sub_id = str(body.get("emailAddress") or ""), str(body.get("subscriptionId") or "")
    (sim.unsubscribe_calls if op == "unsubscribe" else sim.subscribe_calls).append(dict(body))
    if not EMAIL_RE.match(email):
        raise validation(f"Invalid email address: {email}")
    if sub_id not in {d["id"] for d in sim.subscriptions}:
        raise validation(f"Subscription {sub_id} does not exist in portal {sim.portal_id}")
    wanted = "NOT_SUBSCRIBED" if op == "unsubscribe" else "SUBSCRIBED"
    with sim.lock:
        current = next(s for s in _statuses(sim, email) if s["id"] == sub_id)
        if current["status"] == wanted:
            # HubSpot refuses a no-op change; connectors must treat this as "already done".
            already = "unsubscribed from" if op == "unsubscribe" else "subscribed to"
            raise validation(f"{email} is already {already} subscription {sub_id}")
        st = {"status": wanted, "legalBasis": body.get("legalBasis"),
              "legalBasisExplanation": body.get("legalBasisExplanation"), "sourceOfStatus": "SUBSCRIPTION_STATUS"}
        sim.sub_status.setdefault(email.lower(), {})[sub_id] = st
        contact = sim.resolve(sim.contacts, email, "email")
        if contact is not None and op == "unsubscribe" and sub_id == MARKETING_SUBSCRIPTION_ID:
            contact.properties["hs_email_optout"] = "true"
            sim.contacts.touch(contact, sim.clock())
        current = next(s for s in _statuses(sim, email) if s["id"] == sub_id)
    return 200, current


# -- web analytics events ------------------------------------------------------------

async def events(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """GET /events/v3/events?objectType=contact&eventType=&objectId=&occurredAfter=&occurredBefore=&after=&limit=."""
    q = request.query_params
    if q.get("objectType", "contact").lower() not in ("contact", "contacts", "0-1"):
        raise validation("Only objectType=contact is simulated")
    event_type = q.get("eventType")
    after_ms, before_ms = to_millis(q.get("occurredAfter")), to_millis(q.get("occurredBefore"))
    limit = min(int(q.get("limit") or 100), 1000)
    offset = int(q.get("after") or 0)
    rows = [e for e in sim.web_events
            if (not event_type or e["eventType"] == event_type)
            and (not q.get("objectId") or e["objectId"] == q["objectId"])
            and (after_ms is None or (to_millis(e["occurredAt"]) or 0) > after_ms)
            and (before_ms is None or (to_millis(e["occurredAt"]) or 0) < before_ms)]
    body: dict[str, Any] = {"results": rows[offset:offset + limit]}
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
    ("/communication-preferences/v3/definitions", definitions, ["GET"]),
    ("/communication-preferences/v3/status/email/{email}", status, ["GET"]),
    ("/communication-preferences/v3/{op:str}", change_subscription, ["POST"]),
    ("/events/v3/events", events, ["GET"]),
]

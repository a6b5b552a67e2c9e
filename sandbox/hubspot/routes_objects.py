"""CRM object routes: list, read, create, update, archive, search, batch, merge and GDPR delete."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from sandbox.hubspot.errors import HubSpotError, int_param, not_found, validation
from sandbox.hubspot.http import csv_param, json_object, store_for

if TYPE_CHECKING:
    from sandbox.hubspot.sim import HubSpotSim

async def list_objects(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """GET /crm/v3/objects/{type}: id-ordered pages; ``after`` is the last id of the previous page."""
    store = store_for(sim, request)
    q = request.query_params
    limit = int_param(q.get("limit"), "limit", 10)
    if not 1 <= limit <= 100:
        raise validation(f"limit must be between 1 and 100 (got {limit})")
    after = int_param(q.get("after"), "after", 0)
    archived = q.get("archived", "false").lower() == "true"
    with sim.lock:
        page, more = store.page(after, limit, archived)
        results = [
            store.serialise(r, csv_param(q.getlist("properties")), csv_param(q.getlist("associations"))) for r in page
        ]
    body: dict[str, Any] = {"results": results}
    if more:
        nxt = page[-1].id
        link = str(request.url.include_query_params(after=nxt))
        body["paging"] = {"next": {"after": nxt, "link": link}}
    return 200, body


async def get_object(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """GET /crm/v3/objects/{type}/{id}: merged-away ids answer with their survivor."""
    store = store_for(sim, request)
    q = request.query_params
    with sim.lock:
        rec = sim.follow_merge(store, request.path_params["object_id"], q.get("idProperty"))
        if rec is None:
            raise not_found(store.object_type, request.path_params["object_id"])
        return 200, store.serialise(rec, csv_param(q.getlist("properties")), csv_param(q.getlist("associations")))


async def patch_object(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """PATCH /crm/v3/objects/{type}/{id}."""
    store = store_for(sim, request)
    body = await json_object(request)
    item = {"id": request.path_params["object_id"], "properties": body.get("properties") or {}}
    if request.query_params.get("idProperty"):
        item["idProperty"] = request.query_params["idProperty"]
    return _single(sim.batch_write(store, "update", [item]), store.object_type, item["id"])


async def delete_object(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """DELETE /crm/v3/objects/{type}/{id}: archive (204 even when already gone, like HubSpot)."""
    sim.archive(store_for(sim, request), [request.path_params["object_id"]])
    return 204, None


async def create_object(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """POST /crm/v3/objects/{type}: one record."""
    store = store_for(sim, request)
    body = await json_object(request)
    return _single(sim.batch_write(store, "create", [{"properties": body.get("properties") or {}}]),
                   store.object_type, "")


def _single(outcome: tuple[int, dict[str, Any]], object_type: str, ref: str) -> tuple[int, Any]:
    """Turn a one-input batch outcome into the single-object answer (or its error)."""
    status, body = outcome
    if status == 207:
        err = body["errors"][0]
        if err["category"] == "OBJECT_NOT_FOUND":
            raise not_found(object_type, ref)
        raise HubSpotError(409 if err["category"] == "CONFLICT" else 400, err["message"], err["category"],
                           err.get("subCategory"))
    return status, body["results"][0]


async def search(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """POST /crm/v3/objects/{type}/search."""
    store = store_for(sim, request)
    body = await json_object(request)
    with sim.lock:
        lag = sim.search_lag_seconds
        return 200, store.search(body, sim.clock() - timedelta(seconds=lag) if lag else None)


async def batch(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """POST /crm/v3/objects/{type}/batch/{action}."""
    store = store_for(sim, request)
    action = request.path_params["action"]
    body = await json_object(request)
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise validation("Invalid input JSON: inputs must be an array of objects")
    if action == "read":
        return sim.batch_read(store, body)
    if action == "archive":
        if len(inputs) > 100:
            raise validation(f"Batch input cannot exceed 100 inputs (got {len(inputs)}).")
        sim.archive(store, [str(i.get("id")) for i in inputs])
        return 204, None
    if action in ("create", "update", "upsert"):
        return sim.batch_write(store, action, inputs)
    raise not_found("batch action", action)


async def merge(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """POST /crm/v3/objects/contacts/merge {primaryObjectId, objectIdToMerge}."""
    body = await json_object(request)
    rec = sim.merge(str(body.get("primaryObjectId")), str(body.get("objectIdToMerge")))
    return 200, sim.contacts.serialise(rec, None)


async def gdpr_delete(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """POST /crm/v3/objects/contacts/gdpr-delete {objectId, idProperty?}: permanent, 204 (404 when unknown)."""
    body = await json_object(request)
    object_id = str(body.get("objectId") or "")
    if not object_id:
        raise validation("objectId is required")
    sim.gdpr_delete(object_id, body.get("idProperty"))
    return 204, None


BASE = "/crm/v3/objects/{object_type}"
# (path, handler, methods, uses the search bucket)
ROUTES = [
    ("/crm/v3/objects/contacts/merge", merge, ["POST"], False),
    ("/crm/v3/objects/contacts/gdpr-delete", gdpr_delete, ["POST"], False),
    (BASE + "/search", search, ["POST"], True),
    (BASE + "/batch/{action}", batch, ["POST"], False),
    (BASE, list_objects, ["GET"], False),
    (BASE, create_object, ["POST"], False),
    (BASE + "/{object_id}", get_object, ["GET"], False),
    (BASE + "/{object_id}", patch_object, ["PATCH"], False),
    (BASE + "/{object_id}", delete_object, ["DELETE"], False),
]

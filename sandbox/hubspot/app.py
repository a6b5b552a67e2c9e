"""HTTP routes of the HubSpot simulator: auth, rate limits and the CRM object endpoints.

Every route goes through :func:`endpoint`, which checks the bearer token, the URL length (414),
the rate-limit bucket (general or search), turns :class:`HubSpotError` into HubSpot's error JSON
and adds the ``X-HubSpot-RateLimit-*`` headers.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.hubspot.errors import (HubSpotError, correlation_id, error_body, error_response, int_param, not_found,
                                   validation)
from sandbox.hubspot.ratelimit import RollingLimiter

if TYPE_CHECKING:
    from sandbox.hubspot.sim import HubSpotSim
    from sandbox.hubspot.store import ObjectStore

MAX_URL = 8192
Handler = Callable[["HubSpotSim", Request], Awaitable[Response | tuple[int, Any]]]


def rate_limited(limiter: RollingLimiter, policy: str, daily_remaining: int | None = None) -> Response:
    """HubSpot's 429: errorType RATE_LIMIT and the policy that was exceeded."""
    window = {"TEN_SECONDLY_ROLLING": "ten_secondly_rolling", "SECONDLY": "secondly", "DAILY": "daily"}[policy]
    body = error_body(f"You have reached your {window} limit.", "RATE_LIMITS")
    body.pop("category")
    body.update(errorType="RATE_LIMIT", policyName=policy)
    headers = {}
    if limiter.limit is not None:
        headers = {"X-HubSpot-RateLimit-Max": str(limiter.limit), "X-HubSpot-RateLimit-Remaining": "0",
                   "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(limiter.window * 1000))}
        if limiter.daily is not None:
            headers["X-HubSpot-RateLimit-Daily"] = str(limiter.daily)
            left = limiter.daily if daily_remaining is None else daily_remaining
            headers["X-HubSpot-RateLimit-Daily-Remaining"] = "0" if policy == "DAILY" else str(max(left, 0))
    return JSONResponse(body, status_code=429, headers=headers)


def required_scopes(method: str, path: str) -> set[str]:
    """The private-app scopes a call needs (any one of them is enough); empty = none checked."""
    read = method == "GET" or path.endswith(("/search", "/batch/read"))
    parts = path.strip("/").split("/")
    if path.startswith("/crm/v3/objects/") and len(parts) > 3:
        kind = "deals" if parts[3] in ("deals", "deal", "0-3") else "contacts"
        return {f"crm.objects.{kind}.{'read' if read else 'write'}"}
    if path.startswith("/crm/v3/properties/") and len(parts) > 3:
        kind = "deals" if parts[3] in ("deals", "deal", "0-3") else "contacts"
        return {f"crm.schemas.{kind}.{'read' if read else 'write'}"}
    if path.startswith("/crm/v3/lists"):
        return {"crm.lists.read" if read else "crm.lists.write"}
    if path.startswith("/communication-preferences/"):
        return {"communication_preferences.read" if read else "communication_preferences.write",
                "communication_preferences.read_write"}
    return set()


def missing_scopes(needed: set[str]) -> JSONResponse:
    """HubSpot's 403 for a private app without the scope."""
    body = error_body("This app hasn't been granted all required scopes to make this call. Read more about required "
                      "scopes here: https://developers.hubspot.com/scopes.", "MISSING_SCOPES",
                      errors=[{"message": "One or more of the following scopes are required.",
                               "context": {"requiredGranularScopes": sorted(needed)}}])
    body["links"] = {"scopes": "https://developers.hubspot.com/scopes"}
    return JSONResponse(body, status_code=403)


def endpoint(sim: HubSpotSim, handler: Handler, search: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler with auth, URL length, rate limiting and error translation."""

    async def route(request: Request) -> Response:
        url_len = len(request.url.path) + len(request.url.query) + 1
        if url_len > MAX_URL:
            return Response("<html><body><h1>414 Request-URI Too Large</h1></body></html>", status_code=414,
                            media_type="text/html")
        auth = request.headers.get("authorization", "")
        bearer = auth[7:] if auth[:7].lower() == "bearer " else None
        if bearer is not None and bearer in sim.expired_tokens:
            return JSONResponse(error_body(
                "The OAuth token used to make this call expired 1 minute(s) ago.", "EXPIRED_AUTHENTICATION",
                context={"expired": ["1 minute(s) ago"]}), status_code=401)
        if bearer is None or not sim.token_valid(bearer):
            return JSONResponse(error_body(
                "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
                "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                "INVALID_AUTHENTICATION"), status_code=401)
        if sim.scopes is not None:
            needed = required_scopes(request.method, request.url.path)
            if needed and not needed & sim.scopes:
                return missing_scopes(needed)
        limiter = sim.search_limiter if search else sim.limiter
        decision = limiter.admit()
        if not decision.allowed:
            return rate_limited(limiter, decision.policy or limiter.policy, decision.daily_remaining)
        try:
            result = await handler(sim, request)
        except HubSpotError as exc:
            result = error_response(exc)
        except Exception as exc:  # noqa: BLE001 - a simulator bug must still answer like HubSpot, not hang up
            result = JSONResponse(error_body(f"internal error in the HubSpot sandbox: {type(exc).__name__}: {exc}",
                                             "INTERNAL_ERROR"), status_code=500)
        if isinstance(result, tuple):
            status, body = result
            result = Response(status_code=status) if body is None else JSONResponse(body, status_code=status)
        if not search:
            result.headers.update(limiter.headers(decision))
        return result

    return route


async def json_body(request: Request) -> Any:
    """The parsed JSON body, or HubSpot's 400 for malformed JSON."""
    raw = await request.body()
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        raise validation("Invalid input JSON on line 1: could not parse the request body") from None


async def json_object(request: Request) -> dict[str, Any]:
    """The parsed JSON body, which must be an object."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise validation(f"Invalid input JSON: expected an object, got {type(body).__name__}")
    return body


def store_for(sim: HubSpotSim, request: Request) -> ObjectStore:
    """The object store named by the ``object_type`` path parameter."""
    name = request.path_params["object_type"]
    store = {"contacts": sim.contacts, "contact": sim.contacts, "0-1": sim.contacts, "deals": sim.deals,
             "deal": sim.deals, "0-3": sim.deals}.get(name)
    if store is None:
        raise HubSpotError(400, f"Unable to infer object type from: {name}", "VALIDATION_ERROR")
    return store


def _csv(values: list[str]) -> list[str] | None:
    """Repeated (SDK) or comma-joined (raw) list parameters, flattened."""
    names = [x.strip() for value in values for x in value.split(",") if x.strip()]
    return names or None


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
        results = [store.serialise(r, _csv(q.getlist("properties")), _csv(q.getlist("associations"))) for r in page]
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
        return 200, store.serialise(rec, _csv(q.getlist("properties")), _csv(q.getlist("associations")))


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


def _single(outcome: tuple[int, dict], object_type: str, ref: str) -> tuple[int, Any]:
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


def build_app(sim: HubSpotSim) -> Starlette:
    """All routes, each wrapped by :func:`endpoint`."""
    from sandbox.hubspot import prefs, routes_misc

    def r(path: str, handler: Handler, methods: list[str], search_bucket: bool = False) -> Route:
        return Route(path, endpoint(sim, handler, search_bucket), methods=methods)

    base = "/crm/v3/objects/{object_type}"
    routes = [
        r("/crm/v3/objects/contacts/merge", merge, ["POST"]),
        r("/crm/v3/objects/contacts/gdpr-delete", gdpr_delete, ["POST"]),
        r(base + "/search", search, ["POST"], search_bucket=True),
        r(base + "/batch/{action}", batch, ["POST"]),
        r(base, list_objects, ["GET"]),
        r(base, create_object, ["POST"]),
        r(base + "/{object_id}", get_object, ["GET"]),
        r(base + "/{object_id}", patch_object, ["PATCH"]),
        r(base + "/{object_id}", delete_object, ["DELETE"]),
    ]
    routes += [r(path, handler, methods) for path, handler, methods in routes_misc.ROUTES + prefs.ROUTES]

    async def oauth_token(request: Request) -> Response:
        """POST /oauth/v1/token (form-encoded refresh grant); HubSpot's own error shape for bad input."""
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        problem = None
        if form.get("grant_type") != "refresh_token":
            problem = ("BAD_GRANT_TYPE", "grant_type must be refresh_token")
        elif form.get("client_id") != sim.oauth_client_id:
            problem = ("BAD_CLIENT_ID", "missing or unknown client id")
        elif form.get("client_secret") != sim.oauth_client_secret:
            problem = ("BAD_CLIENT_SECRET", "missing or invalid client secret")
        elif form.get("refresh_token") != sim.oauth_refresh_token:
            problem = ("BAD_REFRESH_TOKEN", "missing or unknown refresh token")
        if problem:
            return JSONResponse({"status": problem[0], "message": problem[1], "correlationId": correlation_id()},
                                status_code=400)
        return JSONResponse(sim.issue_token())

    routes.append(Route("/oauth/v1/token", oauth_token, methods=["POST"]))

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "contacts": len(sim.contacts.records)})

    routes.append(Route("/_sandbox/health", health))
    return Starlette(routes=routes)

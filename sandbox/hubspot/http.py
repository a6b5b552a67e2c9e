"""Leaf helpers every HubSpot route uses: auth, scopes, URL length, rate limits, JSON bodies.

Every route goes through :func:`endpoint`, which checks the bearer token, the private-app scopes, the
URL length (414), the rate-limit bucket (general or search), turns :class:`HubSpotError` into HubSpot's
error JSON and adds the ``X-HubSpot-RateLimit-*`` headers. Route modules import this module and
:mod:`sandbox.hubspot.errors`; nothing here imports a route module or the simulator at runtime, so
the package has no import circle (:mod:`sandbox.hubspot.app` assembles the routes).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.hubspot.errors import HubSpotError, error_body, error_response, validation
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
    if path.startswith("/crm/v3/pipelines/"):
        return {"crm.objects.deals.read"}  # reading deal pipelines comes with reading deals
    if path.startswith("/crm/v3/lists"):
        return {"crm.lists.read" if read else "crm.lists.write"}
    if path.startswith("/communication-preferences/v4/statuses/batch/write"):
        return {"communication_preferences.statuses.batch.write"}
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
        except Exception as exc:
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


def csv_param(values: list[str]) -> list[str] | None:
    """Repeated (SDK) or comma-joined (raw) list parameters, flattened."""
    names = [x.strip() for value in values for x in value.split(",") if x.strip()]
    return names or None



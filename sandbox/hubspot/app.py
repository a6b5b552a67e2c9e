"""The HubSpot simulator's Starlette app: every route module's routes, each wrapped by :func:`endpoint`.

Layout (leaves first, no runtime import circle): :mod:`.errors`, :mod:`.schema`, :mod:`.ratelimit` and
:mod:`.http` (auth, scopes, rate limits, JSON bodies) are helpers; :mod:`.routes_objects`,
:mod:`.routes_misc` (properties, lists, web events), :mod:`.routes_deals` (pipelines) and :mod:`.prefs`
(communication preferences) hold the handlers; this module assembles them with the OAuth token
endpoint and the sandbox's own ``/_sandbox/...`` inspection endpoints. :class:`~.sim.HubSpotSim`
holds the state and is only a type here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.hubspot import prefs, routes_deals, routes_misc, routes_objects
from sandbox.hubspot.errors import correlation_id
from sandbox.hubspot.http import Handler, endpoint

if TYPE_CHECKING:
    from sandbox.hubspot.sim import HubSpotSim


def build_app(sim: HubSpotSim) -> Starlette:
    """All routes, each wrapped by :func:`endpoint`, plus OAuth and the sandbox inspection endpoints."""

    def r(path: str, handler: Handler, methods: list[str], search_bucket: bool = False) -> Route:
        return Route(path, endpoint(sim, handler, search_bucket), methods=methods)

    routes = [r(path, handler, methods, bucket) for path, handler, methods, bucket in routes_objects.ROUTES]
    routes += [r(path, handler, methods) for path, handler, methods in
               routes_misc.ROUTES + routes_deals.ROUTES + prefs.ROUTES]

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

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "contacts": len(sim.contacts.records)})

    async def state_subscriptions(request: Request) -> Response:
        """Sandbox-only: every subscription status of one address (``?email=``), read without the API's rules."""
        email = request.query_params.get("email", "")
        with sim.lock:
            body: dict[str, Any] = {"email": email, "statuses": {s["id"]: s["status"]
                                                                  for s in prefs.statuses(sim, email)}}
        return JSONResponse(body)

    async def state_merges(request: Request) -> Response:
        """Sandbox-only: old contact id -> the id it resolves to now (merges, followed to the end)."""
        with sim.lock:
            out = {rid: sim.follow_merge(sim.contacts, rid).id  # type: ignore[union-attr]
                   for rid, rec in sim.contacts.records.items()
                   if rec.merged_into and sim.follow_merge(sim.contacts, rid) is not None}
        return JSONResponse(out)

    routes += [Route("/oauth/v1/token", oauth_token, methods=["POST"]), Route("/_sandbox/health", health),
               Route("/_sandbox/subscriptions", state_subscriptions), Route("/_sandbox/merges", state_merges)]
    return Starlette(routes=routes)

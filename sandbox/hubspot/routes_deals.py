"""Deal pipeline routes: ``GET /crm/v3/pipelines/deals`` and one pipeline or its stages by id.

Shapes follow HubSpot's Pipelines v3 spec (see :mod:`sandbox.hubspot.deals` for what it says and where).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from sandbox.hubspot.errors import HubSpotError, not_found

if TYPE_CHECKING:
    from sandbox.hubspot.sim import HubSpotSim


def _check_type(request: Request) -> None:
    if request.path_params["object_type"] not in ("deals", "deal", "0-3"):
        raise HubSpotError(400, f"Unable to infer object type from: {request.path_params['object_type']}",
                           "VALIDATION_ERROR")


async def list_pipelines(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """GET /crm/v3/pipelines/{objectType}."""
    _check_type(request)
    return 200, {"results": sim.pipelines}


def _pipeline(sim: HubSpotSim, request: Request) -> dict[str, Any]:
    _check_type(request)
    pid = request.path_params["pipeline_id"]
    found = next((p for p in sim.pipelines if p["id"] == pid), None)
    if found is None:
        raise not_found("pipeline", pid)
    return found


async def get_pipeline(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """GET /crm/v3/pipelines/{objectType}/{pipelineId}."""
    return 200, _pipeline(sim, request)


async def list_stages(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """GET /crm/v3/pipelines/{objectType}/{pipelineId}/stages."""
    return 200, {"results": _pipeline(sim, request)["stages"]}


ROUTES = [
    ("/crm/v3/pipelines/{object_type}", list_pipelines, ["GET"]),
    ("/crm/v3/pipelines/{object_type}/{pipeline_id}", get_pipeline, ["GET"]),
    ("/crm/v3/pipelines/{object_type}/{pipeline_id}/stages", list_stages, ["GET"]),
]

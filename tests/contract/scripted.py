"""A scripted vendor for the faults the simulators do not stage: a 429 with ``Retry-After``, an HTML
error page from a proxy, a 200 whose JSON is cut off. It answers ``routes`` (path -> JSON) and
plays ``faults`` in order on the ``target`` path first."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.common import ServerThread

HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
CUT_JSON = b'{"results": [{"id": "1", "properties": {"email": "a@'


class ScriptedVendor:
    """Serve on loopback until :meth:`stop`; ``faults`` are ``(status, headers, body, content type)``."""

    def __init__(self, routes: dict[str, Any], target: str,
                 faults: list[tuple[int, dict[str, str], bytes, str]]) -> None:
        self.routes, self.target, self.faults = routes, target, list(faults)
        self.hits = 0

        async def answer(request: Request) -> Response:
            path = request.url.path
            if path == self.target:
                self.hits += 1
                if self.faults:
                    status, headers, body, media = self.faults.pop(0)
                    return Response(body, status_code=status, headers=headers, media_type=media)
            if path in self.routes:
                return JSONResponse(self.routes[path])
            return JSONResponse({"message": f"no route {path}"}, status_code=404)

        app = Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])
        self.server = ServerThread(app)
        self.url = self.server.url

    def stop(self) -> None:
        self.server.stop()

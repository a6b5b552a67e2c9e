"""``POST /batches`` and friends: many operations in one call, results as a gzipped tar of JSON.

Operations run against the same audience through the same routes, so their effects are real.
They run on the first ``GET /batches/{id}`` after submission (Mailchimp answers "pending" to the
POST and "finished" later; one poll is the shortest "later"). That keeps the sandbox free of
background tasks and makes tests deterministic; a client that never polls never sees effects.

Limits: at most ``max_operations`` (default 10,000) operations per batch - Mailchimp documents no
count, only a payload-size cap, so this is the sandbox's own guard - else 400 "Invalid Resource".
Results are served without authentication at ``/3.0/_sandbox/batch-results/{id}.tar.gz``, the
way Mailchimp's ``response_body_url`` is a pre-signed storage link. Each JSON file in the archive
holds ``[{status_code, operation_id, response}]`` where ``response`` is the body as a JSON *string*,
as at Mailchimp.
"""

from __future__ import annotations

import io
import json
import secrets
import tarfile
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message

from sandbox.mailchimp.problems import fmt_time, invalid, not_found
from sandbox.mailchimp.state import ListState
from sandbox.mailchimp.views import endpoint, ok, page, paging, read_json

RESULTS_PER_FILE = 500
DEFAULT_MAX_OPERATIONS = 10_000


@dataclass
class BatchJob:
    """One submitted batch and, once run, its per-operation results."""

    id: str
    operations: list[dict[str, Any]]
    submitted_at: datetime
    status: str = "pending"
    completed_at: datetime | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def errored(self) -> int:
        return sum(1 for r in self.results if r["status_code"] >= 400)


async def call_internal(app: ASGIApp, method: str, path: str, params: dict[str, Any] | None,
                        body: bytes) -> tuple[int, str]:
    """Run one request through ``app`` in-process (no auth, no connection limit) -> (status, body text)."""
    if path.startswith("/3.0/"):
        path = path[4:]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method.upper(),
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": urlencode(params or {}, doseq=True).encode(),
        "headers": [(b"content-type", b"application/json")], "server": ("sandbox", 80), "client": None,
    }
    sent = False
    status = 500
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks).decode()


class BatchRunner:
    """Holds the jobs of one simulator and serves the ``/batches`` routes."""

    def __init__(self, state: ListState, max_operations: int = DEFAULT_MAX_OPERATIONS) -> None:
        self.state = state
        self.max_operations = max_operations
        self.jobs: dict[str, BatchJob] = {}
        self.target: ASGIApp | None = None  # the API router; set by the simulator once built

    def submit(self, operations: Any) -> BatchJob:
        """Validate and store a batch; nothing runs yet."""
        if not isinstance(operations, list) or not operations:
            raise invalid("The resource submitted could not be validated.",
                          [{"field": "operations", "message": "This value should not be blank."}])
        if len(operations) > self.max_operations:
            raise invalid(f"A batch may hold at most {self.max_operations} operations (sandbox limit); "
                          f"{len(operations)} were sent. Split the work into several batches.")
        for i, op in enumerate(operations):
            if not isinstance(op, dict) or op.get("method", "").upper() not in ("GET", "POST", "PUT", "PATCH", "DELETE") \
                    or not str(op.get("path", "")).startswith("/"):
                raise invalid(f"Operation {i} needs a method (GET, POST, PUT, PATCH, DELETE) and an absolute path.")
        job = BatchJob(secrets.token_hex(5), operations, self.state.stamp())
        self.jobs[job.id] = job
        return job

    async def run(self, job: BatchJob) -> None:
        """Execute every operation once, in order, recording Mailchimp-style results."""
        if job.status != "pending" or self.target is None:
            return  # already run, or running for a concurrent poll
        job.status = "started"
        for op in job.operations:
            body = op.get("body") or b""
            if isinstance(body, dict | list):
                body = json.dumps(body)
            raw = body.encode() if isinstance(body, str) else body
            status, text = await call_internal(self.target, op["method"], op["path"], op.get("params"), raw)
            job.results.append({"status_code": status, "operation_id": op.get("operation_id"), "response": text})
        job.status = "finished"
        job.completed_at = self.state.stamp()

    def job_json(self, job: BatchJob, api_root: str) -> dict[str, Any]:
        done = job.status == "finished"
        return {
            "id": job.id,
            "status": job.status,
            "total_operations": len(job.operations),
            "finished_operations": len(job.results),
            "errored_operations": job.errored,
            "submitted_at": fmt_time(job.submitted_at),
            "completed_at": fmt_time(job.completed_at),
            "response_body_url": f"{api_root}/_sandbox/batch-results/{job.id}.tar.gz" if done else "",
        }

    def tarball(self, job: BatchJob) -> bytes:
        """The results archive: ``{id}/{n}.json`` files of up to 500 results each."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            chunks = [job.results[i : i + RESULTS_PER_FILE] for i in range(0, len(job.results), RESULTS_PER_FILE)]
            for n, chunk in enumerate(chunks):
                data = json.dumps(chunk).encode()
                info = tarfile.TarInfo(f"{job.id}/{n}.json")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    def routes(self) -> list[Route]:
        """``/batches``, ``/batches/{id}`` and the results download."""

        def job_for(request: Request) -> BatchJob:
            job = self.jobs.get(request.path_params["batch_id"])
            if job is None:
                raise not_found(f"The requested batch was not found: {request.path_params['batch_id']}.")
            return job

        @endpoint
        async def batches(request: Request) -> Response:
            if request.method == "POST":
                body = await read_json(request)
                with self.state.lock:
                    job = self.submit(body.get("operations"))
                return ok(request, self.job_json(job, _api_root(request)))
            count, offset = paging(request)
            jobs = list(self.jobs.values())
            return ok(request, {"batches": [self.job_json(j, _api_root(request)) for j in page(jobs, count, offset)],
                                "total_items": len(jobs)})

        @endpoint
        async def batch(request: Request) -> Response:
            job = job_for(request)
            if request.method == "DELETE":
                del self.jobs[job.id]
                return Response(status_code=204)
            await self.run(job)
            return ok(request, self.job_json(job, _api_root(request)))

        @endpoint
        async def results(request: Request) -> Response:
            job = job_for(request)
            if job.status != "finished":
                raise not_found("The batch has not finished yet.")
            return Response(self.tarball(job), media_type="application/x-gzip")

        return [
            Route("/batches", batches, methods=["GET", "POST"]),
            Route("/batches/{batch_id}", batch, methods=["GET", "DELETE"]),
            Route("/_sandbox/batch-results/{batch_id}.tar.gz", results, methods=["GET"]),
        ]


def _api_root(request: Request) -> str:
    """``http://host:port/3.0`` as the client reached us, for absolute result URLs."""
    url = str(request.url)
    cut = url.find("/3.0/")
    return url[: cut + 4] if cut >= 0 else str(request.base_url).rstrip("/")

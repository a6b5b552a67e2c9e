"""``POST /batches`` and friends: many operations in one call, results as a gzipped tar of JSON.

Operations run against the same audience through the same routes, so their effects are real.
Mailchimp answers "pending" to the POST and "finished" some time later. Here the operations run on
the first ``GET /batches/{id}`` (status "started"), and the job reports "finished" with its
``response_body_url`` from poll number ``polls_to_finish`` on (default 2, so a client must really
poll; 1 finishes on the first poll). That keeps the sandbox free of background tasks and makes
tests deterministic; a client that never polls never sees effects.

Limits: at most ``max_operations`` (default 10,000) operations per batch - Mailchimp documents no
count, only a payload-size cap, so this is the sandbox's own guard - else 400 "Invalid Resource".
Results are served without authentication at ``/_sandbox/mailchimp/batch-results/{id}.tar.gz`` (outside
the API root, so the call log and fault injection leave them alone), the way Mailchimp's
``response_body_url`` is a pre-signed storage link rather than an API call. Each JSON file in the archive
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

from sandbox.mailchimp.problems import fmt_time, invalid, not_found, problem_body
from sandbox.mailchimp.state import ListState
from sandbox.mailchimp.views import endpoint, ok, page, paging, read_json

RESULTS_PER_FILE = 500
RESULTS_PATH = "/_sandbox/mailchimp/batch-results"
DEFAULT_MAX_OPERATIONS = 10_000
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass
class BatchJob:
    """One submitted batch and, once run, its per-operation results."""

    id: str
    operations: list[dict[str, Any]]
    submitted_at: datetime
    status: str = "pending"
    completed_at: datetime | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    polls: int = 0

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

    def __init__(self, state: ListState, max_operations: int = DEFAULT_MAX_OPERATIONS,
                 polls_to_finish: int = 2) -> None:
        self.state = state
        self.max_operations = max_operations
        self.polls_to_finish = max(1, polls_to_finish)
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
            if not isinstance(op, dict) or str(op.get("method", "")).upper() not in _METHODS \
                    or not str(op.get("path", "")).startswith("/"):
                raise invalid(f"Operation {i} needs a method (GET, POST, PUT, PATCH, DELETE) and an absolute path.")
            if op.get("params") is not None and not isinstance(op["params"], dict):
                raise invalid(f"Operation {i}: params must be an object of query parameters.")
            if op.get("body") is not None and not isinstance(op["body"], str | dict | list):
                raise invalid(f"Operation {i}: body must be a JSON string.")
        job = BatchJob(secrets.token_hex(5), operations, self.state.stamp())
        self.jobs[job.id] = job
        return job

    async def poll(self, job: BatchJob) -> None:
        """One ``GET /batches/{id}``: run the operations on the first, finish on the ``polls_to_finish``-th."""
        job.polls += 1
        await self.run(job)
        if job.status == "started" and job.polls >= self.polls_to_finish and len(job.results) == len(job.operations):
            job.status = "finished"
            job.completed_at = self.state.stamp()

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
            try:
                status, text = await call_internal(self.target, op["method"], op["path"], op.get("params"), raw)
            except Exception as exc:
                status, text = 500, json.dumps(problem_body(500, "Internal Server Error",
                                                            f"The operation failed: {type(exc).__name__}."))
            job.results.append({"status_code": status, "operation_id": op.get("operation_id"), "response": text})

    def job_json(self, job: BatchJob, origin: str) -> dict[str, Any]:
        done = job.status == "finished"
        return {
            "id": job.id,
            "status": job.status,
            "total_operations": len(job.operations),
            "finished_operations": len(job.results),
            "errored_operations": job.errored,
            "submitted_at": fmt_time(job.submitted_at),
            "completed_at": fmt_time(job.completed_at),
            "response_body_url": f"{origin}{RESULTS_PATH}/{job.id}.tar.gz" if done else "",
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

    def results_route(self) -> Route:
        """The results download, mounted beside (not under) the API root and needing no key."""

        @endpoint
        async def results(request: Request) -> Response:
            job = self.jobs.get(request.path_params["batch_id"])
            if job is None or job.status != "finished":
                raise not_found()
            return Response(self.tarball(job), media_type="application/x-gzip")

        return Route(RESULTS_PATH + "/{batch_id}.tar.gz", results, methods=["GET"])

    def routes(self) -> list[Route]:
        """``/batches`` and ``/batches/{id}`` (relative to the API root)."""

        def job_for(request: Request) -> BatchJob:
            job = self.jobs.get(request.path_params["batch_id"])
            if job is None:
                raise not_found()
            return job

        @endpoint
        async def batches(request: Request) -> Response:
            if request.method == "POST":
                body = await read_json(request)
                with self.state.lock:
                    job = self.submit(body.get("operations"))
                return ok(request, self.job_json(job, _origin(request)))
            count, offset = paging(request)
            jobs = list(self.jobs.values())
            return ok(request, {"batches": [self.job_json(j, _origin(request)) for j in page(jobs, count, offset)],
                                "total_items": len(jobs)})

        @endpoint
        async def batch(request: Request) -> Response:
            job = job_for(request)
            if request.method == "DELETE":
                del self.jobs[job.id]
                return Response(status_code=204)
            await self.poll(job)
            return ok(request, self.job_json(job, _origin(request)))

        return [
            Route("/batches", batches, methods=["GET", "POST"]),
            Route("/batches/{batch_id}", batch, methods=["GET", "DELETE"]),
        ]


def _origin(request: Request) -> str:
    """``http://host:port`` as the client reached us, for absolute result URLs."""
    return f"{request.url.scheme}://{request.url.netloc}"

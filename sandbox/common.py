"""What every simulated vendor shares: the call log, fault injection, and a server thread.

:func:`instrument` wraps a vendor's ASGI app. It records every call in a :class:`CallLog` (so
tests can assert "zero writes on a re-run") and applies the :class:`Faults` that a test switched
on at run time (5xx, 429 storms, slow or hung responses, connections cut mid-response).
Paths under ``CONTROL_PREFIX`` belong to the sandbox itself and are never faulted or logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTROL_PREFIX = "/_sandbox"
# POST endpoints that only read (HubSpot search and batch reads) or only mint a token.
READ_ONLY_POSTS = ("/search", "/batch/read", "/unsubscribe-all/read", "/oauth/v1/token")


@dataclass
class Call:
    """One HTTP request a vendor simulator answered."""

    vendor: str
    method: str
    path: str
    query: dict[str, Any]
    status: int
    inputs: int  # records in the body (see :func:`count_inputs`)
    body: Any
    at: float


def count_inputs(method: str, body: Any) -> int:
    """How many records a request carries, so tests can count records as well as calls."""
    if isinstance(body, list):
        return len(body)
    if isinstance(body, dict):
        for key in ("inputs", "members", "operations"):
            if isinstance(body.get(key), list):
                return len(body[key])
        if "members_to_add" in body or "members_to_remove" in body:
            return sum(len(v) for v in (body.get("members_to_add"), body.get("members_to_remove"))
                       if isinstance(v, list))
    return 0 if method == "GET" else 1


class CallLog:
    """Thread-safe record of calls across vendors."""

    def __init__(self) -> None:
        self._calls: list[Call] = []
        self._lock = threading.Lock()

    def add(self, call: Call) -> None:
        """Append one call."""
        with self._lock:
            self._calls.append(call)

    @property
    def calls(self) -> list[Call]:
        """A snapshot copy (safe to iterate while servers keep answering)."""
        with self._lock:
            return list(self._calls)

    def clear(self) -> None:
        """Forget every call so far."""
        with self._lock:
            self._calls.clear()

    def count(self, vendor: str | None = None, method: str | None = None, path_prefix: str | None = None,
              status: int | None = None) -> int:
        """Calls matching every given criterion."""
        return sum(
            1 for c in self.calls
            if (vendor is None or c.vendor == vendor) and (method is None or c.method == method)
            and (path_prefix is None or c.path.startswith(path_prefix)) and (status is None or c.status == status)
        )

    def writes(self, vendor: str | None = None) -> list[Call]:
        """Calls that can change vendor data, optionally for one vendor.

        That is every POST/PUT/PATCH/DELETE except the reads HubSpot makes you send as POST (search,
        batch read) and the OAuth token exchange, so "a re-run makes zero writes" can be asserted directly.
        """
        return [c for c in self.calls if c.method not in ("GET", "HEAD") and not c.path.endswith(READ_ONLY_POSTS)
                and (vendor is None or c.vendor == vendor)]

    def by_endpoint(self, vendor: str | None = None) -> Counter[str]:
        """Counter of "METHOD path" for one vendor (or all)."""
        return Counter(f"{c.method} {c.path}" for c in self.calls if vendor is None or c.vendor == vendor)


@dataclass
class Faults:
    """Fault injection switches; change them while the server runs (thread-safe)."""

    error_rate: float = 0.0
    error_status: int = 503
    storm: int = 0  # the next N requests get the vendor's 429
    delay: float = 0.0  # seconds added to every response
    hang_next: int = 0  # the next N requests sleep ``hang_seconds`` first
    hang_seconds: float = 30.0
    reset_next: int = 0  # the next N requests have their connection cut mid-response
    only_paths: tuple[str, ...] = ()  # apply faults only to paths with one of these prefixes
    seed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _rng: random.Random | None = field(default=None, repr=False, compare=False)

    def set(self, **changes: Any) -> None:
        """Change several switches at once, atomically."""
        with self._lock:
            for name, value in changes.items():
                if name.startswith("_") or not hasattr(self, name):
                    raise AttributeError(f"Faults has no switch {name!r}")
                setattr(self, name, value)
            if "seed" in changes:
                self._rng = None

    def reset(self) -> None:
        """Switch every fault off."""
        self.set(error_rate=0.0, storm=0, delay=0.0, hang_next=0, reset_next=0, only_paths=())

    def decide(self, path: str) -> dict[str, Any]:
        """Consume the counters for one request and say which faults hit it."""
        with self._lock:
            plan: dict[str, Any] = {"delay": self.delay, "hang": 0.0, "storm": False, "error": 0, "reset": False}
            if self.only_paths and not path.startswith(tuple(self.only_paths)):
                plan["delay"] = 0.0
                return plan
            if self._rng is None:
                self._rng = random.Random(self.seed)  # deterministic sequence per seed
            if self.hang_next > 0:
                self.hang_next -= 1
                plan["hang"] = self.hang_seconds
            if self.storm > 0:
                self.storm -= 1
                plan["storm"] = True
            elif self.error_rate > 0 and self._rng.random() < self.error_rate:
                plan["error"] = self.error_status
            if self.reset_next > 0:
                self.reset_next -= 1
                plan["reset"] = True
            return plan


class _ConnectionCut(Exception):
    """Raised after the response has started so uvicorn drops the connection."""


def _parse_body(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    if "application/x-www-form-urlencoded" in content_type:
        return {k: v[0] if len(v) == 1 else v for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _as_response(made: Any) -> Response:
    """Accept a Response or a (status, headers, body) tuple from a vendor's 429 callback."""
    if isinstance(made, Response):
        return made
    status, headers, body = made
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return Response(content, status_code=status, headers=dict(headers or {}),
                    media_type=None if "content-type" in {k.lower() for k in headers or {}} else "application/json")


def instrument(app: ASGIApp, vendor: str, log: CallLog, faults: Faults,
               rate_limited_response: Callable[[], Response],
               server_error_response: Callable[[int], Response] | None = None) -> ASGIApp:
    """Wrap ``app``: record each call in ``log`` and apply ``faults`` (never on control paths).

    ``server_error_response(status)`` builds the vendor's own 5xx body for injected errors.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:  # buffer the body once so we can both log it and replay it
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = _parse_body(raw, headers.get("content-type", ""))
        query = {k: v[0] if len(v) == 1 else v for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
        method, path = scope["method"], scope["path"]
        status_seen = {"status": 0}
        plan = faults.decide(path)

        async def replay() -> Message:
            nonlocal raw
            chunk, raw = raw, b""
            return {"type": "http.request", "body": chunk, "more_body": False}

        logged = {"done": False}

        def record() -> None:
            if not logged["done"]:
                logged["done"] = True
                try:
                    inputs = count_inputs(method, body)
                except Exception:
                    inputs = -1
                log.add(Call(vendor, method, path, query, status_seen["status"], inputs, body, time.time()))

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen["status"] = message["status"]
            if plan["reset"] and message["type"] == "http.response.body":
                # Half a body, then drop the connection: the client sees a broken response.
                record()
                await send({"type": "http.response.body", "body": message.get("body", b"")[:10], "more_body": True})
                raise _ConnectionCut
            if message["type"] == "http.response.body" and not message.get("more_body"):
                record()  # before the client can see the end of the response, so tests never race the log
            await send(message)

        try:
            if plan["hang"]:
                await asyncio.sleep(plan["hang"])
            if plan["delay"]:
                await asyncio.sleep(plan["delay"])
            if plan["storm"]:
                await _as_response(rate_limited_response())(scope, replay, recording_send)
            elif plan["error"]:
                error = (server_error_response(plan["error"]) if server_error_response is not None else
                         Response(json.dumps({"status": "error", "message": "Simulated server error"}),
                                  status_code=plan["error"], media_type="application/json"))
                await error(scope, replay, recording_send)
            else:
                await app(scope, replay, recording_send)
        finally:
            record()

    return middleware


class _Server(uvicorn.Server):
    """uvicorn's server, woken by :meth:`wake` instead of only at its next 0.1 s tick.

    A test suite starts and stops hundreds of sandboxes; each stop used to wait out the tick of every
    server in turn. The tick still runs every 0.1 s (it refreshes the Date header and checks ``should_exit``).
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    def wake(self) -> None:
        """From any thread: let the loop see ``should_exit`` now (a no-op once the loop is gone)."""
        loop, event = self._loop, self._wake
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the server is down already
                loop.call_soon_threadsafe(event.set)


class ServerThread:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        # proto=IPPROTO_TCP lets asyncio switch Nagle off on accepted sockets (it checks the proto), and
        # TCP_NODELAY here is inherited by them on Linux: otherwise every response waits ~40 ms for a delayed ACK.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.bind((host, port))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="off",
                                ws="none", timeout_graceful_shutdown=1, timeout_keep_alive=30)
        self._server = _Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=f"sandbox-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"sandbox server on port {self.port} did not start")
            time.sleep(0.01)

    def request_stop(self) -> None:
        """Ask uvicorn to exit without waiting: stopping several servers, ask them all, then :meth:`stop` each,
        so their graceful shutdowns overlap."""
        self._server.should_exit = True
        self._server.wake()

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread (hung requests are cut after ~1 s)."""
        self.request_stop()
        self._thread.join(timeout=10)
        self._sock.close()

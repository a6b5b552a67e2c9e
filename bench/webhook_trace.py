"""Where a webhook request's latency goes: per-request timestamps on both sides of the socket.

``bench_webhook.py --trace FILE`` installs :func:`instrument` in the server process and has the load
generator tag every request with ``X-Bench-I`` and keep its own send / answer times. All times are
``time.monotonic()`` (one clock for both processes on one machine), so a request's latency splits into:

* ``to_server``  client wrote the request -> the server's app was called (TCP, the server's event loop
  busy with other work, HTTP parsing);
* ``on_loop``    app called -> queued for the writer (body read, signature, JSON parse);
* ``queued``     queued -> the writer took it (the previous group's commit, the batching window);
* ``write``      taken -> its group's transaction returned (statements + commit + fsync);
* ``to_answer``  commit returned -> the app sent the answer (the wake-up of the loop, the loop busy);
* ``to_client``  answer sent -> the client read it (the client's own event loop busy, TCP).

It also records every garbage-collector pass (generation, duration) and the server loop's lag (a 5 ms
sleep that overslept). :func:`report` prints the share of each part for all requests and for the slowest 1 %.
Bench-only: nothing here runs in ``segsync serve``.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import statistics
import time
from pathlib import Path
from typing import Any

PARTS = ("to_server", "on_loop", "queued", "write", "to_answer", "to_client")
_current: contextvars.ContextVar[int] = contextvars.ContextVar("bench_request", default=-1)


class ServerTrace:
    """The server side's timestamps, written to a JSON file when the server is asked for ``/_trace``."""

    def __init__(self) -> None:
        self.requests: dict[int, dict[str, float]] = {}
        self.groups: list[tuple[float, float, int]] = []  # taken, written, size
        self.gcs: list[tuple[float, float, int, float]] = []  # start, duration, generation, CPU time of it
        self.lags: list[tuple[float, float]] = []  # when, how late a 5 ms sleep woke
        self.sql: dict[str, list[float]] = {}  # statement kind -> durations (s), "commit" included
        self.commit_at: list[float] = []  # when each COMMIT (its duration: sql["COMMIT"]) started
        self._sql_start = 0.0
        self._gc_start = self._gc_cpu = 0.0
        self._by_item: dict[int, int] = {}
        self._lag_task: asyncio.Task[None] | None = None

    def dump(self, path: Path) -> None:
        heap = {"frozen": gc.get_freeze_count(), **{f"gen{g}": len(gc.get_objects(g)) for g in (0, 1, 2)}}
        path.write_text(json.dumps({"requests": self.requests, "groups": self.groups, "gcs": self.gcs,
                                    "lags": self.lags, "sql": self.sql, "commit_at": self.commit_at,
                                    "heap": heap}))

    def _sql_begin(self, *_args: Any) -> None:
        self._sql_start = time.monotonic()

    def _sql_end(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        kind = " ".join(statement.split()[:3])[:40]
        self.sql.setdefault(kind, []).append(time.monotonic() - self._sql_start)

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start, self._gc_cpu = time.monotonic(), time.thread_time()
        else:
            self.gcs.append((self._gc_start, time.monotonic() - self._gc_start, int(info["generation"]),
                             time.thread_time() - self._gc_cpu))

    async def _lag(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.005)
            late = time.monotonic() - before - 0.005
            if late > 0.002:
                self.lags.append((before, late))


def instrument(app: Any, writer: Any, engine: Any, pipelined: Any = None) -> tuple[Any, ServerTrace]:
    """Wrap ``app`` (ASGI) and ``writer`` (the GroupWriter) so they record timestamps, and time each
    statement and commit on ``engine``; the wrapped app."""
    import sqlalchemy as sa

    trace = ServerTrace()
    gc.callbacks.append(trace._gc)
    sa.event.listen(engine, "before_cursor_execute", trace._sql_begin)
    sa.event.listen(engine, "after_cursor_execute", trace._sql_end)
    commits: list[float] = trace.sql.setdefault("COMMIT", [])

    def time_commits(db: Any) -> Any:
        """Wrap a DBAPI connection's commit (once) so each one's duration lands in ``commits``."""
        if not getattr(db, "_bench_timed", False):
            plain = db.commit

            def timed() -> None:
                started = time.monotonic()
                plain()
                commits.append(time.monotonic() - started)
                trace.commit_at.append(started)

            db.commit, db._bench_timed = timed, True
        return db

    if pipelined is not None:  # PostgreSQL's pipelined write: time its COMMIT (the second round trip, fsync)
        connection = pipelined._connection
        pipelined._connection = lambda: time_commits(connection())

    @sa.event.listens_for(engine, "commit")
    def _commit(conn: Any) -> None:  # before the DBAPI commit: time it by wrapping the DBAPI connection
        time_commits(conn.connection.dbapi_connection)

    submit, take, write = writer.submit, writer._take, writer._write

    def traced_submit(item: Any) -> Any:
        i = _current.get()
        if i >= 0:
            trace.requests[i]["queued"] = time.monotonic()
            trace._by_item[id(item)] = i
        return submit(item)

    def traced_take() -> Any:
        batch = take()
        now = time.monotonic()
        for entry in batch:
            i = trace._by_item.pop(id(entry[0]), -1)
            if i >= 0:
                trace.requests[i]["taken"] = now
                trace.requests[i]["group"] = len(trace.groups)
        trace.groups.append((now, 0.0, len(batch)))
        return batch

    def traced_write(items: Any) -> Any:
        try:
            return write(items)
        finally:
            taken, _, size = trace.groups[-1]
            trace.groups[-1] = (taken, time.monotonic(), size)

    writer.submit, writer._take, writer._write = traced_submit, traced_take, traced_write

    async def traced(scope: Any, receive: Any, send: Any) -> None:
        if trace._lag_task is None:
            trace._lag_task = asyncio.get_running_loop().create_task(trace._lag())
        headers = scope.get("headers", ()) if scope["type"] == "http" else ()
        i = next((int(v) for k, v in headers if k == b"x-bench-i"), -1)
        if i < 0:
            await app(scope, receive, send)
            return
        trace.requests[i] = {"in": time.monotonic()}
        _current.set(i)

        async def traced_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                trace.requests[i]["out"] = time.monotonic()
            await send(message)

        await app(scope, receive, traced_send)

    return traced, trace


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else 0.0


def report(server_file: Path, client: dict[int, tuple[float, float]]) -> dict[str, Any]:
    """Join the server's trace with the client's (request -> (sent, answered)); print and return the breakdown."""
    data = json.loads(server_file.read_text())
    groups = data["groups"]
    rows: list[dict[str, float]] = []
    for key, s in data["requests"].items():
        i = int(key)
        if i not in client or not {"queued", "taken", "out"} <= s.keys():
            continue
        sent, answered = client[i]
        written = groups[int(s["group"])][1]
        rows.append({"total": answered - sent, "to_server": s["in"] - sent, "on_loop": s["queued"] - s["in"],
                     "queued": s["taken"] - s["queued"], "write": written - s["taken"],
                     "to_answer": s["out"] - written, "to_client": answered - s["out"]})
    rows.sort(key=lambda r: r["total"])
    slow = rows[int(len(rows) * 0.99):]
    out: dict[str, Any] = {"requests": len(rows)}
    print(f"{'part (ms)':<10} {'p50':>7} {'p99':>7} {'mean':>7} {'mean of slowest 1%':>19}")
    for part in ("total", *PARTS):
        values = [r[part] * 1000 for r in rows]
        slow_mean = statistics.fmean(r[part] * 1000 for r in slow) if slow else 0.0
        out[part] = {"p50": round(_pct(values, 0.5), 2), "p99": round(_pct(values, 0.99), 2),
                     "mean": round(statistics.fmean(values), 2), "slow_mean": round(slow_mean, 2)}
        row = out[part]
        print(f"{part:<10} {row['p50']:>7} {row['p99']:>7} {row['mean']:>7} {row['slow_mean']:>19}")
    writes = [(g[1] - g[0]) * 1000 for g in groups if g[1]]
    sizes = [g[2] for g in groups]
    gcs = data["gcs"]
    lags = [lag * 1000 for _, lag in data["lags"]]
    out["groups"] = {"count": len(groups), "write_p50_ms": round(_pct(writes, 0.5), 2),
                     "write_p99_ms": round(_pct(writes, 0.99), 2), "size_mean": round(statistics.fmean(sizes), 1)
                     if sizes else 0, "size_max": max(sizes, default=0)}
    out["gc"] = {gen: {"count": sum(1 for g in gcs if g[2] == gen),
                       "max_ms": round(max((g[1] * 1000 for g in gcs if g[2] == gen), default=0.0), 2),
                       "total_ms": round(sum(g[1] * 1000 for g in gcs if g[2] == gen), 1),
                       # CPU the collecting thread spent in them: far below total_ms = it was descheduled meanwhile
                       "cpu_ms": round(sum(g[3] * 1000 for g in gcs if g[2] == gen), 1)} for gen in (0, 1, 2)}
    out["loop_lag"] = {"over_2ms": len(lags), "over_20ms": sum(1 for lag in lags if lag > 20),
                       "max_ms": round(max(lags, default=0.0), 1), "total_ms": round(sum(lags), 1)}
    print(f"groups: {out['groups']}")
    out["heap"] = data["heap"]
    print(f"gc: {out['gc']}; objects tracked by the collector: {data['heap']}")
    print(f"server loop lag (a 5 ms sleep late by > 2 ms): {out['loop_lag']}")
    out["sql"] = {}
    for kind, durations in data["sql"].items():
        ms = [d * 1000 for d in durations]
        out["sql"][kind] = {"count": len(ms), "p50_ms": round(_pct(ms, 0.5), 2), "p99_ms": round(_pct(ms, 0.99), 2),
                            "mean_ms": round(statistics.fmean(ms), 2) if ms else 0.0}
        print(f"sql {kind!r}: {out['sql'][kind]}")
    return out


__all__ = ["PARTS", "ServerTrace", "instrument", "report"]

"""The preference-center webhook under a steady offered load: p50 / p99 latency, errors, 429s, ledger count = sent.

    .venv/bin/python bench/bench_webhook.py [--rates 50,100,200,400] [--seconds 30] [--store postgres|sqlite]

The webhook app (``consent.webhook.create_app``, the same app ``segsync serve`` mounts) runs under
uvicorn in a process of its own over a fresh store (PostgreSQL: a schema of its own, dropped
afterwards). This process is an open-loop load generator (asyncio streams, keep-alive connections,
requests signed before the clock starts): request i is sent at
``i / rate`` seconds whether or not earlier ones were answered, so a slow server shows up as latency
instead of as a lower offered rate. Every request is a signed preference-center body for a new
person, 20 % of them opt-outs (the rest grant profiling and email marketing).

Per rate: requests sent, answered 200, 429 (load shed, with Retry-After), other errors, p50 / p99 /
max latency of all answers, the events and receipts in the ledger afterwards (receipts must equal
the 200s: every accepted request is in the ledger, once), the group commits, the SQL statements per
commit, the server process's CPU time per answered request (less sensitive to a shared machine than
the latencies), the client's own CPU per request and how late it sent (p99: it shares the cores), the
checkpoint sync time PostgreSQL spent during the rate (a checkpoint stalls every commit) and whether the
chain verifies. ``--trace FILE`` splits each request's latency into its parts (``bench/webhook_trace.py``).
Nothing is asserted; the machine is shared, so read the latencies with that in mind.
Writes bench/out/bench_webhook.json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECRET = "bench-webhook-secret-0123456789"
POLICY = {"email_marketing": "consent", "profiling": "legitimate_interest"}
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def key_for(tenant: str) -> bytes:
    return f"bench-pseudonym-key-{tenant}".encode()


def serve(url: str, port: int, args: argparse.Namespace) -> None:
    """The server process: the webhook app over ``url`` on 127.0.0.1:``port``."""
    import uvicorn

    from connectors.registry import webhook_handlers
    from consent.ledger import Ledger
    from consent.outbox import Outbox
    from consent.webhook import TenantHooks, create_app
    from core.heap import freeze_startup_heap
    from sync.store import open_store

    store = open_store(url)
    statements = [0]  # every statement the server sends (BEGIN and COMMIT are not statements here)

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def count(*_args: Any) -> None:
        statements[0] += 1

    ledger = Ledger(store.engine, key_for)
    outbox = Outbox(store.engine, mac_key=ledger.chain_key)
    app = create_app({"bench": TenantHooks(SECRET, POLICY)}, ledger, outbox, vendors=webhook_handlers())
    if args.window is not None:
        app.state.writer.window = args.window / 1000

    async def stats(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/_stats":
            writer = app.state.writer
            # PostgreSQL's pipelined write sends its statements past SQLAlchemy: counted by itself
            pipelined = getattr(app.state, "pipelined", None)
            piped = pipelined.statements if pipelined is not None else 0
            body = json.dumps({"groups": writer.groups, "items": writer.items, "statements": statements[0] + piped,
                               "cpu_s": time.process_time()}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    served: Any = stats
    if args.trace is not None:  # per-request timestamps (bench/webhook_trace.py), written on GET /_trace
        from bench.webhook_trace import instrument

        traced, trace = instrument(stats, app.state.writer, store.engine,
                                   getattr(app.state, "pipelined", None))

        async def served(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"] == "/_trace":
                trace.dump(args.trace)
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
            await traced(scope, receive, send)

    app.state.warm_up()  # as `segsync serve` does before serving
    freeze_startup_heap()  # as `segsync serve` does once started (core.heap)
    uvicorn.run(served, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off",
                loop=args.loop, http=args.http)


def body_for(i: int, run: str) -> tuple[bytes, dict[str, str]]:
    optout = i % 5 == 0
    doc = {"email": f"{run}-{i}@example.com",
           "purposes": {"email_marketing": not optout, "profiling": not optout},
           "occurred_at": "2026-11-25T18:00:00Z", "notice_version": "privacy-2026-03"}
    body = json.dumps(doc).encode()
    stamp = str(int(time.time()))
    sig = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-Segsync-Timestamp": stamp,
                  "X-Segsync-Signature": f"sha256={sig}"}


class _Pool:
    """Keep-alive HTTP/1.1 connections to one host (asyncio streams): the load generator's client.

    Requests are pre-built bytes, so the generator spends almost nothing per request and its own
    overhead does not show up as server latency (an httpx AsyncClient could not offer 200 requests
    per second here without queueing them itself)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0

    async def send(self, raw: bytes) -> int:
        """The answer's status; 0 when the connection failed. A kept-alive connection the server has
        closed meanwhile (its idle timeout) is replaced and the request sent again: it was never read."""
        reused = bool(self.idle)
        status = await self._send(raw, self.idle.pop() if reused else None)
        if status == -1:
            status = await self._send(raw, None) if reused else 0
        return max(status, 0)

    async def _send(self, raw: bytes, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> int:
        try:
            if conn is None:
                conn = await asyncio.open_connection(self.host, self.port)
                self.opened += 1
        except OSError:
            return 0
        reader, writer = conn
        status: int | None = None
        try:
            writer.write(raw)
            first = await reader.readline()
            if not first:
                writer.close()
                return -1  # closed before answering
            status = int(first.split()[1])
            length, keep = 0, True
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "connection" and value.strip().lower() == "close":
                    keep = False
            await reader.readexactly(length)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            writer.close()
            return -1 if status is None else 0  # -1: nothing was answered
        if keep:
            self.idle.append((reader, writer))
        else:
            writer.close()
        return status

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


def raw_request(port: int, body: bytes, headers: dict[str, str], i: int) -> bytes:
    """The request's bytes; ``X-Bench-I`` names it for the server's trace (ignored by the webhook)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (f"POST /hooks/bench/preferences HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Bench-I: {i}\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def offer(port: int, rate: int, seconds: float, run: str, first: int = 0,
                times: dict[int, tuple[float, float]] | None = None) -> dict[str, Any]:
    """Offer ``rate`` requests/s for ``seconds``; ``times`` (when given) gets each request's (sent, answered)
    on the monotonic clock, keyed by its ``X-Bench-I`` number (``first`` onwards)."""
    total = int(rate * seconds)
    requests = [raw_request(port, *body_for(i, run), first + i) for i in range(total)]  # signed up front
    latencies: list[float] = []
    codes: dict[int, int] = {}
    pool = _Pool("127.0.0.1", port)

    late: list[float] = []  # how long after its planned moment each request was sent (the client's own delay)
    from_plan: list[float] = []  # planned moment -> answer: the latency with the client's delay counted in

    async def one(i: int, raw: bytes) -> None:
        started = time.monotonic()
        code = await pool.send(raw)
        answered = time.monotonic()
        latencies.append(answered - started)
        late.append(started - (start + i / rate))
        from_plan.append(answered - (start + i / rate))
        codes[code] = codes.get(code, 0) + 1
        if times is not None:
            times[first + i] = (started, answered)

    cpu = time.process_time()
    start = time.monotonic()
    tasks = []
    for i, raw in enumerate(requests):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, raw)))
    send_s = time.monotonic() - start
    await asyncio.gather(*tasks)
    cpu = time.process_time() - cpu
    pool.close()
    latencies.sort()
    late.sort()
    from_plan.sort()
    ok = codes.get(200, 0)

    def p99(values: list[float]) -> float:
        return round(values[min(len(values) - 1, int(len(values) * 0.99))] * 1000, 1)

    return {
        # the client's own cost and delay: it shares the machine's cores with the server and PostgreSQL
        "client_cpu_ms_per_request": round(cpu * 1000 / max(1, total), 3), "client_late_p99_ms": p99(late),
        "p99_from_plan_ms": p99(from_plan),
        "rate": rate, "seconds": seconds, "sent": total, "offered_rps": round(total / send_s, 1),
        "ok": ok, "shed_429": codes.get(429, 0), "errors": total - ok - codes.get(429, 0),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 1),
        "max_ms": round(latencies[-1] * 1000, 1), "connections": pool.opened,
        "codes": {str(k): v for k, v in sorted(codes.items())},
    }


def checkpoint_sync_ms(url: str) -> float | None:
    """PostgreSQL's running total of checkpoint sync time (ms; None: not PostgreSQL 15/16, or SQLite).

    A checkpoint's sync phase fsyncs every file it wrote; on this machine's disk that stalls the WAL flush
    every commit waits for (1-3 s with the many schemas tests leave), so a rate whose window contains one
    shows it in its tail. Read before and after each rate: a rise says one finished meanwhile."""
    if not url.startswith("postgresql"):
        return None
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return float(conn.execute(sa.text("select checkpoint_sync_time from pg_stat_bgwriter")).scalar_one())
    except sa.exc.DBAPIError:
        return None
    finally:
        engine.dispose()


def client_loop(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The load generator's event loop: uvloop (when installed) spends less of the shared CPU per request."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


def ledger_counts(url: str, run_prefix: str) -> tuple[int, int]:
    from consent.schema import consent_events, webhook_receipts

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        receipts = conn.execute(sa.select(sa.func.count()).select_from(webhook_receipts)).scalar_one()
        events = conn.execute(sa.select(sa.func.count()).select_from(consent_events)
                              .where(consent_events.c.subject.like(f"{run_prefix}-%"))).scalar_one()
    engine.dispose()
    return int(receipts), int(events)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="50,100,200,400")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "bench_webhook.json")
    parser.add_argument("--profile", type=Path, help="run the server under py-spy; collapsed stacks to this file")
    parser.add_argument("--loop", default="auto", choices=("auto", "asyncio", "uvloop"),
                        help="the server's event loop (auto: uvloop when installed)")
    parser.add_argument("--http", default="auto", choices=("auto", "h11", "httptools"),
                        help="the server's HTTP parser (auto: httptools when installed)")
    parser.add_argument("--client-loop", default="auto", choices=("auto", "asyncio", "uvloop"),
                        help="the load generator's event loop (auto: uvloop when installed)")
    parser.add_argument("--window", type=float, help="the group writer's wait for company in ms (default: its own)")
    parser.add_argument("--trace", type=Path, help="where each request's latency goes (bench/webhook_trace.py): "
                        "the server's timestamps to this file, the breakdown printed and in the JSON")
    parser.add_argument("--serve", nargs=2, metavar=("URL", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), args)
        return 0
    from consent.ledger import Ledger
    from sync.store import open_store

    schema = "bench_webhook_" + uuid.uuid4().hex[:8]
    tmp = tempfile.TemporaryDirectory()
    if args.store == "sqlite":
        url = f"sqlite:///{tmp.name}/bench.db"
    else:
        admin = sa.create_engine(PG)
        with admin.begin() as conn:
            conn.execute(sa.text(f'create schema "{schema}"'))
        url = f"{PG}?options=-csearch_path%3D{schema}"
    open_store(url).close()  # migrate before the server starts
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, __file__, "--serve", url, str(port), "--loop", args.loop, "--http", args.http,
               *(["--window", str(args.window)] if args.window is not None else []),
               *(["--trace", str(args.trace.resolve())] if args.trace is not None else [])]
    if args.profile is not None:  # py-spy (pip install py-spy): where the server's time goes
        command = [str(Path(sys.executable).with_name("py-spy")), "record", "--format", "raw",
                   "-o", str(args.profile), "--", *command]
    server = subprocess.Popen(command, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    base = f"http://127.0.0.1:{port}"
    results: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(base + "/_stats", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the webhook server did not start") from None
                time.sleep(0.2)
        first = 0
        for rate in [int(r) for r in args.rates.split(",")]:
            before = httpx.get(base + "/_stats", timeout=10).json()
            receipts_before, _ = ledger_counts(url, f"r{rate}")
            sync_before = checkpoint_sync_ms(url)
            times: dict[int, tuple[float, float]] = {}
            with asyncio.Runner(loop_factory=client_loop(args.client_loop)) as runner:
                row = runner.run(offer(port, rate, args.seconds, f"r{rate}", first, times))
            after = httpx.get(base + "/_stats", timeout=10).json()
            sync_after = checkpoint_sync_ms(url)
            row["checkpoint_sync_ms"] = (round(sync_after - sync_before) if sync_after is not None
                                         and sync_before is not None else None)
            receipts, events = ledger_counts(url, f"r{rate}")
            row["ledger_receipts"] = receipts - receipts_before
            row["ledger_events"] = events
            row["ledger_equals_ok"] = row["ledger_receipts"] == row["ok"]
            row["group_commits"] = after["groups"] - before["groups"]
            row["requests_per_commit"] = round((after["items"] - before["items"]) / max(1, row["group_commits"]), 1)
            # load-independent-ish: the server process's CPU per answered request, and its statements per group
            row["server_cpu_ms_per_request"] = round((after["cpu_s"] - before["cpu_s"]) * 1000 / max(1, row["ok"]), 2)
            row["statements_per_commit"] = round((after["statements"] - before["statements"])
                                                 / max(1, row["group_commits"]), 1)
            if args.trace is not None:
                from bench.webhook_trace import report

                httpx.get(base + "/_trace", timeout=30)
                print(f"where the time went at {rate}/s:")
                row["trace"] = report(args.trace, times)
            first += row["sent"]
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "trace"}), flush=True)
            time.sleep(2)
        store = open_store(url)
        verified = Ledger(store.engine, key_for).verify("bench")
        store.close()
    finally:
        server.send_signal(2)  # SIGINT: py-spy writes its profile and stops
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        if args.store == "postgres":
            with admin.begin() as conn:
                conn.execute(sa.text(f'drop schema "{schema}" cascade'))
            admin.dispose()
        tmp.cleanup()
    out = {"store": args.store, "cores": os.cpu_count(), "chain_ok": bool(verified.ok),
           "chain_events": verified.checked, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"{'rate':>5} {'sent':>6} {'ok':>6} {'429':>5} {'err':>4} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'ledger':>6} {'req/commit':>10} {'stmt/commit':>11} {'cpu ms/req':>10} {'client cpu':>10} "
          f"{'client late p99':>15} {'ckpt sync ms':>12}")
    for r in results:
        print(f"{r['rate']:>5} {r['sent']:>6} {r['ok']:>6} {r['shed_429']:>5} {r['errors']:>4} {r['p50_ms']:>7} "
              f"{r['p99_ms']:>7} {r['max_ms']:>7} {r['ledger_receipts']:>6} {r['requests_per_commit']:>10} "
              f"{r['statements_per_commit']:>11} {r['server_cpu_ms_per_request']:>10} "
              f"{r['client_cpu_ms_per_request']:>10} {r['client_late_p99_ms']:>15} {r['checkpoint_sync_ms']!s:>12}")
    print(f"chain verifies: {verified.ok} ({verified.checked} events)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

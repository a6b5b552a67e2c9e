"""Tenant runs spread over 1, 2 and 4 `segsync worker` processes: total time, speed-up, and the rate-limit bound.

    .venv/bin/python bench/bench_workers.py [--tenants 100] [--contacts 1000] [--workers 1,2,4] [--plan starter]

For each worker count: a fresh PostgreSQL schema (127.0.0.1:5432, database ``test``), one sandbox per firm
(its own HubSpot portal on ``--plan``'s rate limit and its own Mailchimp audience; each firm's book seeded
differently), a config with every firm, ``segsync sync --enqueue`` for all of them, then N worker
processes; the clock runs from the first worker's start until the last run's job has finished.

Times: "total" runs from starting the worker processes to an empty queue (start-up included); "runs" from the
first run's start to the last run's end (the store's run log). Speed-up is on "runs".

The bound: every firm has its own portal, so the vendors' limits bound each firm's run, not the sum. A
firm's run can take no less than its HubSpot calls / the portal's rate (Starter: 100 per 10 s), and N
workers can finish no sooner than max(the longest such run, sum of them / N). "Of bound" = that floor /
the "runs" time (100 % = the rate limits were the only limit). The sandbox's own process serves every
portal: on a small machine it competes with the workers for CPU, which the report shows as well.

Prints a table and writes bench/out/bench_workers.json. Asserts nothing (speed is never a test).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox import Sandbox, start_sandbox  # noqa: E402 - after the path fix for direct runs
from sandbox.hubspot.sim import PLAN_LIMITS  # noqa: E402
from tests.configs import sandbox_tenant  # noqa: E402

PG = os.environ.get("SEGSYNC_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SEGSYNC = str(Path(sys.executable).parent / "segsync")
WINDOW_SECONDS = 10.0  # HubSpot's rate window


def one_round(workers: int, sandboxes: dict[str, Sandbox], plan: str, tmp: Path) -> dict[str, Any]:
    schema = "bench_" + uuid.uuid4().hex[:10]
    admin = sa.create_engine(PG)
    with admin.begin() as conn:
        conn.execute(sa.text(f'create schema "{schema}"'))
    url = f"{PG}?options=-csearch_path%3D{schema}"
    config = tmp / f"segsync-{workers}.yaml"
    config.write_text(f"version: 1\nstore: {url}\nmodel_dir: {tmp / f'models-{workers}'}\ntenants:\n"
                      + "".join(sandbox_tenant(t, sb, plan=plan) for t, sb in sandboxes.items()))
    for sb in sandboxes.values():
        sb.calls.clear()
    engine = sa.create_engine(url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run([SEGSYNC, "sync", str(config), "--enqueue"], check=True, capture_output=True)
        started = time.monotonic()
        cpu_before = os.times()
        procs = [subprocess.Popen([SEGSYNC, "worker", str(config)], stdout=subprocess.DEVNULL,
                                  stderr=open(tmp / f"worker-{workers}-{i}.log", "w"))  # noqa: SIM115
                 for i in range(workers)]
        while True:
            with engine.connect() as conn:
                left = conn.execute(sa.text("select count(*) from procrastinate_jobs "
                                            "where status in ('todo', 'doing')")).scalar()
            if not left:
                break
            if all(p.poll() is not None for p in procs):
                raise RuntimeError("every worker exited before the queue was empty")
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(120)
        cpu_after = os.times()
        with engine.connect() as conn:
            runs = conn.execute(sa.text("select tenant_id, status, extract(epoch from finished_at - started_at) "
                                        "from runs where not dry_run")).all()
            jobs = conn.execute(sa.text("select status::text, count(*) from procrastinate_jobs group by 1")).all()
            span = conn.execute(sa.text("select extract(epoch from max(finished_at) - min(started_at)) from runs "
                                        "where not dry_run")).scalar()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'drop schema "{schema}" cascade'))
        admin.dispose()
    limit = PLAN_LIMITS[plan]
    hubspot_calls = {t: sb.calls.count("hubspot") for t, sb in sandboxes.items()}
    floor_each = {t: n / (limit / WINDOW_SECONDS) for t, n in hubspot_calls.items()} if limit else {}
    floor = max(max(floor_each.values(), default=0.0), sum(floor_each.values()) / workers) if limit else 0.0
    durations = [float(r[2]) for r in runs]
    return {
        "workers": workers,
        "seconds": round(elapsed, 1),  # from starting the worker processes to an empty queue
        "run_span_seconds": round(float(span or 0), 1),  # first run's start to last run's end (no process start-up)
        "runs": dict(sorted({s: sum(1 for r in runs if r[1] == s) for s in {r[1] for r in runs}}.items())),
        "jobs": {str(s): int(n) for s, n in jobs},
        "mean_run_seconds": round(sum(durations) / len(durations), 1) if durations else None,
        "hubspot_calls": sum(hubspot_calls.values()),
        "mailchimp_calls": sum(sb.calls.count("mailchimp") for sb in sandboxes.values()),
        "hubspot_429": sum(sb.calls.count("hubspot", status=429) for sb in sandboxes.values()),
        "rate_floor_seconds": round(floor, 1),
        "of_bound": round(floor / float(span), 3) if limit and span else None,
        "this_process_cpu_s": round((cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system), 1),
        "workers_cpu_s": round((cpu_after.children_user + cpu_after.children_system)
                               - (cpu_before.children_user + cpu_before.children_system), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--plan", default="starter", choices=sorted(PLAN_LIMITS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "bench_workers.json")
    args = parser.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    built = time.monotonic()
    sandboxes = {f"firm-{i:03d}": start_sandbox(contacts=args.contacts, seed=100 + i, hubspot_plan=args.plan)
                 for i in range(args.tenants)}
    print(f"{args.tenants} sandboxes of {args.contacts} contacts ({args.plan}) in {time.monotonic() - built:.0f} s")
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in counts:
                results.append(one_round(n, sandboxes, args.plan, Path(tmp)))
                print(json.dumps(results[-1]), flush=True)
    finally:
        for sb in sandboxes.values():
            sb.stop()
    base = results[0]["run_span_seconds"]
    print(f"\n{'workers':>7} {'total s':>8} {'runs s':>8} {'speed-up':>8} {'floor s':>8} {'of bound':>8} {'429s':>5} "
          "runs")
    for r in results:
        speed = base / r["run_span_seconds"] if r["run_span_seconds"] else 0
        print(f"{r['workers']:>7} {r['seconds']:>8} {r['run_span_seconds']:>8} {speed:>8.2f} "
              f"{r['rate_floor_seconds']:>8} {(r['of_bound'] or 0):>8.1%} {r['hubspot_429']:>5} {r['runs']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "cpus": os.cpu_count(),
                                    "load_before": os.getloadavg(), "python": platform.python_version(),
                                    "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""HubSpot connector cost and speed against the sandbox's rate limit: API calls per changed contact, contacts/s.

    .venv/bin/python bench/bench_hubspot.py [--contacts 10000] [--changed 5000] [--window 10] [--plan starter]

Prints a small table and writes bench/out/bench_hubspot.json. The sandbox enforces the plan's limit
(Starter: 100 requests per ``--window`` seconds, search 4/s) and the connector paces itself to it.
Scenarios: a full pull, a push of ``--changed`` contacts, a re-push with nothing changed, and the
incremental pull that reads those changes back (they share one timestamp, as batch writes do).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.base import PropertyUpdate  # noqa: E402
from connectors.hubspot import HubSpotConnector  # noqa: E402
from sandbox import start_sandbox  # noqa: E402

PROP = "segsync_segments"


def _measure(sb: Any, conn: HubSpotConnector, name: str, records: int, changed: int,
             work: Callable[[], int]) -> dict[str, Any]:
    sb.calls.clear()
    retries_before = conn.stats()["retries"]
    started = time.perf_counter()
    done = work()
    seconds = time.perf_counter() - started
    calls = sb.calls.count("hubspot")
    limited = sb.calls.count("hubspot", status=429)
    return {"scenario": name, "records": done if records < 0 else records, "changed": changed, "calls": calls,
            "calls_per_changed": round(calls / changed, 4) if changed else None,
            "contacts_per_s": round((done if records < 0 else records) / seconds, 1) if seconds else None,
            "seconds": round(seconds, 2), "http_429": limited, "retries": conn.stats()["retries"] - retries_before}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--changed", type=int, default=5_000)
    parser.add_argument("--window", type=float, default=10.0, help="rate window in seconds (HubSpot: 10)")
    parser.add_argument("--plan", default="starter")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "bench_hubspot.json"))
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with start_sandbox(contacts=20, seed=23, hubspot_plan=args.plan, window_seconds=args.window) as sb:
        sim = sb.hubspot
        sim.add_contacts([{"email": f"bench{i}@example.com", "firstname": "B"} for i in range(args.contacts)],
                         at=datetime.now(UTC) - timedelta(days=1))
        conn = HubSpotConnector(sb.hubspot_token, sb.hubspot_url, plan=args.plan, window_seconds=args.window,
                                settle_seconds=0)
        conn.ensure_schema(PROP, ["high_intent", "churn_watch"], ["upgrade_propensity"])
        ids = [r.id for r in sim.contacts.live()]
        total = len(ids)
        cursor: list[str | None] = [None]

        def full() -> int:
            pages = list(conn.pull_contacts(None, datetime.now(UTC)))
            cursor[0] = pages[-1].cursor
            return sum(1 for p in pages for c in p.contacts if not c.archived)

        rows.append(_measure(sb, conn, "pull_contacts, full (list)", -1, 0, full))
        changed = ids[: args.changed]
        updates = [PropertyUpdate(i, {PROP: "high_intent", "segsync_score_upgrade_propensity": "0.81"})
                   for i in changed]

        def push() -> int:
            results = conn.push_properties(updates)
            return sum(r.outcome == "sent" for r in results)

        rows.append(_measure(sb, conn, "push_properties, changed", len(changed), len(changed), push))
        rows.append(_measure(sb, conn, "push_properties, unchanged", 0, 0,
                             lambda: len(conn.push_properties([]))))
        time.sleep(0.01)

        def incremental() -> int:
            pages = list(conn.pull_contacts(cursor[0], datetime.now(UTC)))
            return sum(1 for p in pages for c in p.contacts if not c.archived)

        rows.append(_measure(sb, conn, "pull_contacts, incremental (search)", -1, len(changed), incremental))
        stats = conn.stats()
    limit = f"{args.plan}: 100 req / {args.window:g} s" if args.plan in ("free", "starter") else args.plan
    print(f"HubSpot connector vs sandbox ({limit}), {total} contacts")
    print(f"{'scenario':<38} {'records':>8} {'calls':>6} {'calls/changed':>14} {'contacts/s':>11} {'429s':>5}")
    for r in rows:
        per = "-" if r["calls_per_changed"] is None else f"{r['calls_per_changed']:.4f}"
        rate = "-" if r["contacts_per_s"] is None else f"{r['contacts_per_s']:.1f}"
        print(f"{r['scenario']:<38} {r['records']:>8} {r['calls']:>6} {per:>14} {rate:>11} {r['http_429']:>5}")
    ceiling = 100 / args.window * 100 if args.plan in ("free", "starter") else None
    if ceiling:
        print(f"(Starter ceiling for batch writes: {ceiling:.0f} contacts/s = 100 req/{args.window:g}s x 100 inputs)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"contacts": total, "plan": args.plan, "window_seconds": args.window,
                               "write_ceiling_contacts_per_s": ceiling, "at": datetime.now(UTC).isoformat(),
                               "results": rows, "connector_stats": stats}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The webhook's group write alone (no HTTP, no event loop): its time per group as the ledger grows.

    .venv/bin/python bench/bench_webhook_write.py [--groups 5000] [--size 2] [--every 1000]

Builds the webhook app (``consent.webhook.create_app``) over a fresh PostgreSQL schema and calls its group
write directly with ``--size`` signed preference-center requests per group (new people, 20 % opt-outs, as
``bench_webhook.py`` sends), one group after another. Prints the p50 / p99 of the group write for each
``--every`` groups, so a write whose cost grows with the tables shows as a rising p50 (issue 21: a cached
plan that scanned every event made it grow 1.4 -> 14 ms over 10,000 requests). The schema is dropped after.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_webhook import PG, POLICY, SECRET, key_for  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=5000)
    parser.add_argument("--size", type=int, default=2, help="requests per group")
    parser.add_argument("--every", type=int, default=1000, help="print the write's p50 / p99 every N groups")
    args = parser.parse_args()
    from consent.ledger import Ledger
    from consent.outbox import Outbox
    from consent.webhook import TenantHooks, create_app
    from consent.webhook_events import parse_preferences
    from sync.store import open_store

    schema = "bench_write_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(PG)
    with admin.begin() as conn:
        conn.execute(sa.text(f'create schema "{schema}"'))
    store = open_store(f"{PG}?options=-csearch_path%3D{schema}")
    try:
        ledger = Ledger(store.engine, key_for)
        hooks = TenantHooks(SECRET, POLICY)
        app = create_app({"bench": hooks}, ledger, Outbox(store.engine, mac_key=ledger.chain_key))
        now = datetime.now(UTC)
        key = key_for("bench")

        def item(i: int) -> tuple[str, TenantHooks, object]:
            optout = i % 5 == 0
            body = json.dumps({"email": f"w-{i}@example.com", "occurred_at": "2026-11-25T18:00:00Z",
                               "purposes": {"email_marketing": not optout, "profiling": not optout},
                               "notice_version": "privacy-2026-03"}).encode()
            receipt = f"preferences:body:{uuid.uuid5(uuid.NAMESPACE_URL, key.hex() + body.hex()).hex}"
            return "bench", hooks, parse_preferences(hooks, body, receipt, now)

        write = app.state.writer._write  # the group write the writer thread calls (one transaction per group)
        n, times = 0, []
        for g in range(1, args.groups + 1):
            items = [item(n + j) for j in range(args.size)]
            n += args.size
            started = time.perf_counter()
            outcomes = write(items)
            times.append(time.perf_counter() - started)
            assert all(not isinstance(o, Exception) for o in outcomes), outcomes
            if g % args.every == 0:
                times.sort()
                print(f"groups {g - args.every + 1}-{g}: write p50 {times[len(times) // 2] * 1000:.2f} ms, "
                      f"p99 {times[int(len(times) * 0.99)] * 1000:.2f} ms", flush=True)
                times = []
        pipelined = app.state.pipelined
        if pipelined is not None and hasattr(pipelined, "one_trip"):
            print(f"pipelined groups {pipelined.written}, in one round trip {pipelined.one_trip}, "
                  f"round trips {pipelined.round_trips}")
    finally:
        store.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f'drop schema "{schema}" cascade'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

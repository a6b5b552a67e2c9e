"""Fixed costs paid once per operation, many thousand times in a test suite or a big sync.

    .venv/bin/python bench/bench_overheads.py [--repeat 2000] [--sandboxes 20]

- stopping a sandbox (HubSpot + Mailchimp, every other one with Wealthbox), after one request to each vendor;
- opening an up-to-date SQLite store (``open_store``: engine, version check, dispose);
- the tenant lease's fencing check (before every vendor call);
- writing one pushed record ahead and confirming it (``intend_batch`` + ``confirm_batch``: Redtail and
  Wealthbox push one record a batch);
- the consent re-check's address lookup before each batch (``addresses`` of one contact).

Prints a table and writes bench/out/bench_overheads.json. Nothing here is asserted. The machine is shared:
compare runs made back to back, and note the load average printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox import start_sandbox
from sync.store import open_store


def per_call(fn: Any, n: int) -> float:
    """Mean seconds of ``fn()`` over ``n`` calls."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def sandbox_stop(count: int) -> float:
    stops = []
    for i in range(count):
        sb = start_sandbox(contacts=40, seed=5 + i)
        with requests.Session() as s:
            s.get(sb.hubspot_url + "/crm/v3/objects/contacts", headers={"Authorization": "Bearer " + sb.hubspot_token},
                  timeout=10)
            s.get(sb.mailchimp_url + "/lists", auth=("x", sb.mailchimp_key), timeout=10)
        if i % 2:
            _ = sb.wealthbox  # started on first use, as the Wealthbox tests do
        t0 = time.perf_counter()
        sb.stop()
        stops.append(time.perf_counter() - t0)
    return sum(stops) / len(stops)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--sandboxes", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "bench_overheads.json")
    args = parser.parse_args()
    n = args.repeat
    results: dict[str, float] = {"sandbox_stop_s": sandbox_stop(args.sandboxes)}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/segsync.db"
        open_store(url).close()  # creates the schema
        results["open_store_ms"] = per_call(lambda: open_store(url).close(), max(10, n // 50)) * 1e3
        store = open_store(url)
        try:
            with store.tenant_lock("firm") as lease:
                results["lease_check_us"] = per_call(lease.check, n) * 1e6
            counter = iter(range(10 * n))

            def one_record() -> None:
                key = f"c{next(counter)}"
                store.intend_batch("firm", 1, "crm.properties", [(key, "v")])
                store.confirm_batch("firm", 1, "crm.properties", [(key, "v")], [(key, "sent", "")])

            results["intend_confirm_one_record_ms"] = per_call(one_record, n) * 1e3
            results["addresses_one_contact_us"] = per_call(lambda: store.addresses("firm", ["c1"]), n) * 1e6
        finally:
            store.close()
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'what':36} value")
    for key, value in results.items():
        print(f"{key:36} {value:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"status": 0, "results": results, "load_average": load,
                                    "repeat": n, "sandboxes": args.sandboxes}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Consent ledger throughput: bulk decisions for a whole run, appends, and chain verification.

    .venv/bin/python bench/bench_consent.py [--contacts 100000] [--store sqlite|postgres]

Prints a table and writes bench/out/bench_consent.json. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from consent.ledger import Ledger
from consent.signals import ConsentSignal
from sync.store import open_store

POLICY = {"email_marketing": "consent", "profiling": "legitimate_interest"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "bench_consent.json")
    args = parser.parse_args()
    n = args.contacts
    schema = f"bench_{int(time.time())}"
    pg = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    with tempfile.TemporaryDirectory() as tmp:
        if args.store == "sqlite":
            url = f"sqlite:///{tmp}/bench.db"
        else:  # a schema of its own, dropped afterwards
            admin = sa.create_engine(pg)
            with admin.begin() as conn:
                conn.execute(sa.text(f'create schema "{schema}"'))
            url = f"{pg}?options=-csearch_path%3D{schema}"
        store = open_store(url)
        ledger = Ledger(store.engine, lambda _t: b"bench-key-0123456789")
        tenant = f"bench{int(time.time())}"
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        emails = [f"person{i}@example.com" for i in range(n)]
        signals = [ConsentSignal(e, "email_marketing", "withdrawn" if i % 7 == 0 else "granted", "consent", "import",
                          t0 + timedelta(seconds=i), None, None, f"import:{i}") for i, e in enumerate(emails)]
        started = time.perf_counter()
        for i in range(0, n, 5000):
            ledger.record_many(tenant, signals[i : i + 5000])
        append_s = time.perf_counter() - started
        started = time.perf_counter()
        decisions = ledger.decisions(tenant, emails, POLICY)
        decide_s = time.perf_counter() - started
        started = time.perf_counter()
        verified = ledger.verify(tenant)
        verify_s = time.perf_counter() - started
        store.close()
        if args.store == "postgres":
            with admin.begin() as conn:
                conn.execute(sa.text(f'drop schema "{schema}" cascade'))
            admin.dispose()
    result = {
        "contacts": n,
        "store": args.store,
        "append_events_per_s": round(n / append_s),
        "decisions_seconds": round(decide_s, 3),
        "decisions_per_s": round(n / decide_s),
        "verify_events_per_s": round(n / verify_s),
        "chain_ok": bool(verified.ok),
        "allowed_email": sum(1 for d in decisions.values() if d.allows("email_marketing")),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for k, v in result.items():
        print(f"{k:>24}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Mailchimp connector cost and speed against the local sandbox: calls per tag change and changes/s.

    .venv/bin/python bench/bench_mailchimp.py [--members 10000]

Prints a small table and writes bench/out/bench_mailchimp.json. Scenarios: 10,000 tag changes in
one push_tags call (the /batches route), the same in the pipeline's 500-change calls (the
static-segment route), a static segment of 10,000 members, and a full member pull.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.base import TagChange  # noqa: E402
from connectors.mailchimp import MailchimpConnector  # noqa: E402
from sandbox import start_sandbox  # noqa: E402


def _measure(sb: Any, name: str, changes: int, work: Any) -> dict[str, Any]:
    sb.calls.clear()
    started = time.perf_counter()
    results = work()
    seconds = time.perf_counter() - started
    calls = sb.calls.count("mailchimp")
    writes = len(sb.calls.writes("mailchimp"))
    outcomes: dict[str, int] = {}
    for r in results:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    return {"scenario": name, "records": changes, "calls": calls, "write_calls": writes,
            "calls_per_record": round(calls / max(changes, 1), 5), "records_per_s": round(changes / seconds, 1),
            "seconds": round(seconds, 3), "outcomes": outcomes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "bench_mailchimp.json"))
    args = parser.parse_args()
    n = args.members
    rows: list[dict[str, Any]] = []
    with start_sandbox(contacts=50, seed=17) as sb:
        st = sb.mailchimp.state
        when = datetime(2025, 1, 1, tzinfo=UTC)
        with st.lock:
            emails = [st.add(f"bench{i}@example.com", "subscribed", {"FNAME": "B"}, last_changed=when).email
                      for i in range(n)]

        def connector() -> MailchimpConnector:
            return MailchimpConnector(sb.mailchimp_key, sb.mailchimp_list_id, sb.mailchimp_url)

        rows.append(_measure(sb, "push_tags, one call (/batches)", n, lambda: connector().push_tags(
            [TagChange(e, active=("segsync:a",), inactive=("segsync:b",)) for e in emails])))

        def chunked() -> list[Any]:
            conn, out = connector(), []
            for i in range(0, n, 500):
                out += conn.push_tags([TagChange(e, active=("segsync:c",)) for e in emails[i : i + 500]])
            return out

        rows.append(_measure(sb, "push_tags, 500 per call (segments)", n, chunked))
        rows.append(_measure(sb, "sync_segment, new segment", n,
                             lambda: connector().sync_segment("segsync bench", emails, [])))
        total = len(st.members)

        def pull() -> list[Any]:
            run = datetime.now(UTC) + timedelta(seconds=1)
            return [c for page in connector().pull_members(None, run) for c in page.contacts]

        sb.calls.clear()
        started = time.perf_counter()
        pulled = pull()
        seconds = time.perf_counter() - started
        rows.append({"scenario": "pull_members, full", "records": len(pulled), "calls": sb.calls.count("mailchimp"),
                     "write_calls": len(sb.calls.writes("mailchimp")),
                     "calls_per_record": round(sb.calls.count("mailchimp") / max(total, 1), 5),
                     "records_per_s": round(len(pulled) / seconds, 1), "seconds": round(seconds, 3),
                     "outcomes": {"pulled": len(pulled)}})
    print(f"{'scenario':<38} {'records':>8} {'calls':>6} {'writes':>6} {'calls/rec':>10} {'rec/s':>10}")
    for r in rows:
        print(f"{r['scenario']:<38} {r['records']:>8} {r['calls']:>6} {r['write_calls']:>6} "
              f"{r['calls_per_record']:>10.5f} {r['records_per_s']:>10.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"members": n, "at": datetime.now(UTC).isoformat(), "results": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

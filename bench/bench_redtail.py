"""Redtail connector cost: API calls per changed contact for pulls and pushes, against the minimum the API allows.

    .venv/bin/python bench/bench_redtail.py [--contacts 5000] [--changed 500]

Prints a table and writes bench/out/bench_redtail.json. Against the Redtail simulator over real HTTP
(no client-side pacing: the calls, not the pace, are measured). The minimum per scenario, and why:

- pull: ``GET /contacts`` returns 200 contacts per page with emails, family, tag memberships and
  activities included, so contacts cost ceil(n/200) calls; accounts (balances) and notes have no bulk
  or include form in Redtail's v1 API, so each changed contact costs one read of each. Minimum for n
  changed contacts: ceil(n/200) + 2n (+1 for the user-key exchange on a fresh connector), plus, at the end
  of every pass, the opt-out tag group's members, ceil(m/200) calls for m members (+1 listing of the tag
  groups on a fresh connector): adding a membership need not change a contact's ``updated_at``, so the
  contact listings alone could miss an opt-out.
- push: Redtail has no batch write; a tag membership and a UDF value are one call each, so the minimum
  is one write per membership added or removed and per score value changed. Reading what a contact
  already has costs nothing when the contact was pulled this run (memberships come with it) and the
  values were written by this connector; a cold push (no pull first) also reads memberships and UDFs.
  An opt-out always reads the contact's memberships afresh (a long-lived connector's memory may be stale).
- nothing to change: zero calls.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.base import PropertyUpdate  # noqa: E402
from connectors.redtail import RedtailConnector  # noqa: E402
from connectors.redtail.settings import CLOCK_SKEW_SECONDS  # noqa: E402
from sandbox.redtail import DO_NOT_EMAIL, RunningRedtail, start_redtail  # noqa: E402

PROP = "segsync_segments"
SCORE = "segsync_score_churn_risk"


def _measure(rt: RunningRedtail, name: str, changed: int, minimum: int, work: Callable[[], int]) -> dict[str, Any]:
    rt.calls.clear()
    started = time.perf_counter()
    records = work()
    seconds = time.perf_counter() - started
    calls = rt.calls.count("redtail")
    writes = len(rt.calls.writes("redtail"))
    return {"scenario": name, "records": records, "changed": changed, "calls": calls, "writes": writes,
            "minimum_calls": minimum, "calls_per_changed": round(calls / changed, 3) if changed else None,
            "minimum_per_changed": round(minimum / changed, 3) if changed else None,
            "over_minimum": calls - minimum, "seconds": round(seconds, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--contacts", type=int, default=5_000)
    parser.add_argument("--changed", type=int, default=500)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "bench_redtail.json"))
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with start_redtail(contacts=args.contacts, seed=41) as rt:
        def connect() -> RedtailConnector:
            return RedtailConnector(rt.api_key, rt.username, rt.password, rt.url, requests_per_second=0)

        conn = connect()
        n = len(rt.sim.db.contacts)
        k = min(args.changed, n)
        ids = sorted(rt.sim.db.contacts)[:k]
        cursor: list[str | None] = [None]

        def pull() -> int:
            got = 0
            for page in conn.pull_contacts(cursor[0], datetime.now(UTC)):
                got += len(page.contacts)
                cursor[0] = page.cursor or cursor[0]
            return got

        def pages(m: int) -> int:
            return max(1, -(-m // 200))

        def members() -> int:  # the opt-out group's members: listed at the end of every pass
            tid = next(t["id"] for t in rt.sim.db.tags.values() if t["name"] == DO_NOT_EMAIL)
            return pages(sum(tid in c.tag_memberships.values() for c in rt.sim.db.contacts.values() if not c.deleted))

        rows.append(_measure(rt, "full pull (first run)", n, 1 + pages(n) + 2 * n + 1 + members(), pull))
        time.sleep(0.01)
        with rt.sim.db.lock:  # an advisor edits k contacts
            for cid in ids:
                rt.sim.db.contacts[cid].updated_at = datetime.now(UTC)
        # A pull re-reads what changed in the CLOCK_SKEW_SECONDS before the previous pull began (clocks differ);
        # runs are hours apart, so the edits here are made longer ago than that.
        time.sleep(CLOCK_SKEW_SECONDS + 0.5)
        rows.append(_measure(rt, f"incremental pull, {k} changed", k, pages(k) + 2 * k + members(), pull))
        rows.append(_measure(rt, "incremental pull, nothing changed", 0, 1 + members(), pull))
        conn.ensure_schema(PROP, ["churn_watch", "vip"], ["churn_risk"])

        def push(props: dict[str, str], c: RedtailConnector | None = None) -> Callable[[], int]:
            return lambda: len((c or conn).push_properties([PropertyUpdate(str(i), dict(props)) for i in ids]))

        rows.append(_measure(rt, "push: new segment tag + new score", k, 2 * k,
                             push({PROP: "churn_watch", SCORE: "0.71"})))
        rows.append(_measure(rt, "push: segment moved + score changed", k, 3 * k,
                             push({PROP: "vip", SCORE: "0.42"})))
        rows.append(_measure(rt, "push: nothing to change (empty plan)", 0, 0, lambda: len(conn.push_properties([]))))
        # A UDF value written bumps updated_at: the next pull sees those contacts as changed and, as
        # for any change, must read their accounts and notes (nothing says which part of a contact changed).
        time.sleep(CLOCK_SKEW_SECONDS + 0.5)
        rows.append(_measure(rt, f"incremental pull after segsync's own push to {k}", k,
                             pages(k) + 2 * k + members(), pull))
        cold = connect()
        cold.ensure_schema(PROP, ["churn_watch", "vip"], ["churn_risk"])
        rows.append(_measure(rt, "cold push (no pull first): segment moved + score changed", k, 3 * k,
                             push({PROP: "churn_watch", SCORE: "0.55"}, cold)))
        opt = ids[: max(1, k // 10)]
        db = rt.sim.db
        optout = {t["id"] for t in db.tags.values() if t["name"] == DO_NOT_EMAIL}
        owned = set(cold.owned()) - optout
        need = sum(not optout & set(db.contacts[i].tag_memberships.values()) for i in opt) + sum(
            len(owned & set(db.contacts[i].tag_memberships.values())) for i in opt) + len(opt)  # joins, removals, reads
        rows.append(_measure(rt, f"opt-out of {len(opt)} pulled contacts (Do Not Email + clear tags)", len(opt),
                             need, lambda: sum(cold.suppress("", str(i), PROP).outcome == "sent" for i in opt)))
    print(f"{'scenario':58} {'changed':>7} {'calls':>7} {'min':>7} {'calls/chg':>9} {'min/chg':>8}")
    for r in rows:
        print(f"{r['scenario']:58} {r['changed']:>7} {r['calls']:>7} {r['minimum_calls']:>7} "
              f"{r['calls_per_changed'] if r['calls_per_changed'] is not None else '-':>9} "
              f"{r['minimum_per_changed'] if r['minimum_per_changed'] is not None else '-':>8}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"contacts": args.contacts, "changed": args.changed, "results": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

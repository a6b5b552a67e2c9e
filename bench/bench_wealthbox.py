"""Wealthbox connector cost: API calls per changed contact for pull and push, against the API's minimum.

    .venv/bin/python bench/bench_wealthbox.py [--contacts 5000] [--changed 500]

Prints a table and writes bench/out/bench_wealthbox.json. The simulator runs unlimited (Wealthbox's
rate limit would only stretch the clock, not change the counts); calls are counted by its call log.

The minimum the API allows (v1 as documented): a pull reads 100 contacts a page (``per_page`` maximum),
so a pull of N changed contacts needs ceil(N / 100) list calls, 0.01 per contact (segsync adds one
deleted-contacts page per incremental run and re-reads the few records sharing the second a page ends on);
there is no batch write, so a push needs one ``PUT /contacts/{id}`` per changed contact (1.0). segsync
spends 2.0 on a tag change: ``tags`` replaces the whole list, so it reads the contact right before writing
(an advisor's tag added since the pull is kept). A score-only change is the minimum, 1.0, when the contact's
tags were read in this run (pulled, or written); otherwise segsync reads it to see that its tags need no
change (2.0): the pipeline hands the connector the desired segments, not what changed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.base import PropertyUpdate  # noqa: E402
from connectors.wealthbox import WealthboxConnector  # noqa: E402
from sandbox.wealthbox import start_wealthbox  # noqa: E402

PROP = "segsync_segments"


def _measure(wb: Any, name: str, changed: int, minimum: float, work: Callable[[], int]) -> dict[str, Any]:
    """One scenario: what ``work`` cost in calls (and write calls) per changed contact, next to the minimum."""
    wb.calls.clear()
    records, calls = work(), wb.calls.count("wealthbox")
    return {"scenario": name, "records": records, "changed": changed, "calls": calls,
            "writes": len(wb.calls.writes("wealthbox")),
            "calls_per_changed": round(calls / changed, 4) if changed else None, "api_minimum_per_changed": minimum}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--contacts", type=int, default=5_000)
    parser.add_argument("--changed", type=int, default=500)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "bench_wealthbox.json"))
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with start_wealthbox(contacts=args.contacts, seed=29) as wb:
        sim = wb.sim
        sim.define_custom_field("segsync_score_upgrade_propensity")
        conn = WealthboxConnector(wb.access_token, wb.url, rate_limit=None)
        live = sorted(sim.ws.by_person.items())
        cursor: list[str | None] = [None]

        def pull(after: datetime) -> int:
            pages = list(conn.pull_contacts(cursor[0], after))
            cursor[0] = next((p.cursor for p in reversed(pages) if p.cursor), cursor[0])
            return sum(1 for p in pages for _ in p.contacts)

        started = datetime.now(UTC)
        total = len(sim.ws.contacts)
        rows.append(_measure(wb, "pull, full", total, 0.01, lambda: pull(started)))
        rows.append(_measure(wb, "pull, nothing changed", 0, 0.0, lambda: pull(started + timedelta(seconds=2))))
        changed = live[: args.changed]
        for key, _ in changed:
            sim.touch(key, started + timedelta(seconds=3))
        least = math.ceil(len(changed) / 100) / len(changed)
        rows.append(_measure(wb, f"pull, {len(changed)} changed", len(changed), least,
                             lambda: pull(started + timedelta(seconds=5))))
        conn.ensure_schema(PROP, ["high_intent"], ["upgrade_propensity"])
        ids = [str(cid) for _, cid in changed]
        tags = [PropertyUpdate(i, {PROP: "high_intent", "segsync_score_upgrade_propensity": "0.81"}) for i in ids]
        rows.append(_measure(wb, "push tags + score", len(ids), 1.0,
                             lambda: sum(r.outcome == "sent" for r in conn.push_properties(tags))))
        fresh = WealthboxConnector(wb.access_token, wb.url, rate_limit=None)  # a later run: nothing cached
        fresh.ensure_schema(PROP, ["high_intent", "churn_watch"], ["upgrade_propensity"])
        score = [PropertyUpdate(i, {PROP: "high_intent", "segsync_score_upgrade_propensity": "0.5"}) for i in ids]
        rows.append(_measure(wb, "push score only (tags known this run)", len(ids), 1.0,
                             lambda: sum(r.outcome == "sent" for r in conn.push_properties(score))))
        later = [PropertyUpdate(i, {PROP: "high_intent", "segsync_score_upgrade_propensity": "0.6"}) for i in ids]
        rows.append(_measure(wb, "push score only (a later run, not pulled)", len(ids), 1.0,
                             lambda: sum(r.outcome == "sent" for r in fresh.push_properties(later))))
        rows.append(_measure(wb, "push nothing", 0, 0.0, lambda: len(fresh.push_properties([]))))
    print(f"{'scenario':46} {'records':>8} {'changed':>8} {'calls':>6} {'writes':>6} {'per chg':>8} {'minimum':>8}")
    for r in rows:
        print(f"{r['scenario']:46} {r['records']:>8} {r['changed']:>8} {r['calls']:>6} {r['writes']:>6} "
              f"{r['calls_per_changed'] if r['calls_per_changed'] is not None else '-':>8} "
              f"{r['api_minimum_per_changed']:>8.3g}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"contacts": args.contacts, "changed": args.changed, "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

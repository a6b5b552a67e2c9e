"""Full sync of a sandbox book, three runs: cost in API calls per contact and per changed contact, contacts/s.

    .venv/bin/python bench/bench_sync.py [--contacts 10000] [--seed 7] [--change 0.05] [--fast] [--advance-hours 0]
        [--no-change-runs 1]

The pipeline (``sync.run.pipeline.run_tenant``) runs against both simulators over loopback HTTP, with a
SQLite store and model directory in a temporary folder and HubSpot on the Starter plan (100 requests
per 10 s; ``--fast`` shortens the window to 1 s, simulator and connector alike).

1. First run: everything is new. Contacts/s end to end, API calls per vendor and per endpoint,
   calls per contact, 429s.
2. ``--change`` (5 %) of the book changes at the vendors, the way it would between two scheduled
   runs: 60 % of those people open and click an email (HubSpot's "last open/click date" contact
   properties), 20 % win an upgrade deal in HubSpot, 20 % unsubscribe in Mailchimp. New events are
   dated inside the data already stored, so the scoring watermark stays put and only these people's
   features move. Second run: write calls per changed person, HubSpot and Mailchimp separately.
3. Third run with nothing changed: write calls (the design says 0; printed, not asserted).

Prints tables and writes bench/out/bench_sync.json. Peak RSS covers this whole process, which
also hosts both simulators (their threads and the generated book).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.hubspot import HubSpotConnector  # noqa: E402 - after the path fix for direct runs
from connectors.hubspot.config import HubSpotCrm  # noqa: E402
from sandbox import Sandbox, start_sandbox  # noqa: E402
from sandbox.hubspot.schema import iso  # noqa: E402
from sync.config import load_config  # noqa: E402
from sync.config.wiring import build_esp  # noqa: E402
from sync.run.pipeline import RunOptions, run_tenant  # noqa: E402
from sync.store import open_store  # noqa: E402

VENDORS = ("hubspot", "mailchimp")
_DIGITS = re.compile(r"^\d+$")
_HASH = re.compile(r"^[0-9a-f]{32}$")
_MC_ID = re.compile(r"^[0-9a-f]{10}$")  # Mailchimp campaign, segment and batch ids


def peak_rss_mb() -> float:
    """Maximum resident set size of this process so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def reset_peak() -> bool:
    """Reset the kernel's high-water mark of this process (Linux): a run's own peak can then be read."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_since_reset() -> float | None:
    return _status_mb("VmHWM")


def current_rss_mb() -> float:
    return _status_mb("VmRSS") or 0.0


def endpoint(path: str, list_id: str) -> str:
    """A call's path with ids folded, so calls group by endpoint: /lists/{list_id}/members/{hash}."""
    parts = []
    for seg in path.split("/"):
        if seg == list_id:
            parts.append("{list_id}")
        elif _DIGITS.match(seg):
            parts.append("{id}")
        elif _HASH.match(seg):
            parts.append("{hash}")
        elif _MC_ID.match(seg):
            parts.append("{id}")
        else:
            parts.append(seg)
    return "/".join(parts)


def write_config(tmp: Path, sb: Sandbox) -> Path:
    """The sandbox's own ready config, with the store and models in ``tmp``."""
    text = sb.config_yaml(store=f"sqlite:///{tmp / 'segsync.db'}")
    text = text.replace("\nserver:", f"\nmodel_dir: {tmp / 'models'}\nserver:", 1)
    path = tmp / "segsync.yaml"
    path.write_text(text)
    return path


def sync(config: Path, window: float) -> dict[str, Any]:
    """One scheduled run, as ``segsync sync`` does it, with the connectors built here.

    The HubSpot connector is built like ``sync.config.wiring.build_crm`` but with the bench's rate window
    and no search settle delay (the simulator indexes writes at once, so waiting 30 s would only
    add idle time between the runs).
    """
    cfg = load_config(config)
    tenant = cfg.tenants[0]
    crm_cfg = tenant.crm
    assert isinstance(crm_cfg, HubSpotCrm)
    feats = tenant.features
    extra = tuple(dict.fromkeys([*crm_cfg.extra_properties, *feats.numeric_properties, *feats.categorical_properties,
                                 *feats.sensitive_attributes]))
    crm = HubSpotConnector(
        crm_cfg.access_token.get_secret_value(),
        crm_cfg.base_url,
        plan=crm_cfg.plan,
        extra_properties=extra,
        event_deal_types=tuple(crm_cfg.deal_event_types),
        window_seconds=window,
        settle_seconds=0,
        web_lookback_days=crm_cfg.web_events_lookback_days,
    )
    store = open_store(cfg.store)
    try:
        return run_tenant(cfg, tenant, store, RunOptions(), base_dir=config.parent, crm=crm, esp=build_esp(tenant))
    finally:
        store.close()


def measure(sb: Sandbox, name: str, config: Path, window: float, changed: int,
            profile: Path | None = None) -> dict[str, Any]:
    """Run once and count what the simulators saw (under cProfile, dumped to ``profile``, when given)."""
    sb.calls.clear()
    gc.collect()
    hwm_reset = reset_peak()
    rss_before = current_rss_mb()
    started = time.perf_counter()
    cpu0 = time.process_time()
    if profile is None:
        report = sync(config, window)
    else:
        import cProfile

        with cProfile.Profile() as prof:
            report = sync(config, window)
        prof.dump_stats(profile)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    calls = sb.calls.calls
    contacts = int(report.get("contacts", {}).get("total", 0))
    row: dict[str, Any] = {"run": name, "status": report.get("status"), "seconds": round(seconds, 2),
                           "contacts": contacts, "contacts_per_s": round(contacts / seconds, 1) if seconds else None,
                           "changed_people": changed, "cpu_seconds": round(cpu, 2),
                           # This run's own peak: the process's high-water mark (reset before the run) minus
                           # what it held before (simulators, the generated book, earlier runs' leftovers).
                           "run_peak_rss_mb": round(peak_since_reset() or 0) if hwm_reset else None,
                           "rss_before_mb": round(rss_before)}
    writes = {v: sb.calls.writes(v) for v in VENDORS}
    for v in VENDORS:
        mine = [c for c in calls if c.vendor == v]
        row[f"{v}_calls"] = len(mine)
        row[f"{v}_writes"] = len(writes[v])
        row[f"{v}_write_records"] = sum(c.inputs for c in writes[v])
        row[f"{v}_429"] = sum(1 for c in mine if c.status == 429)
    row["calls"] = row["hubspot_calls"] + row["mailchimp_calls"]
    row["writes"] = row["hubspot_writes"] + row["mailchimp_writes"]
    row["calls_per_contact"] = round(row["calls"] / contacts, 4) if contacts else None
    if changed:
        for v in VENDORS:
            row[f"{v}_writes_per_changed"] = round(row[f"{v}_writes"] / changed, 4)
        row["calls_per_changed"] = round(row["calls"] / changed, 4)
    plan = report.get("plan", {})
    row["plan_changes"] = plan.get("total_changes")
    row["plan_destinations"] = {d: v.get("changes") for d, v in (plan.get("destinations") or {}).items()}
    row["suppressed"] = dict(plan.get("suppressed") or {})
    row["plan_examples"] = {d: ex[:3] for d, ex in (plan.get("examples") or {}).items()}
    if report.get("refused"):
        row["refused"] = report["refused"]
    row["pushed"] = dict(report.get("push", {}).get("totals", {}))
    scoring = report.get("scoring") or {}
    row["scores_reused"] = bool(scoring.get("reused"))
    row["rescored_because"] = scoring.get("changed_inputs", [])
    row["retries"] = {k: (report.get("api", {}).get(k) or {}).get("retries") for k in ("crm", "esp")}
    row["by_endpoint"] = {v: dict(sorted(Counter(f"{c.method} {endpoint(c.path, sb.mailchimp_list_id)}"
                                                 for c in calls if c.vendor == v).items())) for v in VENDORS}
    row["write_records_by_endpoint"] = {
        v: dict(sorted(Counter(f"{c.method} {endpoint(c.path, sb.mailchimp_list_id)}"
                               for c in writes[v] for _ in range(max(c.inputs, 1))).items())) for v in VENDORS}
    row["peak_rss_mb"] = peak_rss_mb()
    if report.get("error"):
        row["error"] = report["error"]
    return row


def change_book(sb: Sandbox, share: float, seed: int, advance_hours: float = 0.0) -> dict[str, int]:
    """Change ``share`` of the book's people at the vendors; returns how many of each kind.

    Event times sit between two days and two hours before the newest event already synced, so
    the watermark the scores are computed at does not move; ``advance_hours`` shifts them that
    much later, as if that long had passed since the last run (the watermark then moves).
    """
    rng = random.Random(seed)
    book = sb.book
    newest = min(book.as_of, max(e.occurred_at for e in book.events)) + timedelta(hours=advance_hours)
    people = [p for p in book.people if p.merged_into is None]
    total = max(1, round(len(people) * share))
    n_unsub, n_deal = total // 5, total // 5
    n_email = total - n_unsub - n_deal
    hs = sb.hubspot
    in_crm = [p for p in people if p.in_crm and hs.contact_id_for(p.key)]
    subscribed = [p for p in people if p.in_esp and sb.mailchimp.status(p.esp_email or p.email) == "subscribed"]
    rng.shuffle(in_crm)
    rng.shuffle(subscribed)
    unsub = subscribed[:n_unsub]
    taken = {p.key for p in unsub}
    crm_pick = [p for p in in_crm if p.key not in taken][: n_email + n_deal]
    email, deal = crm_pick[:n_email], crm_pick[n_email:]
    now = datetime.now(UTC)
    with hs.lock:
        for p in email:
            rec = hs.contacts.records[hs.contact_id_for(p.key) or ""]
            opened = newest - timedelta(hours=rng.uniform(2, 48))
            props = rec.properties
            for last, count, when in (("hs_email_last_open_date", "hs_email_open", opened),
                                      ("hs_email_last_click_date", "hs_email_click", opened + timedelta(minutes=5))):
                props[last] = iso(when)
                props[count] = str(int(float(props.get(count) or 0)) + 1)
            hs.contacts.touch(rec, now)
        for p in deal:
            cid = hs.contact_id_for(p.key) or ""
            closed = newest - timedelta(hours=rng.uniform(2, 48))
            rec = hs.deals.add({"dealname": "Upgrade (bench)", "amount": f"{rng.uniform(5_000, 50_000):.2f}",
                                "closedate": iso(closed), "dealtype": "upgrade", "dealstage": "closedwon",
                                "pipeline": "default"}, now)
            rec.associations["contacts"] = [cid]
            hs.contacts.records[cid].associations.setdefault("deals", []).append(rec.id)
    for p in unsub:
        sb.mailchimp.unsubscribe(p.esp_email or p.email)
    return {"email_open_click": len(email), "upgrade_deal": len(deal), "mailchimp_unsubscribe": len(unsub),
            "people": len(email) + len(deal) + len(unsub)}


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = [("run", 22, "run"), ("status", 8, "status"), ("seconds", 8, "s"), ("cpu_seconds", 7, "CPU s"),
            ("run_peak_rss_mb", 9, "peak MB"), ("contacts_per_s", 11, "contacts/s"),
            ("hubspot_calls", 8, "HS calls"), ("mailchimp_calls", 8, "MC calls"), ("calls_per_contact", 10, "calls/ct"),
            ("hubspot_writes", 9, "HS writes"), ("mailchimp_writes", 9, "MC writes"),
            ("hubspot_writes_per_changed", 11, "HS w/chg"), ("mailchimp_writes_per_changed", 11, "MC w/chg"),
            ("hubspot_429", 6, "HS 429"), ("mailchimp_429", 6, "MC 429")]
    print(" ".join(f"{h:>{w}}" if i else f"{h:<{w}}" for i, (_, w, h) in enumerate(cols)))
    for r in rows:
        cells = []
        for i, (k, w, _) in enumerate(cols):
            v = r.get(k)
            text = "-" if v is None else f"{v}"
            cells.append(f"{text:>{w}}" if i else f"{text:<{w}}")
        print(" ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--contacts", type=int, default=10_000, help="people in the sandbox book")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--change", type=float, default=0.05, help="share of the book changed before run 2")
    parser.add_argument("--advance-hours", type=float, default=0.0,
                        help="date the new events this much after the newest synced one (moves the score watermark)")
    parser.add_argument("--plan", default="starter", choices=("starter", "professional", "unlimited"),
                        help="HubSpot plan of the simulator and connector (unlimited: the vendor is not the bound)")
    parser.add_argument("--fast", action="store_true", help="HubSpot rate window of 1 s instead of the real 10 s")
    parser.add_argument("--no-change-only", action="store_true",
                        help="skip the change run: first run, then the no-change run (the change run is measured "
                             "without this flag)")
    parser.add_argument("--profile", default="", help="write a cProfile of the no-change run to this file")
    parser.add_argument("--no-change-runs", type=int, default=1,
                        help="no-change runs after the change run (on a shared machine: several samples of one book)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "bench_sync.json"))
    args = parser.parse_args(argv)
    window = 1.0 if args.fast else 10.0
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="segsync-bench-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        with start_sandbox(contacts=args.contacts, seed=args.seed, hubspot_plan=args.plan,
                           window_seconds=window) as sb:
            sandbox_s = round(time.perf_counter() - t0, 2)
            print(f"sandbox: {len(sb.book.people):,} people, {len(sb.book.events):,} events, ready in {sandbox_s} s "
                  f"(HubSpot {args.plan}, window {window:g} s)", flush=True)
            config = write_config(tmp, sb)
            rows = [measure(sb, "1 first run", config, window, 0)]
            print(f"run 1: {rows[-1]['status']} in {rows[-1]['seconds']} s", flush=True)
            changes: dict[str, int] = {}
            if not args.no_change_only:
                changes = change_book(sb, args.change, args.seed, args.advance_hours)
                print(f"changed at the vendors: {changes}", flush=True)
                # Pulls read up to the run's start floored to the second (Mailchimp's resolution): a
                # change made in the same second as the run starts belongs to the next run.
                time.sleep(1.5)
                rows.append(measure(sb, f"2 after {args.change:.0%} change", config, window, changes["people"]))
                print(f"run 2: {rows[-1]['status']} in {rows[-1]['seconds']} s", flush=True)
            for i in range(max(1, args.no_change_runs)):
                name = "3 no change" + (f" ({i + 1})" if args.no_change_runs > 1 else "")
                profile = Path(args.profile) if args.profile and not i else None
                rows.append(measure(sb, name, config, window, 0, profile))
                print(f"{name}: {rows[-1]['status']} in {rows[-1]['seconds']} s", flush=True)
            people = len(sb.book.people)
    print()
    print_table(rows)
    for r in rows:
        print(f"\n{r['run']}: plan changes {r['plan_changes']} {r['plan_destinations']}, pushed {r['pushed']}, "
              f"write records HS {r['hubspot_write_records']} / MC {r['mailchimp_write_records']}; scores "
              + ("reused" if r["scores_reused"] else f"computed (changed: {', '.join(r['rescored_because']) or '-'})"))
        for v in VENDORS:
            eps = ", ".join(f"{ep} x{n}" for ep, n in r["by_endpoint"][v].items())
            print(f"  {v}: {eps or '-'}")
            recs = ", ".join(f"{ep} {n}" for ep, n in r["write_records_by_endpoint"][v].items())
            print(f"  {v} records written: {recs or '-'}")
    quiet = sum(r["writes"] for r in rows if r["run"].startswith("3 "))
    print(f"\nwrite calls on the no-change run(s): {quiet} (design: 0)")
    rss = peak_rss_mb()
    print(f"peak RSS {rss:,.0f} MB (this process, simulators included); total {time.perf_counter() - began:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "at": datetime.now(UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
        "command": " ".join(["python bench/bench_sync.py", *(sys.argv[1:] if argv is None else argv)]),
        "people": people, "seed": args.seed, "hubspot_plan": args.plan, "window_seconds": window,
        "advance_hours": args.advance_hours, "sandbox_start_s": sandbox_s, "changes": changes,
        "no_change_write_calls": quiet,
        "peak_rss_mb": rss, "results": rows}, indent=2, default=str))
    print(f"wrote {out}")
    return 0  # a run that ends with failed records is a result to read, not a crash


if __name__ == "__main__":
    raise SystemExit(main())

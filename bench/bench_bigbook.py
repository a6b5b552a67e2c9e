"""A CSV-export book of N contacts synced by the CLI in a child process: wall, CPU and peak memory of segsync itself.

    .venv/bin/python bench/bench_bigbook.py --contacts 100000 [--events-per-contact 8] [--max-rss-mb 6000]

The book (``sandbox.csvbook``: contacts.csv + events.csv, streamed to disk) is written to a temporary
folder (or ``--dir``); then ``segsync sync CONFIG --json`` runs twice in fresh processes with a SQLite
store: the first run (everything new), then a run with nothing changed. For each run: wall time, CPU
(user + system of the child), the child's peak RSS (``os.wait4`` ru_maxrss), the RSS sampled every
0.5 s (so a run killed by ``--max-rss-mb`` still says how far it got), rows pulled, plan counts and
records written. A baseline child (the same command on a 50-contact book) gives what the imports alone
cost, so "own MB" is the run's peak minus that.

``--max-rss-mb`` kills a child whose RSS passes it (the machine is shared; no swap): the result then
says which phase the run had reached (from its log) and the RSS at that moment.
Writes bench/out/bench_bigbook_<N>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.csvbook import BookFiles, write_book_config, write_csv_book  # noqa: E402 - after the path fix for direct runs


def write_config(folder: Path, book: Path) -> Path:
    """A one-firm config over ``book``'s CSV files, with its store, models and output in ``folder``."""
    return write_book_config(folder, book, tenant="big-firm")


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def run_sync(config: Path, max_rss_mb: float | None = None, log_path: Path | None = None) -> dict[str, Any]:
    """``segsync sync CONFIG --json`` in a fresh process: its report plus wall, CPU and peak RSS (MB)."""
    env = {**os.environ, "CI": "true", "PYTHONPATH": str(ROOT)}
    log_fh = log_path.open("w") if log_path else subprocess.DEVNULL
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "sync", "sync", str(config), "--json"], cwd=config.parent,
                            stdout=subprocess.PIPE, stderr=log_fh, env=env, text=True)
    samples: list[tuple[float, int]] = []
    killed: list[int] = []

    def watch() -> None:
        while proc.poll() is None:
            kb = _rss_kb(proc.pid)
            samples.append((round(time.monotonic() - started, 1), kb))
            if max_rss_mb and kb > max_rss_mb * 1024 and not killed:
                killed.append(kb)
                os.kill(proc.pid, signal.SIGKILL)
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    watcher.join()
    if log_path:
        log_fh.close()  # type: ignore[union-attr]
    result: dict[str, Any] = {
        "exit": proc.returncode, "wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_mb": round(usage.ru_maxrss / 1024, 1), "killed_at_mb": round(killed[0] / 1024) if killed else None,
        "rss_samples": samples[:: max(1, len(samples) // 200)],
    }
    try:
        reports = json.loads(out)
    except ValueError:
        result["stdout_tail"] = out[-2000:]
        return result
    report = reports[0] if isinstance(reports, list) else reports.get("runs", [reports])[0]
    result["summary"] = summarize(report)
    return result


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Rows pulled, plan counts, records written from one run's ``--json`` report."""
    plan = report.get("plan", {})
    push = report.get("push", {}) or {}
    return {
        "status": report.get("status"),
        "pulled": {k: {f: v.get(f, 0) for f in ("records", "events", "new", "changed", "pages")}
                   for k, v in report.get("pull", {}).items()},
        "contacts": report.get("contacts", {}),
        "scored": (report.get("scoring") or {}).get("scored"),
        "models": {k: {"auc": (v.get("metrics") or {}).get("backtest_roc_auc"),
                       "baseline_auc": (v.get("metrics") or {}).get("baseline_roc_auc"),
                       "passed": ((v.get("metrics") or {}).get("gate") or {}).get("passed"), "reused": v.get("reused")}
                   for k, v in ((report.get("scoring") or {}).get("models") or {}).items()},
        "insufficient": (report.get("scoring") or {}).get("insufficient"),
        "plan": {k: plan.get(k) for k in ("total_changes", "destinations") if k in plan},
        "push_totals": push.get("totals", {}),
        "writes": (report.get("api", {}).get("crm", {}) or {}).get("output_writes"),
        "error": report.get("error"),
    }


def existing_book(folder: Path) -> BookFiles | None:
    """A book written before into ``folder`` (counted from its files), or None."""
    paths = folder / "contacts.csv", folder / "events.csv"
    if not all(p.exists() for p in paths):
        return None
    counts = []
    for path in paths:
        with path.open("rb") as fh:
            counts.append(sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b"")) - 1)
    return BookFiles(paths[0], paths[1], counts[0], counts[1], 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--contacts", type=int, default=20_000)
    ap.add_argument("--events-per-contact", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-rss-mb", type=float, default=6000.0, help="kill a child past this RSS (0: never)")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--runs", choices=("both", "first"), default="both")
    ap.add_argument("--reuse-book", action="store_true", help="use the book already in --dir/book if there is one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bigbook-") as tmp:
        work = args.dir or Path(tmp)
        t0 = time.monotonic()
        book = existing_book(work / "book") if args.reuse_book else None
        book = book or write_csv_book(work / "book", args.contacts, args.events_per_contact, args.seed)
        gen_s = time.monotonic() - t0
        print(f"book: {book.contacts:,} contacts, {book.events:,} events ({book.upgrades:,} upgrades), "
              f"{(book.contacts_path.stat().st_size + book.events_path.stat().st_size) / 1e6:.0f} MB of CSV "
              f"in {gen_s:.0f} s", flush=True)
        tiny = write_csv_book(work / "tiny", 50, args.events_per_contact, args.seed)
        base = run_sync(write_config(work / "base", tiny.contacts_path.parent))
        print(f"baseline child (50 contacts): peak {base['peak_mb']} MB, wall {base['wall_s']} s", flush=True)
        config = write_config(work / "run", book.contacts_path.parent)
        out: dict[str, Any] = {"contacts": book.contacts, "events": book.events, "baseline": base, "runs": {},
                               "load_before": os.getloadavg()}
        for name in ("first", "no_change") if args.runs == "both" else ("first",):
            res = run_sync(config, args.max_rss_mb or None, work / f"{name}.log")
            res["own_mb"] = round(res["peak_mb"] - base["peak_mb"], 1)
            res["load_after"] = [round(x, 2) for x in os.getloadavg()]
            out["runs"][name] = res
            print(f"{name}: exit {res['exit']} wall {res['wall_s']} s cpu {res['cpu_s']} s peak {res['peak_mb']} MB "
                  f"(own {res['own_mb']} MB) killed_at {res['killed_at_mb']} load {res['load_after']}\n  "
                  f"{json.dumps(res.get('summary', res.get('stdout_tail')))}", flush=True)
            if res["exit"] not in (0, 1):
                print((work / f"{name}.log").read_text()[-3000:], flush=True)
                break
    dest = ROOT / "bench" / "out"
    dest.mkdir(exist_ok=True)
    (dest / f"bench_bigbook_{args.contacts}.json").write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()

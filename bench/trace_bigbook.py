"""Where a CSV-book sync's memory goes: tracemalloc peak per phase and the top allocation sites.

    .venv/bin/python bench/trace_bigbook.py --contacts 20000 [--events-per-contact 8] [--top 15]

Runs the first sync of a ``sandbox.csvbook`` book in this process (SQLite store in a temporary
folder) with tracemalloc on. Each phase of the run (pull, gate, score, plan, push) gets its own
peak (Python allocations, numpy/pandas buffers included; not the interpreter and libraries
themselves), and a snapshot is taken at the end of the gate, score and plan phases, when what they
built is still held: its top sites (grouped by the first frame inside segsync) with their share.
tracemalloc slows the run 2-4x; the numbers are bytes, not time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_bigbook import write_config  # noqa: E402

from sandbox.csvbook import write_csv_book  # noqa: E402
from sync.config.models import load_config  # noqa: E402
from sync.run import pipeline  # noqa: E402
from sync.run.pipeline import RunOptions, run_tenant  # noqa: E402
from sync.store import open_store  # noqa: E402

PHASES = ("_pull_all", "_gate", "_score", "_plan", "_push")
SNAPSHOT_AFTER = ("_gate", "_score", "_plan")
MB = 1024 * 1024


def _ours(trace: tracemalloc.Traceback) -> str:
    """The innermost frame in segsync's own code (else the innermost frame), as file:line."""
    for frame in reversed(trace):  # tracemalloc orders frames oldest first: start from the allocation
        if str(ROOT) in frame.filename and "/.venv/" not in frame.filename:
            return f"{Path(frame.filename).relative_to(ROOT)}:{frame.lineno}"
    return f"{trace[0].filename}:{trace[0].lineno}"


def top_sites(snapshot: tracemalloc.Snapshot, top: int) -> tuple[float, list[tuple[str, float, float]]]:
    """(total MB, [(site, MB, share)]) grouped by the innermost segsync frame."""
    sizes: dict[str, int] = {}
    for stat in snapshot.statistics("traceback"):
        site = _ours(stat.traceback)
        sizes[site] = sizes.get(site, 0) + stat.size
    total = sum(sizes.values())
    ranked = sorted(sizes.items(), key=lambda kv: -kv[1])[:top]
    return total / MB, [(site, size / MB, size / total) for site, size in ranked]


def instrument(report: dict[str, Any], top: int) -> None:
    """Wrap the run's phases: peak per phase, a snapshot after some of them."""
    for name in PHASES:
        original: Callable[..., Any] = getattr(pipeline.TenantRun, name)

        def wrapped(self: Any, *args: Any, __name: str = name, __original: Callable[..., Any] = original) -> Any:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            result = __original(self, *args)
            current, peak = tracemalloc.get_traced_memory()
            entry = {"held_before_mb": round(before / MB, 1), "peak_mb": round(peak / MB, 1),
                     "held_after_mb": round(current / MB, 1)}
            if __name in SNAPSHOT_AFTER:
                total, sites = top_sites(tracemalloc.take_snapshot(), top)
                entry["snapshot_mb"] = round(total, 1)
                entry["top"] = [(s, round(mb, 1), f"{share:.1%}") for s, mb, share in sites]
            report[__name] = entry
            return result

        setattr(pipeline.TenantRun, name, wrapped)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--contacts", type=int, default=20_000)
    ap.add_argument("--events-per-contact", type=float, default=8.0)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bigbook-trace-") as tmp:
        book = write_csv_book(Path(tmp) / "book", args.contacts, args.events_per_contact)
        config = write_config(Path(tmp) / "run", book.contacts_path.parent)
        cfg = load_config(config)
        store = open_store(cfg.store)
        report: dict[str, Any] = {}
        instrument(report, args.top)
        tracemalloc.start(12)
        result = run_tenant(cfg, cfg.tenants[0], store, RunOptions(), base_dir=config.parent)
        tracemalloc.stop()
    print(f"{args.contacts:,} contacts, {book.events:,} events: status {result['status']}, "
          f"{result['plan'].get('total_changes')} changes")
    for name, entry in report.items():
        print(f"{name}: held before {entry['held_before_mb']} MB, peak {entry['peak_mb']} MB, "
              f"held after {entry['held_after_mb']} MB")
        for site, mb, share in entry.get("top", []):
            print(f"    {mb:8.1f} MB {share:>6}  {site}")


if __name__ == "__main__":
    main()

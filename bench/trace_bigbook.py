"""Where a CSV-book sync's memory goes after the pull: RSS per phase, and (``--trace``) tracemalloc's top sites.

    .venv/bin/python bench/trace_bigbook.py --contacts 100000 --work /tmp/trace100k [--trace] [--top 15]
    .venv/bin/memray run --aggregate -o OUT.bin bench/trace_bigbook.py --contacts 100000 --work /tmp/trace100k

Runs the first sync of a ``sandbox.csvbook`` book in this process (SQLite store). With ``--work`` the book and
the store as it is right after the pull are kept there (``book/``, ``pulled.db``): the first invocation pulls
(not measured) and stops, each later one starts from a copy of that store, so the phases after the pull -
consent gate, scoring, plan, push - can be measured again and again without pulling 100,000 contacts each time
(the run's own pull then finds the files unchanged and reads nothing). Models are trained afresh every time.

Per phase (gate, score, plan, push): the process's RSS before and after, and its peak RSS during the phase
(``VmHWM`` reset through ``/proc/self/clear_refs`` before each phase). ``--trace`` adds tracemalloc (Python and
numpy/pandas allocations; slows the run 2-4x): per phase the traced peak, and a snapshot at the end of the gate,
score and plan phases (what they hand on) with its top sites grouped by the innermost frame in segsync's code.
For where the peak itself is, run the same command under memray (``memray tree`` / ``memray stats`` of the output
show the allocations live at the high-water mark).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_bigbook import existing_book, write_config  # noqa: E402

from sandbox.csvbook import write_csv_book  # noqa: E402
from sync.config.models import load_config  # noqa: E402
from sync.run import pipeline  # noqa: E402
from sync.run.pipeline import RunOptions, run_tenant  # noqa: E402
from sync.store import open_store  # noqa: E402

PHASES = ("_pull_all", "_gate", "_score", "_plan", "_push")
SNAPSHOT_AFTER = ("_gate", "_score", "_plan")
MB = 1024 * 1024


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _reset_hwm() -> None:
    """Reset the kernel's peak RSS of this process to its current RSS (Linux ``clear_refs`` 5)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


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
    return total / MB, [(site, size / MB, size / total if total else 0.0) for site, size in ranked]


def instrument(report: dict[str, Any], top: int, stop_after_pull: bool) -> None:
    """Wrap the run's phases: RSS (and tracemalloc, when on) per phase, a snapshot after some of them."""
    for name in PHASES:
        original: Callable[..., Any] = getattr(pipeline.TenantRun, name)

        def wrapped(self: Any, *args: Any, __name: str = name, __original: Callable[..., Any] = original) -> Any:
            tracing = tracemalloc.is_tracing()
            if tracing:
                tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            rss_before = _status_mb("VmRSS")
            _reset_hwm()
            began = time.process_time()
            result = __original(self, *args)
            entry: dict[str, Any] = {"cpu_s": round(time.process_time() - began, 1), "rss_before_mb": rss_before,
                                     "rss_peak_mb": _status_mb("VmHWM"), "rss_after_mb": _status_mb("VmRSS")}
            if tracing:
                current, peak = tracemalloc.get_traced_memory()
                entry.update({"traced_before_mb": round(before / MB, 1), "traced_peak_mb": round(peak / MB, 1),
                              "traced_after_mb": round(current / MB, 1)})
                if __name in SNAPSHOT_AFTER:
                    total, sites = top_sites(tracemalloc.take_snapshot(), top)
                    entry["snapshot_mb"] = round(total, 1)
                    entry["top"] = [(s, round(mb, 1), f"{share:.1%}") for s, mb, share in sites]
            report[__name] = entry
            if __name == "_pull_all" and stop_after_pull:
                self.opts.stop.set()  # the run ends here as a stopped one: every page and cursor is stored
            return result

        setattr(pipeline.TenantRun, name, wrapped)


def prepare(work: Path, contacts: int, per_contact: float) -> tuple[Path, bool]:
    """The run's config in ``work/run`` (fresh store and models), over the book in ``work/book`` (written if
    missing); the store starts as the kept ``pulled.db`` when there is one. Returns (config, pulled already)."""
    book = existing_book(work / "book") or write_csv_book(work / "book", contacts, per_contact)
    shutil.rmtree(work / "run", ignore_errors=True)
    config = write_config(work / "run", book.contacts_path.parent)
    pulled = work / "pulled.db"
    if pulled.exists():
        shutil.copyfile(pulled, work / "run" / "segsync.db")
    return config, pulled.exists()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--contacts", type=int, default=20_000)
    ap.add_argument("--events-per-contact", type=float, default=8.0)
    ap.add_argument("--work", type=Path, default=None, help="keep the book and the pulled store here")
    ap.add_argument("--trace", action="store_true", help="tracemalloc too (slow)")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bigbook-trace-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        config, pulled = prepare(work, args.contacts, args.events_per_contact)
        cfg = load_config(config)
        store = open_store(cfg.store)
        report: dict[str, Any] = {}
        keep_pull = args.work is not None and not pulled
        instrument(report, args.top, stop_after_pull=keep_pull)
        if args.trace and not keep_pull:
            tracemalloc.start(12)
        result = run_tenant(cfg, cfg.tenants[0], store, RunOptions(), base_dir=config.parent)
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        store.engine.dispose()
        if keep_pull:
            shutil.copyfile(work / "run" / "segsync.db", work / "pulled.db")
            print(f"pulled and kept in {work / 'pulled.db'}: run again to measure the phases after the pull")
    plan, scoring = result.get("plan") or {}, result.get("scoring") or {}
    print(f"{args.contacts:,} contacts: status {result['status']}, {plan.get('total_changes')} changes, "
          f"scored {scoring.get('scored')}")
    for name, entry in report.items():
        print(f"{name}: cpu {entry['cpu_s']} s, RSS before {entry['rss_before_mb']} MB, peak {entry['rss_peak_mb']} "
              f"MB, after {entry['rss_after_mb']} MB" + (f"; traced before {entry['traced_before_mb']} MB, peak "
                                                          f"{entry['traced_peak_mb']} MB, after "
                                                          f"{entry['traced_after_mb']} MB" if "traced_peak_mb" in entry
                                                          else ""))
        for site, mb, share in entry.get("top", []):
            print(f"    {mb:8.1f} MB {share:>6}  {site}")
    dest = ROOT / "bench" / "out"
    dest.mkdir(exist_ok=True)
    (dest / f"trace_bigbook_{args.contacts}.json").write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()

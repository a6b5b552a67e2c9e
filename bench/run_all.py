"""Run every benchmark in bench/ as its own process, then write one summary.

    .venv/bin/python bench/run_all.py [--quick] [--only sync,hubspot] [--out-dir DIR]

Each script runs with this interpreter and writes its JSON into the output directory
(``bench/out``, or ``bench/out/quick`` with ``--quick`` so quick numbers never replace full ones).
The summary, one table per benchmark, goes to ``summary.md`` there and to stdout.
``--quick`` passes smaller sizes (a few minutes in all on a 2-core VM); without it each script
runs at its own defaults, which takes much longer (bench_sync alone is several minutes at
HubSpot's real Starter rate limit).

Exit status: 0 when every script finished with status 0, 1 when any crashed (the summary
says which), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


@dataclass(frozen=True)
class Bench:
    name: str  # the script is bench/bench_<name>.py and writes bench_<name>.json
    quick: tuple[str, ...]  # arguments for --quick
    out_is_dir: bool = False  # bench_scoring takes a directory for --out
    columns: tuple[str, ...] = ()  # columns of the results table; empty: every scalar field

    @property
    def script(self) -> Path:
        return BENCH / f"bench_{self.name}.py"

    def json_path(self, out_dir: Path) -> Path:
        return out_dir / f"bench_{self.name}.json"

    def command(self, out_dir: Path, quick: bool) -> list[str]:
        out = str(out_dir if self.out_is_dir else self.json_path(out_dir))
        return [sys.executable, str(self.script), *(self.quick if quick else ()), "--out", out]


BENCHES = (
    Bench("sync", ("--contacts", "2500", "--fast"),
          columns=("run", "status", "seconds", "cpu_seconds", "run_peak_rss_mb", "contacts", "contacts_per_s",
                   "hubspot_calls", "mailchimp_calls",
                   "calls_per_contact", "hubspot_writes", "mailchimp_writes", "changed_people",
                   "hubspot_writes_per_changed", "mailchimp_writes_per_changed", "plan_changes", "hubspot_429",
                   "mailchimp_429", "peak_rss_mb")),
    Bench("hubspot", ("--contacts", "1000", "--changed", "500", "--window", "1")),
    Bench("mailchimp", ("--members", "1000")),
    Bench("scoring", ("--contacts", "50000", "--book", "2000"), out_is_dir=True),
    Bench("consent", ("--contacts", "10000")),
    Bench("wealthbox", ("--contacts", "1000", "--changed", "200"),
          columns=("scenario", "records", "changed", "calls", "writes", "calls_per_changed",
                   "api_minimum_per_changed")),
    Bench("redtail", ("--contacts", "1000", "--changed", "100"),
          columns=("scenario", "changed", "calls", "writes", "minimum_calls", "calls_per_changed",
                   "minimum_per_changed", "seconds")),
    Bench("webhook", ("--rates", "50,100", "--seconds", "5"),
          columns=("rate", "sent", "ok", "shed_429", "errors", "p50_ms", "p99_ms", "max_ms", "ledger_receipts",
                   "ledger_equals_ok", "group_commits", "requests_per_commit")),
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    return str(value).replace("|", "\\|")


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _flat_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(_scalar(v) for v in value.values())


def table(rows: list[dict[str, Any]], columns: Iterable[str] = ()) -> list[str]:
    """A markdown table of ``rows``: the given columns, or every scalar (or flat-dict) field in order seen."""
    cols = list(columns)
    if not cols:
        for r in rows:
            cols += [k for k, v in r.items() if k not in cols and (_scalar(v) or _flat_dict(v))]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return lines


def flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"a": {"b": 1}}`` -> ``[("a.b", 1)]``; lists are left out (they have their own tables)."""
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += flatten(value, name + ".")
        elif _scalar(value):
            out.append((name, value))
    return out


def render(bench: Bench, data: dict[str, Any]) -> list[str]:
    """One section: the scalar facts as a list, then the results (or every metric) as a table."""
    lines = [f"## bench_{bench.name}", ""]
    results = data.get("results")
    if isinstance(results, list) and results and all(isinstance(r, dict) for r in results):
        facts = [(k, v) for k, v in data.items() if _scalar(v) or _flat_dict(v)]
        lines += [f"- {k}: {_cell(v)}" for k, v in facts] + [""]
        lines += table(results, bench.columns)
    else:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in flatten(data)]
    return [*lines, ""]


def summary(outcomes: list[dict[str, Any]], quick: bool, out_dir: Path) -> str:
    when = datetime.now(UTC).isoformat(timespec="seconds")
    lines = [f"# segsync benchmarks{' (quick)' if quick else ''}", "",
             f"{when}, Python {platform.python_version()}, {platform.machine()}, "
             f"command: `python bench/run_all.py{' --quick' if quick else ''}`", "",
             "| bench | exit | seconds | json |", "|---|---|---|---|"]
    lines += [f"| bench_{o['bench'].name} | {o['rc']} | {o['seconds']:.0f} | {'yes' if o['data'] else 'missing'} |"
              for o in outcomes]
    lines.append("")
    for o in outcomes:
        if o["data"] is not None:
            lines += render(o["bench"], o["data"])
        else:
            lines += [f"## bench_{o['bench'].name}", "", f"No results: {o['problem']}", ""]
    return "\n".join(lines)


def run(bench: Bench, out_dir: Path, quick: bool) -> dict[str, Any]:
    """Run one script (its output streams through) and read its JSON back."""
    target = bench.json_path(out_dir)
    target.unlink(missing_ok=True)  # never report a previous run's numbers as this one's
    cmd = bench.command(out_dir, quick)
    print(f"\n=== bench_{bench.name}: {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))}",
          flush=True)
    started = time.perf_counter()
    rc = subprocess.run(cmd, cwd=ROOT, check=False).returncode
    seconds = time.perf_counter() - started
    data, problem = None, ""
    if rc != 0:
        problem = f"exited with status {rc} (see its output above)"
    elif not target.exists():
        problem = f"finished but wrote no {target}"
    else:
        try:
            data = json.loads(target.read_text())
        except (OSError, ValueError) as exc:
            problem = f"unreadable {target}: {exc}"
    return {"bench": bench, "rc": rc, "seconds": seconds, "data": data, "problem": problem}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a few minutes in all")
    parser.add_argument("--only", default="", help="comma-separated names: " + ",".join(b.name for b in BENCHES))
    parser.add_argument("--out-dir", type=Path, default=None, help="default bench/out (bench/out/quick with --quick)")
    args = parser.parse_args(argv)
    names = [n.strip().removeprefix("bench_") for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - {b.name for b in BENCHES})
    if unknown:
        parser.error(f"--only: unknown bench {', '.join(unknown)}; choose from {', '.join(b.name for b in BENCHES)}")
    chosen = [b for b in BENCHES if not names or b.name in names]
    out_dir = args.out_dir or (BENCH / "out" / "quick" if args.quick else BENCH / "out")
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = [run(b, out_dir, args.quick) for b in chosen]
    text = summary(outcomes, args.quick, out_dir)
    path = out_dir / "summary.md"
    path.write_text(text + "\n")
    print("\n" + text)
    print(f"wrote {path}")
    crashed = [f"bench_{o['bench'].name}" for o in outcomes if o["rc"] != 0]
    if crashed:
        print(f"crashed: {', '.join(crashed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

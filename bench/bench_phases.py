"""Memory of the consent gate, plan and push of one first sync (issue 21), at several book sizes.

    .venv/bin/python bench/bench_phases.py [--contacts 5000 20000] [--chunk N]

Each size runs one first sync (every contact new: the largest plan) against the in-memory vendors of the
tests (``tests/fakes.py``: no HTTP, so the store and the pipeline are all that is measured) with a SQLite
store in a temporary folder. tracemalloc is on from the start of the gate to the end of the push; per phase
it reports the peak of traced memory above what was traced when the phase began, and what the phase left
behind (its result, held by the next phase). Scoring runs between the gate and the plan, traced but not
reported (its memory is the scorer's). Prints a table and writes bench/out/bench_phases.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sync.config import load_config_text  # noqa: E402 - after the path fix for direct runs
from sync.run.pipeline import RunOptions, TenantRun  # noqa: E402
from sync.store import open_store  # noqa: E402
from tests.fakes import FakeCrm, FakeEsp, make_book  # noqa: E402
from tests.test_pipeline import CONFIG, CONSENT  # noqa: E402

MB = 1024 * 1024


class Measured(TenantRun):
    """A run whose gate, plan and push are measured (the phases' signatures vary between versions: ``*args``)."""

    phases: dict[str, dict[str, float]]

    def _measure(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        if not tracemalloc.is_tracing():
            tracemalloc.start()
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        began = time.process_time()
        out = fn(*args)
        current, peak = tracemalloc.get_traced_memory()
        self.phases[name] = {"peak_mb": round((peak - start) / MB, 1), "left_mb": round((current - start) / MB, 1),
                             "cpu_s": round(time.process_time() - began, 2)}
        return out

    def _gate(self, *args: Any) -> Any:
        return self._measure("gate", super()._gate, *args)

    def _plan(self, *args: Any) -> Any:
        return self._measure("plan", super()._plan, *args)

    def _push(self, *args: Any) -> Any:
        return self._measure("push", super()._push, *args)


def measure(contacts: int, chunk: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        cfg = load_config_text(CONFIG.format(consent=CONSENT, store=url, models=f"{tmp}/models"))
        store = open_store(url)
        people, events = make_book(contacts)
        emails = [p["email"] for p in people.values()]
        crm = FakeCrm(people, events)
        esp = FakeEsp(people, unsubscribed=set(emails[: contacts // 20]), missing=set(emails[-contacts // 50:]))
        run = Measured(cfg, cfg.tenants[0], store, crm, esp, RunOptions())
        run.phases = {}
        if chunk and hasattr(run, "book"):
            run.book.size = chunk
        started = time.monotonic()
        report = run.run()
        tracemalloc.stop()
        store.close()
    return {"contacts": contacts, "events": len(events), "status": report["status"],
            "changes": report["plan"]["total_changes"], "wall_s": round(time.monotonic() - started, 1),
            "phases": run.phases}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--contacts", type=int, nargs="+", default=[5_000, 20_000])
    parser.add_argument("--chunk", type=int, default=None, help="contacts per chunk (default: the pipeline's)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "bench_phases.json"))
    args = parser.parse_args()
    rows = [measure(n, args.chunk) for n in args.contacts]
    print("| contacts | changes | phase | peak above its start MB | left for the next phase MB | CPU s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        for name, p in r["phases"].items():
            print(f"| {r['contacts']:,} | {r['changes']:,} | {name} | {p['peak_mb']} | {p['left_mb']} | {p['cpu_s']} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

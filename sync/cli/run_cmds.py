"""The run commands: sync, runs, serve, sandbox, demo (registered on the group in ``sync.cli.app``)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from connectors.kit.http import redact
from core.errors import InputError, SegsyncError
from sync.cli.common import CONFIG_ARG, console, emit_json, err_console, open_config, select_tenants


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[Callable[[str, int, int | None], None] | None]:
    """Progress on a terminal (never under CI or when piped): one line per pull stream / push destination."""
    from sync.run.pipeline import in_ci

    if not enabled or in_ci() or not console.is_terminal:
        yield None
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bars:
        tasks: dict[str, Any] = {}

        def advance(task: str, n: int, total: int | None) -> None:
            if task not in tasks:
                tasks[task] = bars.add_task(task, total=total)
            bars.advance(tasks[task], n)

        yield advance


@contextlib.contextmanager
def graceful_stop() -> Iterator[threading.Event]:
    """SIGTERM/SIGINT ask the run to stop after the batch in flight (a second Ctrl-C aborts)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        err_console.print("stopping after the batch in flight (again to abort)...")
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def sync_tenants(config: Path, tenant_ids: tuple[str, ...], *, dry_run: bool, force: bool, retrain: bool,
                 show_progress: bool = True) -> list[dict[str, Any]]:
    from sync.run.pipeline import RunOptions, run_tenant
    from sync.run.report import RunReport
    from sync.store.interface import TenantBusy

    cfg, store = open_config(config)
    reports = []
    try:
        with graceful_stop() as stop, progress_bars(show_progress) as progress:
            for tenant in select_tenants(cfg, tenant_ids):
                opts = RunOptions(dry_run=dry_run, force=force, retrain=retrain, stop=stop, progress=progress)
                try:
                    reports.append(run_tenant(cfg, tenant, store, opts, base_dir=config.parent))
                except TenantBusy as exc:
                    reports.append(RunReport(tenant=tenant.id, status="skipped", error=str(exc)).to_dict())
                except SegsyncError as exc:
                    # One firm's broken token or file must not keep the agency's other firms from syncing.
                    if len(cfg.tenants) == 1 or (tenant_ids and len(tenant_ids) == 1):
                        raise
                    reports.append(RunReport(tenant=tenant.id, status="error", error=redact(str(exc))).to_dict())
                if stop.is_set():
                    break
    finally:
        store.close()
    return reports


@click.command("sync")
@CONFIG_ARG
@click.option(
    "--tenant", "tenant_ids", multiple=True, metavar="ID", help="Only this tenant (repeatable). Default: all."
)
@click.option("--dry-run", is_flag=True, help="Pull and plan, print what would change and what it costs; send nothing.")
@click.option(
    "--force", is_flag=True, help="Apply a plan even if it changes more than max_change_share of the contacts."
)
@click.option("--retrain", is_flag=True, help="Retrain the models instead of reusing the saved ones.")
@click.option("--json", "as_json", is_flag=True, help="Print the run reports as JSON.")
def sync_cmd(
    config: Path, tenant_ids: tuple[str, ...], dry_run: bool, force: bool, retrain: bool, as_json: bool
) -> None:
    """Run the sync once: pull, check consent, score, plan, push.

    Exit 0 when every record ended sent or suppressed, 1 when some failed (they are
    retried next run), 2 for a config error or a plan refused by the change guard.
    """
    from sync.cli.report import print_runs
    from sync.run.pipeline import exit_code

    reports = sync_tenants(config, tenant_ids, dry_run=dry_run, force=force, retrain=retrain, show_progress=not as_json)
    if as_json:
        emit_json(reports)
    else:
        print_runs(console, reports)
    sys.exit(exit_code(reports))


@click.command("runs")
@CONFIG_ARG
@click.option("--tenant", "tenant_id", default=None, metavar="ID", help="Only this tenant's runs.")
@click.option("--limit", default=20, show_default=True, help="How many runs, newest first.")
@click.option("--show", "show_id", type=int, default=None, metavar="RUN", help="Print one run's full report.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def runs_cmd(config: Path, tenant_id: str | None, limit: int, show_id: int | None, as_json: bool) -> None:
    """List past runs (their stored reports), newest first."""
    from sync.cli.report import render_run, runs_table

    _cfg, store = open_config(config)
    try:
        rows = store.runs(tenant_id, limit=10_000 if show_id else limit)
    finally:
        store.close()
    if show_id is not None:
        match = [r for r in rows if r["id"] == show_id]
        if not match:
            raise InputError(f"no run #{show_id}" + (f" for tenant {tenant_id}" if tenant_id else ""))
        report = {**(match[0]["report"] or {}), "status": match[0]["status"]}
        emit_json(report) if as_json else console.print(render_run(report))
        return
    if as_json:
        emit_json(rows)
    else:
        console.print(runs_table(rows))


@click.command("sandbox")
@click.option("--contacts", default=2000, show_default=True, help="Size of the synthetic advisor book.")
@click.option("--seed", default=7, show_default=True, help="Random seed of the book.")
def sandbox_cmd(contacts: int, seed: int) -> None:
    """Serve local simulators of the supported vendors and print a config that uses them (Ctrl-C stops)."""
    from sandbox import start_sandbox
    from sandbox.demo import sandbox_banner

    with start_sandbox(contacts=contacts, seed=seed) as sb:
        console.print(sandbox_banner(sb))
        console.print("# a ready-to-use config (save as sandbox.yaml, then: segsync sync sandbox.yaml, "
                      "or segsync serve sandbox.yaml)", style="dim")
        # A schedule, so `segsync serve sandbox.yaml` syncs on its own (every 15 minutes) as a hosted firm would.
        click.echo(sb.config_yaml(schedule="*/15 * * * *"))
        console.print("serving; Ctrl-C to stop", style="dim")
        stopped = threading.Event()
        with contextlib.suppress(KeyboardInterrupt):
            stopped.wait()


@click.command("demo")
@click.option(
    "--contacts",
    default=2500,
    show_default=True,
    help="Contacts in the first firm's synthetic book (the second has half).",
)
@click.option(
    "--out",
    "out_dir",
    default="demo-out",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the demo's config, SQLite store and models go (recreated each time).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run reports as JSON.")
def demo_cmd(contacts: int, out_dir: Path, as_json: bool) -> None:
    """The whole product on your machine: sandbox vendors, two tenants, a mid-run opt-out, a no-op re-run."""
    from sandbox.demo import run_demo

    sys.exit(run_demo(out_dir, contacts, as_json=as_json))


@click.command("serve")
@CONFIG_ARG
@click.option("--listen", default=None, metavar="HOST:PORT", help="HOST:PORT (default: server.listen, 127.0.0.1:8080).")
def serve_cmd(config: Path, listen: str | None) -> None:
    """Hosted mode: scheduled syncs, consent webhooks, health and metrics in one process.

    Runs each tenant's schedule (cron in its time zone; a run missed while down runs once at
    start; never two runs of a tenant at once, across servers sharing PostgreSQL), takes consent
    webhooks (POST /hooks/TENANT/preferences, /hooks/TENANT/VENDOR/..., as `segsync check` lists them)
    and serves GET /healthz and /metrics. SIGTERM/Ctrl-C: running syncs stop after the batch in flight.
    """
    from sync.serve import serve

    serve(config, listen)


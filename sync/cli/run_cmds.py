"""The run commands: sync, runs, serve, sandbox, demo (registered on the group in ``sync.cli.app``)."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from connectors.kit.http import redact
from core.errors import ConfigError, InputError, SegsyncError
from sync.cli.common import CONFIG_ARG, console, emit_json, err_console, open_config, open_store_plainly, select_tenants

log = logging.getLogger("segsync.sync")

if TYPE_CHECKING:
    from sync.store.interface import Store

ProgressFn = Callable[[str, int, int | None], None]


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[Callable[[str], ProgressFn] | None]:
    """Progress on a terminal (never under CI or when piped): one line per firm and stage.

    Yields a factory: ``bars(firm)`` is the callback for one firm's run, so every line says whose it is
    (``harbor: pull crm.contacts 1,200/3,567``, ``harbor: score``, ``harbor: push esp.tags``).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from sync.run.pipeline import in_ci

    if not enabled or in_ci() or not console.is_terminal:
        yield None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bars:
        tasks: dict[str, Any] = {}

        def for_firm(firm: str) -> ProgressFn:
            def advance(task: str, n: int, total: int | None) -> None:
                name = f"{firm}: {task}"
                if name not in tasks:
                    tasks[name] = bars.add_task(name, total=total)
                elif total is not None:
                    bars.update(tasks[name], total=total)  # a vendor's count can arrive with a later page
                bars.advance(tasks[name], n)

            return advance

        yield for_firm


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


def sync_tenants(
    config: Path,
    tenant_ids: tuple[str, ...],
    *,
    dry_run: bool,
    force: bool,
    retrain: bool,
    show_progress: bool = True,
    report_errors: bool = False,
    **options: Any,
) -> list[dict[str, Any]]:
    """Run each selected firm once; a firm that fails, of any kind, is reported (status, time taken, error) and the
    next one runs. A lone firm's error is raised (one readable line and its exit code) unless ``report_errors`` asks
    for it as a report (``--json``: the failure is printed like any other run).

    ``options`` go to :class:`~sync.run.pipeline.RunOptions` as they are (full_refresh, select).
    """
    from sync.run.pipeline import RunOptions, run_tenant
    from sync.run.report import RunReport
    from sync.store.interface import TenantBusy

    plan_out: Path | None = options.pop("plan_out", None)
    plan_rows: list[dict[str, Any]] = []
    if plan_out is not None:
        options["plan_sink"] = lambda tenant, rows: plan_rows.extend({"tenant": tenant, **r} for r in rows)
    cfg, store = open_config(config)
    reports = []
    try:
        with graceful_stop() as stop, progress_bars(show_progress) as progress:
            for tenant in select_tenants(cfg, tenant_ids):
                opts = RunOptions(
                    dry_run=dry_run,
                    force=force,
                    retrain=retrain,
                    stop=stop,
                    progress=progress(tenant.id) if progress else None,
                    **options,
                )
                started = time.monotonic()
                before = max((r["id"] for r in store.runs(tenant.id, limit=1)), default=0)
                try:
                    reports.append(run_tenant(cfg, tenant, store, opts, base_dir=config.parent))
                except TenantBusy as exc:
                    reports.append(RunReport(tenant=tenant.id, status="skipped", error=str(exc)).to_dict())
                except Exception as exc:
                    if (len(cfg.tenants) == 1 or (tenant_ids and len(tenant_ids) == 1)) and not report_errors:
                        raise
                    message = str(exc) if isinstance(exc, SegsyncError) else f"unexpected {type(exc).__name__}: {exc}"
                    if not isinstance(exc, SegsyncError):
                        log.error("tenant %s failed", tenant.id, exc_info=True)
                    kind = "config" if isinstance(exc, (ConfigError, InputError)) else "run"
                    failed = RunReport(
                        tenant=tenant.id,
                        status="error",
                        error=redact(message),
                        dry_run=dry_run,
                        duration_s=round(time.monotonic() - started, 2),
                        extra={"error_kind": kind},
                    )
                    logged = _logged_report(store, tenant.id, before)
                    reports.append({**logged, "error_kind": kind} if logged is not None else failed.to_dict())
                if stop.is_set():
                    break
    finally:
        store.close()
        if plan_out is not None:
            from sync.run.plan_text import write_plan_csv

            n = write_plan_csv(plan_out, plan_rows)
            err_console.print(f"plan: {n:,} change(s) written to {plan_out}")
    return reports


def _logged_report(store: Store, tenant_id: str, after_run: int) -> dict[str, Any] | None:
    """The report the failed run logged itself (with its run number and how far it got), if it got that far."""
    for row in store.runs(tenant_id, limit=1):
        if row["id"] > after_run and row.get("report"):
            return {**row["report"], "run_id": row["id"], "status": row["status"]}
    return None


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
@click.option(
    "--full-refresh", is_flag=True, help="Pull every stream from the beginning (stored cursors are replaced)."
)
@click.option(
    "--select",
    "select",
    multiple=True,
    metavar="segment:NAME",
    help="Push only what concerns this segment (repeatable); consent clearing is always pushed.",
)
@click.option(
    "--plan-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE.csv",
    help="Write the whole plan (every change, with who, where and what) to a CSV file.",
)
@click.option("--enqueue", is_flag=True,
              help="Queue the run for `segsync worker` processes instead of running it here (PostgreSQL store).")
@click.option("--json", "as_json", is_flag=True, help="Print the run reports as JSON.")
def sync_cmd(
    config: Path,
    tenant_ids: tuple[str, ...],
    dry_run: bool,
    force: bool,
    retrain: bool,
    full_refresh: bool,
    select: tuple[str, ...],
    plan_out: Path | None,
    enqueue: bool,
    as_json: bool,
) -> None:
    """Run the sync once: pull, check consent, score, plan, push.

    Exit 0 when every record ended sent or suppressed, 1 when some failed (they are
    retried next run), 2 for a config error or a plan refused by the change guard.
    With --enqueue: queue one run per firm for the workers (above scheduled runs) and exit 0.
    """
    from sync.cli.report import print_runs
    from sync.run.pipeline import exit_code

    if enqueue:
        enqueue_runs(config, tenant_ids, as_json, dry_run=dry_run, force=force, retrain=retrain,
                     full_refresh=full_refresh, select=select, plan_out=plan_out)
        return
    if select:
        from sync.config.models import load_config
        from sync.run.select import parse_select

        cfg = load_config(config)
        select = parse_select(select, [s.name for t in select_tenants(cfg, tenant_ids) for s in t.segments])
    reports = sync_tenants(
        config,
        tenant_ids,
        dry_run=dry_run,
        force=force,
        retrain=retrain,
        show_progress=not as_json,
        full_refresh=full_refresh,
        select=select,
        plan_out=plan_out,
        report_errors=as_json,
    )
    if as_json:
        emit_json(reports)
    else:
        print_runs(console, reports)
    code = exit_code(reports)
    if len(reports) == 1 and reports[0].get("error_kind") == "config":
        code = 2  # the only tenant's config is wrong: the usage-error code, as without --json
    sys.exit(code)


def enqueue_runs(config: Path, tenant_ids: tuple[str, ...], as_json: bool, **local_only: Any) -> None:
    """``sync --enqueue``: queue a run of each selected firm; options that only a local run has are refused."""
    from sync.config.models import load_config
    from sync.workers.engine import enqueue_run, ensure_schema, make_app, require_postgres

    unsupported = [f"--{k.replace('_', '-')}" for k, v in local_only.items() if v]
    if unsupported:
        raise InputError(f"--enqueue queues a plain run; {', '.join(unsupported)} work(s) only in a local run")
    cfg = load_config(config)
    require_postgres(cfg)
    tenants = select_tenants(cfg, tenant_ids)
    store = open_store_plainly(cfg.store)
    try:
        ensure_schema(store.engine)
    finally:
        store.close()
    app = make_app(cfg, pool_size=1)
    with app.open():
        queued = {t.id: enqueue_run(app, t.id) for t in tenants}
    if as_json:
        emit_json([{"tenant": t, "job": job, "queued": job is not None} for t, job in queued.items()])
        return
    for tenant_id, job in queued.items():
        console.print(f"{tenant_id}: " + (f"run queued (job {job})" if job is not None
                                          else "a run is already waiting in the queue"))


@click.command("worker")
@CONFIG_ARG
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 16),
              help="Runs this process takes on at once (each waits mostly on vendor rate limits).")
@click.option("--name", default=None, metavar="NAME",
              help="How logs and the database name this worker (default host:pid).")
def worker_cmd(config: Path, concurrency: int, name: str | None) -> None:
    """A worker of the task engine: runs queued tenant runs and opt-out drains (PostgreSQL store).

    Start any number, on any machines sharing the store. They queue each firm's schedule ticks (once,
    whoever sees them), never run one firm twice at once, re-queue the job of a worker that died, and
    retry failed records with backoff. SIGTERM/Ctrl-C: running runs stop after the batch in flight and go
    back to the queue. See README, "Scaling out".
    """
    from sync.workers.process import run_worker

    logging.getLogger("segsync.workers").setLevel(min(logging.getLogger("segsync.workers").getEffectiveLevel(),
                                                      logging.INFO))
    run_worker(config, concurrency, name)


@click.command("runs")
@CONFIG_ARG
@click.option("--tenant", "tenant_id", default=None, metavar="ID", help="Only this tenant's runs.")
@click.option("--limit", default=20, show_default=True, help="How many runs, newest first.")
@click.option("--show", "show_id", type=int, default=None, metavar="RUN", help="Print one run's full report.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def runs_cmd(config: Path, tenant_id: str | None, limit: int, show_id: int | None, as_json: bool) -> None:
    """List past runs (their stored reports), newest first."""
    from sync.cli.report import render_run, runs_table

    cfg, store = open_config(config)
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
        console.print(runs_table(rows, {t.id: t.timezone for t in cfg.tenants}))


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
    # 5,000: measured, the upgrade model is shown better than the naive rule out of sample on this book (gain
    # +0.057, 95% CI +0.025 to +0.089); at 2,500 the interval includes zero and the headline segment stays empty.
    default=5000,
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
@click.option("--workers", "workers", type=click.Choice(["embedded", "external"]), default="embedded",
              show_default=True,
              help="embedded: this process runs the schedules and drains; external: `segsync worker` processes "
                   "run them and this one queues drains after webhooks (PostgreSQL store).")
def serve_cmd(config: Path, listen: str | None, workers: str) -> None:
    """Hosted mode: scheduled syncs, consent webhooks, health and metrics in one process.

    Runs each tenant's schedule (cron in its time zone; a run missed while down runs once at
    start; never two runs of a tenant at once, across servers sharing PostgreSQL), takes consent
    webhooks (POST /hooks/TENANT/preferences, /hooks/TENANT/VENDOR/..., as `segsync check` lists them)
    and serves GET /healthz and /metrics. SIGTERM/Ctrl-C: running syncs stop after the batch in flight.
    With --workers external it runs no sync itself: the workers do, and /metrics shows their queue.
    """
    from sync.serve import serve

    serve(config, listen, external_workers=workers == "external")

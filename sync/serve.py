"""Hosted mode: one process with the scheduler, the preference-center webhook, /healthz and /metrics.

- One APScheduler 3 job per tenant with a ``schedule``: its cron in the tenant's timezone,
  coalesced, one instance at a time; across processes the store's tenant lock (a PostgreSQL
  advisory lock) makes sure two servers never run the same tenant together. A run missed while
  the server was down runs once at start-up.
- The webhook (``consent.webhook``) records opt-outs and queues their propagation; a drain job
  runs right after each accepted webhook and every 30 seconds, so an opt-out reaches the vendors
  without waiting for a sync.
- Shutdown (SIGTERM / Ctrl-C) asks running syncs to stop after the batch in flight and waits;
  the changes not sent are sent by the next run.
- Logs never show a secret: a webhook secret in a URL path (vendors that sign nothing) is masked in
  uvicorn's access log (on with ``server.access_log: true``), and every other log line goes through the
  redacting filter.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import threading
import zoneinfo
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from connectors import registry
from connectors.base import CrmConnector, EspConnector
from connectors.kit.http import RedactingFilter, redact
from consent.ledger import Ledger
from consent.outbox import Outbox
from consent.webhook import TenantHooks, create_app
from core.errors import ConfigError
from core.heap import freeze_startup_heap
from sync.alerts import RUN_FAILED, Alert, Alerter, alerts_for_run, oldest_pending_age, outbox_alert, run_history
from sync.config.models import Config, ServerCfg, TenantCfg, load_config
from sync.pages.status_data import next_run
from sync.propagation import propagate, queued
from sync.run.gate import key_lookup
from sync.run.pipeline import RunOptions, run_tenant
from sync.run.report import RunReport
from sync.store import SqlStore, Store, TenantBusy, TenantLease, open_store
from sync.webhook_timing import WebhookTimer

if TYPE_CHECKING:
    from sync.workers.engine import ExternalQueue

log = logging.getLogger("segsync.serve")

DRAIN_EVERY_SECONDS = 30
# The only webhook_latency labels (bounded): each vendor with a webhook, and the preference center.
WEBHOOK_KINDS = (*(h.vendor for h in registry.webhook_handlers()), "preferences")


class Metrics:
    """Prometheus metrics of one server (its own registry, so tests can build several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs = Counter("segsync_runs_total", "Finished sync runs", ["tenant", "status"], registry=self.registry)
        self.records = Counter(
            "segsync_records_total", "Pushed records by outcome", ["tenant", "outcome"], registry=self.registry
        )
        self.api_calls = Counter(
            "segsync_api_calls_total", "Vendor API calls", ["tenant", "vendor"], registry=self.registry
        )
        self.rate_limited = Counter(
            "segsync_rate_limited_total", "429 answers seen", ["tenant", "vendor"], registry=self.registry
        )
        self.webhook_latency = Histogram(
            "segsync_webhook_seconds",
            "Webhook response time",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.outbox_depth = Gauge(
            "segsync_outbox_depth", "Opt-out propagations not yet confirmed", ["tenant"], registry=self.registry
        )
        self.busy = Counter(
            "segsync_runs_skipped_total",
            "Runs skipped because another holds the tenant lock",
            ["tenant"],
            registry=self.registry,
        )
        # What an operator alerts on: time() - last_success > 2 schedules means the firm is not syncing.
        self.last_success = Gauge("segsync_last_success_timestamp_seconds", "When the last run that finished (ok or "
                                  "failed_records) started, Unix time", ["tenant"], registry=self.registry)
        self.duration = Histogram("segsync_run_duration_seconds", "Run duration", ["tenant"], registry=self.registry,
                                  buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200))
        self.outbox_age = Gauge("segsync_outbox_oldest_age_seconds", "Age of the oldest unconfirmed opt-out "
                                "propagation (0 when none waits)", ["tenant"], registry=self.registry)
        self.disparate_impact = Gauge("segsync_segment_disparate_impact", "Lowest / highest membership rate by "
                                      "group of a sensitive attribute in a pushed segment (four-fifths rule: "
                                      "below 0.8 warns)", ["tenant", "segment", "attribute"], registry=self.registry)

    def record_run(self, report: dict[str, Any]) -> None:
        """Count one finished run: its status, its records by outcome, its API calls and 429s per vendor."""
        run = RunReport.from_dict(report)
        tenant = run.tenant
        self.runs.labels(tenant, run.status).inc()
        if run.duration_s is not None:
            self.duration.labels(tenant).observe(float(run.duration_s))
        for outcome, n in (run.push.totals if run.push else {}).items():
            self.records.labels(tenant, outcome).inc(n)
        for side, stats in run.api.items():
            stats = stats or {}
            self.api_calls.labels(tenant, side).inc(stats.get("total_calls", 0) or 0)
            self.rate_limited.labels(tenant, side).inc(stats.get("rate_limited", 0) or 0)
        for segment, per_attr in (run.scoring.fairness if run.scoring else {}).items():
            for attr, res in per_attr.items():
                if isinstance(res.get("disparate_impact"), float):
                    self.disparate_impact.labels(tenant, segment, attr).set(res["disparate_impact"])


class _HeldLock(SqlStore):
    """The store, for a run whose caller already holds the tenant's lock (taking it again would fail)."""

    def __init__(self, engine: sa.Engine, tenant_id: str, lease: TenantLease | None = None) -> None:
        super().__init__(engine)
        self.held = tenant_id
        self.lease = lease or TenantLease(tenant_id)

    @contextmanager
    def tenant_lock(self, tenant_id: str, ttl: timedelta = timedelta(hours=2)) -> Iterator[TenantLease]:
        if tenant_id != self.held:
            with super().tenant_lock(tenant_id, ttl) as lease:
                yield lease
            return
        yield self.lease  # the caller's lease: the run's fencing checks test the lock actually held


class Service:
    """Everything ``segsync serve`` runs, without the HTTP listener (tests drive it directly)."""

    def __init__(self, cfg: Config, base_dir: Path = Path("."), *, store: Store | None = None,
                 connectors: Callable[[TenantCfg], tuple[CrmConnector, EspConnector | None]] | None = None,
                 external_workers: bool = False) -> None:
        self.cfg = cfg
        self.base_dir = base_dir
        self.store = store or open_store(cfg.store)
        self.tenants = {t.id: t for t in cfg.tenants}
        self.metrics = Metrics()
        self.alerter = Alerter(cfg.alerts)
        self.stop = threading.Event()
        self.scheduler = BackgroundScheduler(
            timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        )
        self._connectors = connectors or self._build_connectors
        self._cache: dict[str, tuple[CrmConnector, EspConnector | None]] = {}
        self._lock = threading.Lock()
        self._drain_locks = {t: threading.Lock() for t in self.tenants}
        self.ledger = Ledger(self.store.engine, key_lookup(cfg.tenants))
        self.outbox = Outbox(self.store.engine, mac_key=self.ledger.chain_key)
        # --workers external: `segsync worker` processes run the schedules and drains; this one queues drains.
        self.queue: ExternalQueue | None = None
        if external_workers:
            from sync.workers.engine import ExternalQueue

            self.queue = ExternalQueue(cfg, self.store.engine, self.metrics.registry)  # closed by shutdown()

    # ------------------------------------------------------------------ connectors

    def _build_connectors(self, tenant: TenantCfg) -> tuple[CrmConnector, EspConnector | None]:
        from sync.config.wiring import build_crm, build_esp

        return build_crm(tenant, self.base_dir), build_esp(tenant)

    def connectors(self, tenant_id: str) -> tuple[CrmConnector, EspConnector | None]:
        """The connectors the outbox drains use (built once per tenant and kept)."""
        with self._lock:
            if tenant_id not in self._cache:
                self._cache[tenant_id] = self._connectors(self.tenants[tenant_id])
            return self._cache[tenant_id]

    # ------------------------------------------------------------------ jobs

    def run_sync(self, tenant_id: str) -> dict[str, Any] | None:
        """One run of the tenant; None when it did not run (lock held elsewhere, shutting down, failed).

        Each run gets connectors of its own, so its report's API counts (and the metrics made from
        them) are this run's only, and a drain never shares a client with a run.
        """
        tenant = self.tenants[tenant_id]
        if self.stop.is_set():
            log.info("not starting a run of %s: shutting down", tenant_id)
            return None
        try:
            # The lock is taken here, before the run is logged, so a run skipped because another
            # server holds the tenant leaves no failed run behind; the pipeline's own lock call
            # then finds it already held by this run.
            with self.store.tenant_lock(tenant_id) as lease:
                crm, esp = self._connectors(tenant)
                report = run_tenant(
                    self.cfg,
                    tenant,
                    _HeldLock(self.store.engine, tenant_id, lease),
                    RunOptions(stop=self.stop),
                    base_dir=self.base_dir,
                    crm=crm,
                    esp=esp,
                )
        except TenantBusy as exc:
            self.metrics.busy.labels(tenant_id).inc()
            log.info("%s", exc)
            return None
        except Exception as exc:
            log.error("run of %s failed: %s", tenant_id, redact(str(exc)))
            self.metrics.runs.labels(tenant_id, "error").inc()
            self.alerter.notify(Alert(RUN_FAILED, tenant_id, f"the run failed: {redact(str(exc))}"))
            return None
        self.metrics.record_run(report)
        for alert in alerts_for_run(report):
            self.alerter.notify(alert)
        log.info("run of %s: %s", tenant_id, report.get("status"))
        return report

    def drain(self, tenant_id: str) -> None:
        tenant = self.tenants[tenant_id]
        with self._drain_locks[tenant_id]:  # one drain per tenant at a time in this process
            try:
                crm, esp = self.connectors(tenant_id)
                propagate(self.store, tenant, crm, esp)
                self.metrics.outbox_depth.labels(tenant_id).set(queued(self.store, tenant_id))
            except Exception as exc:
                log.error("drain for %s failed: %s", tenant_id, redact(str(exc)))
            self._check_backlog(tenant_id)  # also after a failed drain: that is when opt-outs pile up

    def _check_backlog(self, tenant_id: str) -> None:
        if self.cfg.alerts is None:
            return
        try:
            depth, age = self.outbox.depth(tenant_id), oldest_pending_age(self.store.engine, tenant_id)
        except Exception as exc:
            log.error("outbox backlog check for %s failed: %s", tenant_id, redact(str(exc)))
            return
        alert = outbox_alert(self.cfg.alerts, tenant_id, depth, age)
        if alert is not None:
            self.alerter.notify(alert)

    def drain_all(self) -> None:
        for tenant_id in self.tenants:
            self.drain(tenant_id)

    def trigger_drain(self, tenant_id: str) -> None:
        """Right after a webhook: drain that tenant's outbox now (in the scheduler's threads, or by a worker)."""
        if tenant_id in self.tenants and self.queue is not None:
            self.queue.drain(tenant_id)
        elif tenant_id in self.tenants and self.scheduler.running:
            self.scheduler.add_job(self.drain, args=[tenant_id], id=f"drain-now:{tenant_id}", replace_existing=True)

    def schedule(self) -> list[dict[str, Any]]:
        jobs = []
        for tenant in self.tenants.values():
            if not tenant.schedule or self.queue is not None:  # external workers queue the schedule ticks
                continue
            tz = zoneinfo.ZoneInfo(tenant.timezone)
            trigger = CronTrigger.from_crontab(tenant.schedule, timezone=tz)
            job = self.scheduler.add_job(
                self.run_sync,
                trigger,
                args=[tenant.id],
                id=f"sync:{tenant.id}",
                replace_existing=True,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=None,
            )
            missed = self._missed(tenant.id, trigger)
            if missed:
                self.scheduler.add_job(
                    self.run_sync, args=[tenant.id], id=f"catch-up:{tenant.id}", replace_existing=True
                )
            jobs.append(
                {
                    "tenant": tenant.id,
                    "cron": tenant.schedule,
                    "timezone": tenant.timezone,
                    "catch_up": missed,
                    "job": job.id,
                }
            )
        if self.queue is None:
            self.scheduler.add_job(
                self.drain_all, "interval", seconds=DRAIN_EVERY_SECONDS, id="drain-all", replace_existing=True
            )
        return jobs

    def _missed(self, tenant_id: str, trigger: CronTrigger) -> bool:
        """A scheduled time passed since the last run started (the server was down): run once now.

        Dry runs do not count as runs; a tenant that never ran waits for its first scheduled time.
        """
        runs = [r for r in self.store.runs(tenant_id, limit=50) if not r.get("dry_run")]
        if not runs:
            return False
        last = runs[0]["started_at"]
        last = last.replace(tzinfo=UTC) if last.tzinfo is None else last
        due = trigger.get_next_fire_time(None, last)
        return due is not None and due <= datetime.now(UTC)

    def firms(self) -> dict[str, dict[str, Any]]:
        """Per firm: schedule, last run, last run that finished, next scheduled run (for /healthz)."""
        out = {}
        for tenant_id, tenant in sorted(self.tenants.items()):
            job = self.scheduler.get_job(f"sync:{tenant_id}")
            # Before the scheduler starts a job has no next_run_time yet; its trigger knows.
            next_at = getattr(job, "next_run_time", None) or (
                job.trigger.get_next_fire_time(None, datetime.now(UTC)) if job is not None else None) or (
                next_run(tenant, datetime.now(UTC)) if self.queue is not None else None)  # the workers' tick
            out[tenant_id] = {"schedule": tenant.schedule, "timezone": tenant.timezone,
                              "next_run": next_at.isoformat() if next_at else None,
                              **run_history(self.store.runs(tenant_id, limit=50))}
        return out

    def queue_summary(self) -> dict[str, Any] | None:
        """The task engine's queue for the status page (None when this process runs the syncs itself)."""
        return self.queue.summary() if self.queue is not None else None

    def start(self) -> list[dict[str, Any]]:
        jobs = self.schedule()
        self.scheduler.start()
        return jobs

    def shutdown(self) -> None:
        """Ask running syncs to stop after the batch in flight, and wait for them."""
        if not self.stop.is_set():
            log.info("shutting down: running syncs stop after the batch in flight")
        self.stop.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.queue is not None:
            self.queue.close()
            self.queue = None

    # ------------------------------------------------------------------ HTTP

    def hooks(self) -> dict[str, TenantHooks]:
        def resolver(tenant_id: str) -> Callable[[str, str], str | None]:
            def resolve(source: str, vendor_id: str) -> str | None:
                return self.store.email_for_vendor_id(tenant_id, source, vendor_id)

            return resolve

        return {t.id: TenantHooks.from_config(t, resolve=resolver(t.id)) for t in self.tenants.values()}

    def app(self, *, run_scheduler: bool = True) -> FastAPI:
        service = self

        @asynccontextmanager
        async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
            if run_scheduler:
                for job in service.start():
                    log.info("scheduled %s", job)
            try:
                yield
            finally:
                service.shutdown()

        app = FastAPI(title="segsync", lifespan=lifespan, docs_url=None, redoc_url=None)

        app.add_middleware(WebhookTimer, histogram=service.metrics.webhook_latency, kinds=WEBHOOK_KINDS)

        @app.get("/healthz")
        def healthz() -> JSONResponse:
            try:
                with service.store.engine.connect() as conn:
                    conn.execute(sa.text("select 1"))
                db = "ok"
            except Exception as exc:
                db = f"error: {type(exc).__name__}"
            ok = db == "ok" and (service.scheduler.running or not run_scheduler)
            body: dict[str, Any] = {"status": "ok" if ok else "degraded", "database": db,
                                    "scheduler": service.scheduler.running, "tenants": sorted(service.tenants)}
            if db == "ok":
                body["firms"] = service.firms()
            return JSONResponse(body, status_code=200 if ok else 503)

        @app.get("/metrics")
        def metrics() -> Response:
            for tenant_id in service.tenants:
                service.metrics.outbox_depth.labels(tenant_id).set(service.outbox.depth(tenant_id))
                service.metrics.outbox_age.labels(tenant_id).set(
                    oldest_pending_age(service.store.engine, tenant_id) or 0
                )
                # From the store, so the timestamp survives a restart and counts runs of other servers.
                last = run_history(service.store.runs(tenant_id, limit=50))["last_success"]
                if last is not None:
                    service.metrics.last_success.labels(tenant_id).set(datetime.fromisoformat(last["started_at"]).timestamp())
            if service.queue is not None:
                service.queue.refresh_metrics()
            return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

        from sync.pages import mount as mount_pages

        mount_pages(app, self)  # status, model cards, lift, preference page (before the webhook's catch-all)
        webhook = create_app(self.hooks(), self.ledger, self.outbox, on_enqueued=self.trigger_drain,
                             public_url=self.cfg.server.public_url, vendors=registry.webhook_handlers())
        app.mount("/", webhook)
        app.state.warm_up = webhook.state.warm_up  # serve() calls it before serving
        return app


# The webhook URLs that carry the secret (vendors that sign nothing), and preference-link tokens.
_SECRET_PREFIXES = [f"/hooks/[^/\\s]+/{re.escape(h.vendor)}/" for h in registry.webhook_handlers() if h.secret_in_url]
_HOOK_SECRET = re.compile(rf"({'|'.join([*_SECRET_PREFIXES, '/p/'])})[^/\s?#\"]+")


def mask_path(path: str) -> str:
    """A request path fit for a log: a webhook secret in a URL, a preference link's token and any registered
    secret masked."""
    return redact(_HOOK_SECRET.sub(r"\1***", path))


class AccessLogFilter(logging.Filter):
    """For uvicorn's access log: masks the path argument, keeping the record's 5-tuple that
    uvicorn's access formatter unpacks (client, method, path, http version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], mask_path(args[2]), args[3], args[4])
        else:
            message = record.getMessage()
            clean = mask_path(message)
            if clean != message:
                record.msg, record.args = clean, ()
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging config with secrets masked on both of its handlers (JSON lines under --log-format json)."""
    import uvicorn.config

    from sync.logs import JsonFormatter, json_logs

    conf = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    if json_logs():
        conf["formatters"] = {name: {"()": JsonFormatter} for name in conf["formatters"]}
    conf.setdefault("filters", {})
    conf["filters"]["segsync_access"] = {"()": AccessLogFilter}
    conf["filters"]["segsync_redact"] = {"()": RedactingFilter}
    conf["handlers"]["access"]["filters"] = ["segsync_access"]
    conf["handlers"]["default"]["filters"] = ["segsync_redact"]
    return conf


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8080`` for IPv6) -> (host, port); a clear ConfigError otherwise."""
    try:
        server = ServerCfg(listen=listen)
    except ValueError:
        raise ConfigError(f"--listen {listen!r}: use host:port, e.g. 127.0.0.1:8080") from None
    host = server.host
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, server.port


def serve(config: Path, listen: str | None = None, *, external_workers: bool = False) -> None:
    """Run hosted mode until SIGTERM/Ctrl-C: load the config, then uvicorn with the service's app."""
    import uvicorn

    cfg = load_config(config)  # registers every tenant's secrets with the redactor
    if cfg.server.log_format == "json" and not os.environ.get("SEGSYNC_LOG_FORMAT"):
        os.environ["SEGSYNC_LOG_FORMAT"] = "json"  # the config's choice, unless --log-format said otherwise
        from sync.logs import formatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(formatter())
    host, port = parse_listen(listen or cfg.server.listen)
    service = Service(cfg, config.parent, external_workers=external_workers)
    logging.getLogger("segsync.serve").setLevel(
        min(logging.getLogger("segsync.serve").getEffectiveLevel(), logging.INFO)
    )
    log.info("segsync serve: %d tenant(s) on %s:%d", len(service.tenants), host, port)
    app = service.app()
    app.state.warm_up()  # keys checked, the writer's connection open: not on the first requests
    log.debug("start-up heap frozen: %d objects", freeze_startup_heap())  # fewer, shorter GC pauses (core.heap)
    uvicorn.run(app, host=host, port=port, **uvicorn_options(cfg.server))


def uvicorn_options(server: ServerCfg) -> dict[str, Any]:
    """How ``serve`` runs uvicorn: its logging masked, the access log only when the config asks for it."""
    return {"log_level": "info", "log_config": uvicorn_log_config(), "access_log": server.access_log,
            "timeout_graceful_shutdown": 60}

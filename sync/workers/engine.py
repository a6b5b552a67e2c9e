"""The task engine's plumbing: procrastinate over the store's PostgreSQL, its schema, enqueueing, queue stats.

procrastinate keeps its jobs in tables of its own (``procrastinate_jobs``, ``procrastinate_workers``, ...)
next to segsync's, in the store's schema (the first of its ``search_path``); they are created on first use
under an advisory lock, so starting several workers at once is safe and no manual step is needed. segsync's
Alembic migrations never touch them.

Jobs (all in queue ``segsync``):

- ``segsync.run`` (tenant_id, reason): one run of a tenant. ``lock`` = the tenant, so two runs of one tenant
  never overlap across workers; ``queueing_lock`` = the tenant, so at most one waits (a second enqueue while
  one waits is the same run). Priority: scheduled 0, manual (``segsync sync --enqueue``) 10.
- ``segsync.drain`` (tenant_id): one pass over the tenant's opt-out outbox; priority 20, above every run,
  with a lock of its own (an opt-out does not wait for a long run of the same tenant).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from connectors.kit.http import redact
from core.errors import ConfigError
from sync.config.models import Config
from sync.store.runs import advisory_key
from sync.workers import DRAIN_TASK, MANUAL, PRIORITY_DRAIN, PRIORITY_MANUAL, PRIORITY_SCHEDULED, QUEUE, RUN_TASK

log = logging.getLogger("segsync.workers")



def require_postgres(cfg: Config) -> None:
    """The task engine shares the store's PostgreSQL; an SQLite store is a config error saying what to do."""
    if not cfg.store.lower().startswith("postgresql"):
        raise ConfigError("store: the task engine (segsync worker, serve --workers external, sync --enqueue) needs a "
                          "PostgreSQL store (store: postgresql+psycopg://...); with SQLite, `segsync serve` runs "
                          "everything in one process")


def conninfo(store_url: str) -> str:
    """The store's SQLAlchemy URL as a libpq connection string for procrastinate's psycopg pool."""
    url = sa.engine.make_url(store_url)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def make_app(cfg: Config, *, pool_size: int = 4) -> Any:
    """The procrastinate App on the store's database, with segsync's tasks. Not opened."""
    import procrastinate

    from sync.workers.tasks import register

    require_postgres(cfg)
    connector = procrastinate.PsycopgConnector(conninfo=conninfo(cfg.store), min_size=1, max_size=pool_size,
                                               kwargs={"application_name": "segsync-queue"})
    app = procrastinate.App(connector=connector)
    register(app)
    return app


def ensure_schema(engine: sa.Engine) -> bool:
    """Create procrastinate's tables in the store's schema unless there; True when they were created now."""
    from procrastinate.schema import SchemaManager

    with engine.begin() as conn:
        schema = str(conn.execute(sa.text("select current_schema()")).scalar())
        conn.execute(sa.text("select pg_advisory_xact_lock(:k)"), {"k": advisory_key(schema, "procrastinate-schema")})
        if conn.execute(sa.text("select to_regclass('procrastinate_jobs')")).scalar() is not None:
            return False
        raw = conn.connection.driver_connection
        assert raw is not None  # a live psycopg connection inside the transaction
        raw.execute(SchemaManager.get_schema())  # no parameters: run as written, several statements
    log.info("task engine: created procrastinate's tables in schema %s", schema)
    return True


def enqueue_run(app: Any, tenant_id: str, reason: str = MANUAL) -> int | None:
    """Queue one run of the tenant; None when one is already waiting (that run is this one)."""
    from procrastinate.exceptions import AlreadyEnqueued

    priority = PRIORITY_MANUAL if reason == MANUAL else PRIORITY_SCHEDULED
    try:
        job_id: int = app.configure_task(RUN_TASK, lock=tenant_id, queueing_lock=tenant_id, queue=QUEUE,
                                         priority=priority).defer(tenant_id=tenant_id, reason=reason)
        return job_id
    except AlreadyEnqueued:
        return None


def drain_deferrer(app: Any, tenant_id: str) -> Any:
    """The deferrer of a drain job for the tenant (``.defer`` / ``await .defer_async``)."""
    return app.configure_task(DRAIN_TASK, lock=f"drain:{tenant_id}", queueing_lock=f"drain:{tenant_id}",
                              queue=QUEUE, priority=PRIORITY_DRAIN)


def enqueue_drain(app: Any, tenant_id: str) -> int | None:
    """Queue a pass over the tenant's opt-out outbox; None when one is already waiting."""
    from procrastinate.exceptions import AlreadyEnqueued

    try:
        job_id: int = drain_deferrer(app, tenant_id).defer(tenant_id=tenant_id)
        return job_id
    except AlreadyEnqueued:
        return None


@dataclass
class QueueStats:
    """What /metrics and the status page show about the queue."""

    waiting: dict[str, int]  # task -> jobs waiting (todo), due or scheduled
    running: dict[str, int]  # task -> jobs being run (doing)
    oldest_waiting_s: float  # age of the oldest due job still waiting, 0 when none
    retries: int  # jobs re-queued after a failure, a busy account or a dead worker, since the queue began
    failed: int  # jobs that ended failed (no retry left)
    workers: int  # workers that sent a heartbeat within the stalled timeout


def queue_stats(engine: sa.Engine, stalled_after_seconds: int) -> QueueStats:
    """The queue at this moment, read from procrastinate's tables (zeroes before the first worker made them)."""
    with engine.connect() as conn:
        if conn.execute(sa.text("select to_regclass('procrastinate_jobs')")).scalar() is None:
            return QueueStats({}, {}, 0.0, 0, 0, 0)
        rows = conn.execute(sa.text(
            "select task_name, status::text, count(*) from procrastinate_jobs "
            "where status in ('todo', 'doing') group by 1, 2")).all()
        oldest = conn.execute(sa.text(
            "select min(coalesce(scheduled_at, e.at)) from procrastinate_jobs j "
            "join lateral (select min(at) as at from procrastinate_events where job_id = j.id) e on true "
            "where j.status = 'todo' and coalesce(j.scheduled_at, e.at) <= now()")).scalar()
        retries = conn.execute(sa.text(
            "select count(*) from procrastinate_events where type = 'deferred_for_retry'")).scalar()
        failed = conn.execute(sa.text("select count(*) from procrastinate_jobs where status = 'failed'")).scalar()
        workers = conn.execute(sa.text(
            "select count(*) from procrastinate_workers where last_heartbeat > now() - make_interval(secs => :s)"),
            {"s": stalled_after_seconds}).scalar()
    waiting = {str(r[0]): int(r[2]) for r in rows if r[1] == "todo"}
    running = {str(r[0]): int(r[2]) for r in rows if r[1] == "doing"}
    age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
    return QueueStats(waiting, running, max(age, 0.0), int(retries or 0), int(failed or 0), int(workers or 0))


class QueueGauges:
    """The queue on a Prometheus registry (``segsync serve --workers external`` sets them at each scrape)."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Gauge

        self.jobs = Gauge("segsync_queue_jobs", "Jobs in the task engine's queue by task and state (waiting = todo, "
                          "running = doing)", ["task", "state"], registry=registry)
        self.oldest = Gauge("segsync_queue_oldest_age_seconds", "Age of the oldest due job still waiting (0 when "
                            "none)", registry=registry)
        self.retries = Gauge("segsync_queue_retries", "Jobs re-queued (failure, busy account, dead worker) since "
                             "the queue began", registry=registry)
        self.failed = Gauge("segsync_queue_failed_jobs", "Jobs that ended failed with no retry left",
                            registry=registry)
        self.workers = Gauge("segsync_workers", "Workers with a recent heartbeat", registry=registry)

    def update(self, stats: QueueStats) -> None:
        for task in (RUN_TASK, DRAIN_TASK):
            self.jobs.labels(task, "waiting").set(stats.waiting.get(task, 0))
            self.jobs.labels(task, "running").set(stats.running.get(task, 0))
        self.oldest.set(stats.oldest_waiting_s)
        self.retries.set(stats.retries)
        self.failed.set(stats.failed)
        self.workers.set(stats.workers)


class ExternalQueue:
    """What ``segsync serve --workers external`` does with the queue: queue drains, show it in /metrics and pages."""

    def __init__(self, cfg: Config, engine: sa.Engine, registry: Any) -> None:
        require_postgres(cfg)
        ensure_schema(engine)
        self.engine, self.stalled = engine, cfg.workers.stalled_after_seconds
        self.app = make_app(cfg, pool_size=2).open()
        self.gauges = QueueGauges(registry)

    def drain(self, tenant_id: str) -> None:
        """Queue a drain of the tenant's outbox (right after a webhook); a failure is logged, not raised."""
        try:
            enqueue_drain(self.app, tenant_id)
        except Exception as exc:  # the opt-out is recorded: the workers' 30-second outbox scan queues it
            log.error("could not queue the drain of %s: %s", tenant_id, redact(str(exc)))

    def refresh_metrics(self) -> None:
        self.gauges.update(queue_stats(self.engine, self.stalled))

    def summary(self) -> dict[str, Any]:
        """The queue for the status page."""
        q = queue_stats(self.engine, self.stalled)
        return {"workers": q.workers, "runs_running": q.running.get(RUN_TASK, 0),
                "runs_waiting": q.waiting.get(RUN_TASK, 0), "drains_running": q.running.get(DRAIN_TASK, 0),
                "drains_waiting": q.waiting.get(DRAIN_TASK, 0), "oldest_waiting_s": q.oldest_waiting_s,
                "retries": q.retries, "failed": q.failed}

    def close(self) -> None:
        self.app.close()

"""What every worker does besides running jobs: queue schedule ticks, rescue dead workers' jobs, queue drains.

Every worker runs this loop; the database makes the work happen once:

- **Schedule ticks.** A tenant's ``schedule`` is cron in its own time zone (APScheduler's trigger reads it, DST
  included; procrastinate's own periodic tasks know only UTC). Each tick is queued through procrastinate's
  periodic-defer table, unique per (tenant, tick): however many workers see the tick, one run is queued. A
  tick missed while every worker was down runs once when one starts, if it is at most
  ``workers.catch_up_minutes`` old. A tick that finds a run of the tenant still waiting joins it.
- **Dead workers.** A worker that sent no heartbeat for ``workers.stalled_after_seconds`` (killed, its machine
  gone) leaves its job in ``doing``: the job is put back in the queue and another worker runs it. The killed
  run's tenant lock died with its session; the new run marks the old one interrupted and resumes from the
  stored cursors and last-confirmed state (records written ahead as in flight are re-sent, nothing else).
- **Opt-out drains.** Every ``DRAIN_EVERY_SECONDS``, a drain is queued for each tenant whose outbox holds
  actions (after a webhook, ``serve --workers external`` queues one at once).
"""

from __future__ import annotations

import asyncio
import logging
import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from apscheduler.triggers.cron import CronTrigger

from sync.config.models import Config, TenantCfg
from sync.workers import PRIORITY_SCHEDULED, QUEUE, RUN_TASK, SCHEDULED
from sync.workers.engine import drain_deferrer

log = logging.getLogger("segsync.workers")

DRAIN_EVERY_SECONDS = 30


def ticks_between(tenant: TenantCfg, after: datetime, until: datetime) -> list[datetime]:
    """The tenant's schedule ticks in (after, until], in UTC."""
    if not tenant.schedule:
        return []
    trigger = CronTrigger.from_crontab(tenant.schedule, timezone=zoneinfo.ZoneInfo(tenant.timezone))
    ticks: list[datetime] = []
    at = after
    while True:
        nxt = trigger.get_next_fire_time(None, at + timedelta(microseconds=1))
        if nxt is None or nxt > until:
            return ticks
        ticks.append(nxt.astimezone(UTC))
        at = nxt


class Maintenance:
    """The loop above, for one worker process (async; the store is read in a thread)."""

    def __init__(self, app: Any, cfg: Config, engine: sa.Engine) -> None:
        self.app, self.cfg, self.engine = app, cfg, engine
        self.stalled = cfg.workers.stalled_after_seconds
        self.every = max(1.0, min(5.0, self.stalled / 3))
        self.seen: dict[str, datetime] = {}  # tenant -> ticks up to here were looked at
        self.last_drain_scan = 0.0

    async def run(self) -> None:
        while True:
            for step in (self.queue_ticks, self.rescue_stalled, self.queue_drains):
                try:
                    await step()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one failed step (database restarting) must not stop the others
                    log.warning("worker maintenance: %s failed: %s", step.__name__, exc)
            await asyncio.sleep(self.every)

    async def queue_ticks(self) -> None:
        now = datetime.now(UTC)
        for tenant in self.cfg.tenants:
            after = self.seen.get(tenant.id, now - timedelta(minutes=self.cfg.workers.catch_up_minutes))
            try:
                await self._queue_tick(tenant, after, now)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database restarting: this firm's tick is tried again next pass
                log.warning("schedule tick of %s not queued yet: %s", tenant.id, exc)
                continue
            # ``seen`` moves on only once the tick is queued (or found queued), never past a failed defer.
            self.seen[tenant.id] = now

    async def _queue_tick(self, tenant: TenantCfg, after: datetime, now: datetime) -> None:
        from procrastinate.exceptions import AlreadyEnqueued

        for tick in ticks_between(tenant, after, now)[-1:]:  # ticks passed together (a pause) are one run
            stamp = int(tick.timestamp())
            if await asyncio.to_thread(self._newer_tick_queued, tenant.id, stamp):
                continue
            deferrer = self.app.configure_task(
                RUN_TASK, lock=tenant.id, queueing_lock=tenant.id, queue=QUEUE, priority=PRIORITY_SCHEDULED,
                task_kwargs={"tenant_id": tenant.id, "reason": SCHEDULED, "timestamp": stamp})
            try:
                job_id = await deferrer.job_manager.defer_periodic_job(
                    job=deferrer.job, periodic_id=f"run:{tenant.id}", defer_timestamp=stamp)
            except AlreadyEnqueued:
                log.info("schedule tick %s of %s: a run is already waiting", tick.isoformat(), tenant.id)
                continue
            if job_id is not None:
                log.info("schedule tick %s of %s: run queued (job %s)", tick.isoformat(), tenant.id, job_id)

    def _newer_tick_queued(self, tenant_id: str, stamp: int) -> bool:
        # procrastinate forgets older ticks once a newer one is queued: never queue a tick that old again.
        with self.engine.connect() as conn:
            return bool(conn.execute(sa.text(
                "select exists (select 1 from procrastinate_periodic_defers where task_name = :task "
                "and periodic_id = :pid and defer_timestamp >= :ts)"),
                {"task": RUN_TASK, "pid": f"run:{tenant_id}", "ts": stamp}).scalar())

    async def rescue_stalled(self) -> None:
        from procrastinate.exceptions import ConnectorException

        manager = self.app.job_manager
        for job in await manager.get_stalled_jobs(seconds_since_heartbeat=self.stalled):
            try:
                await manager.retry_job(job)
            except ConnectorException:
                continue  # another worker put it back first
            log.warning("job %s (%s %s) was left running by a worker silent for %d s: queued again",
                        job.id, job.task_name, job.task_kwargs.get("tenant_id"), self.stalled)

    async def queue_drains(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self.last_drain_scan < DRAIN_EVERY_SECONDS:
            return
        self.last_drain_scan = loop.time()
        from procrastinate.exceptions import AlreadyEnqueued

        for tenant_id in await asyncio.to_thread(self._tenants_with_outbox):
            try:
                await drain_deferrer(self.app, tenant_id).defer_async(tenant_id=tenant_id)
            except AlreadyEnqueued:
                continue  # one is waiting already

    def _tenants_with_outbox(self) -> list[str]:
        from consent.outbox import Outbox

        outbox = Outbox(self.engine)
        return [t.id for t in self.cfg.tenants if outbox.depth(t.id) > 0]

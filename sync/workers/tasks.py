"""The jobs a worker runs: a tenant run and an outbox drain, and when each is tried again.

A job finds what it needs (config, store, account slots, the stop signal) in the worker's
:class:`Runtime`, passed through procrastinate's job context. A run is guarded three times over:
procrastinate's ``lock`` (one job per tenant in ``doing``), the store's tenant advisory lock (held by
the run's own session, checked before every batch) and, for tenants sharing a vendor account, one of
that account's slots.

When a job is tried again (:class:`RunRetry`):

- the account or the tenant is busy (another run holds it): again in ``BUSY_WAIT_SECONDS``, as often as
  needed (this is waiting, not failing);
- the worker is shutting down (the run stopped after its batch in flight) or the run lost its lock:
  at once, by another worker; the run resumes from its stored cursors and last-confirmed state;
- records failed, or a vendor or the database failed in a way that may pass: with exponential backoff
  (30 s, 2 min, 8 min, 32 min), at most ``MAX_ERROR_ATTEMPTS`` tries in all;
- a config or input error, or a refused plan: never (a person must act; the run log says why).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import procrastinate
import sqlalchemy as sa
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy, RetryDecision

from connectors.base import CrmConnector, EspConnector
from connectors.kit.http import redact
from core.errors import RetriableApiError, SegsyncError
from sync.config.models import Config, TenantCfg
from sync.run.pipeline import FAILED_RECORDS, STOPPED, RunOptions, run_tenant
from sync.store.interface import Store, TenantBusy
from sync.workers import DRAIN_TASK, QUEUE, RUN_TASK
from sync.workers.slots import AccountBusy, AccountSlots, tenant_accounts

log = logging.getLogger("segsync.workers")

BUSY_WAIT_SECONDS = 5
MAX_ERROR_ATTEMPTS = 5
BACKOFF_BASE_SECONDS = 30


class Interrupted(SegsyncError):
    """The run stopped before its end (worker shutting down, or its tenant lock was lost): run it again."""


class FailedRecords(SegsyncError):
    """The run finished with records the vendor refused for now: run again later, which re-sends only those."""


@dataclass
class Runtime:
    """What one worker process gives its jobs."""

    cfg: Config
    base_dir: Path
    store: Store
    slots: AccountSlots
    stop: threading.Event = field(default_factory=threading.Event)
    connectors: Callable[[TenantCfg], tuple[CrmConnector, EspConnector | None]] | None = None

    @property
    def tenants(self) -> dict[str, TenantCfg]:
        return {t.id: t for t in self.cfg.tenants}


class RunRetry(BaseRetryStrategy):
    """Waiting is retried without end, interruptions at once, passing failures with backoff, the rest never."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, (AccountBusy, TenantBusy)):
            return RetryDecision(retry_in={"seconds": BUSY_WAIT_SECONDS + random.randint(0, BUSY_WAIT_SECONDS)})
        if isinstance(exception, Interrupted):
            return RetryDecision(retry_in={"seconds": 0})
        if job.attempts + 1 >= MAX_ERROR_ATTEMPTS:
            return None
        if isinstance(exception, (FailedRecords, RetriableApiError, sa.exc.OperationalError, OSError)):
            return RetryDecision(retry_in={"seconds": BACKOFF_BASE_SECONDS * 4 ** min(job.attempts, 4)})
        return None


def _runtime(context: procrastinate.JobContext) -> Runtime:
    runtime = context.additional_context.get("segsync")
    if not isinstance(runtime, Runtime):
        raise RuntimeError("a segsync job runs only in `segsync worker` (no runtime in its context)")
    return runtime


def register(app: procrastinate.App) -> None:
    """segsync's tasks on this app (Task objects of its own: several apps can live in one process)."""
    app.task(name=RUN_TASK, pass_context=True, queue=QUEUE, retry=RunRetry())(run_job)
    app.task(name=DRAIN_TASK, pass_context=True, queue=QUEUE, retry=RunRetry())(drain_job)


def run_job(context: procrastinate.JobContext, tenant_id: str, reason: str = "manual",
            timestamp: int | None = None) -> dict[str, Any]:
    """One run of the tenant (``timestamp``: the schedule tick it stands for, set by the scheduler)."""
    return run_in_worker(_runtime(context), tenant_id, reason)


def drain_job(context: procrastinate.JobContext, tenant_id: str) -> dict[str, Any]:
    """One pass over the tenant's opt-out outbox (failed actions stay queued with their own backoff)."""
    from sync.propagation import propagate

    runtime = _runtime(context)
    tenant = runtime.tenants.get(tenant_id)
    if tenant is None:
        return {"skipped": f"tenant {tenant_id} is not in this worker's config"}
    crm, esp = _connectors(runtime, tenant)
    report = propagate(runtime.store, tenant, crm, esp)
    return {"done": report.done, "retrying": report.retrying, "failed": report.failed}


def _connectors(runtime: Runtime, tenant: TenantCfg) -> tuple[CrmConnector, EspConnector | None]:
    if runtime.connectors is not None:
        return runtime.connectors(tenant)
    from sync.config.wiring import build_crm, build_esp

    return build_crm(tenant, runtime.base_dir), build_esp(tenant) if tenant.esp is not None else None


def run_in_worker(runtime: Runtime, tenant_id: str, reason: str) -> dict[str, Any]:
    """Run the tenant once under its account slots; raise what :class:`RunRetry` decides on."""
    tenant = runtime.tenants.get(tenant_id)
    if tenant is None:  # the config changed since the job was queued
        log.warning("run of %s skipped: not in this worker's config", tenant_id)
        return {"tenant": tenant_id, "status": "skipped", "error": "not in the worker's config"}
    if runtime.stop.is_set():
        raise Interrupted(f"run of {tenant_id} not started: the worker is shutting down")
    with runtime.slots.hold(tenant_accounts(tenant)):
        crm, esp = _connectors(runtime, tenant)
        log.info("run of %s (%s) starting", tenant_id, reason)
        report = run_tenant(runtime.cfg, tenant, runtime.store, RunOptions(stop=runtime.stop),
                            base_dir=runtime.base_dir, crm=crm, esp=esp)
    status = report.get("status")
    log.info("run of %s: %s", tenant_id, status)
    summary = {"tenant": tenant_id, "run_id": report.get("run_id"), "status": status}
    if status == STOPPED:
        raise Interrupted(f"run #{report.get('run_id')} of {tenant_id} stopped before its end: "
                          f"{redact(str(report.get('error') or 'the worker is shutting down'))}")
    if status == FAILED_RECORDS:
        raise FailedRecords(f"run #{report.get('run_id')} of {tenant_id} finished with failed records")
    return summary

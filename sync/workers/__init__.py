"""Tenant runs past one process: a distributed task engine (procrastinate) over the store's PostgreSQL.

``engine`` (the App, its schema, enqueueing, queue stats), ``tasks`` (the run and drain jobs, when they are
retried), ``slots`` (a cap on concurrent runs per shared vendor account), ``ticks`` (schedule ticks, dead
workers' jobs, opt-out drains), ``process`` (``segsync worker``). The embedded default - SQLite, one
``segsync serve`` process with APScheduler - does not use this package.
"""

QUEUE = "segsync"
RUN_TASK, DRAIN_TASK = "segsync.run", "segsync.drain"
PRIORITY_SCHEDULED, PRIORITY_MANUAL, PRIORITY_DRAIN = 0, 10, 20  # higher runs first
SCHEDULED, MANUAL = "scheduled", "manual"  # why a run was queued

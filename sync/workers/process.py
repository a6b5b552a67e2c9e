"""``segsync worker CONFIG``: one worker process of the task engine.

Start as many as you like, on any machines that reach the store's PostgreSQL: each takes jobs from the
shared queue (``concurrency`` at a time, each in a thread of its own: a run mostly waits on vendor rate
limits), sends a heartbeat, and runs the maintenance loop (:mod:`sync.workers.ticks`).

SIGTERM / Ctrl-C: no new job is taken; running runs stop after the batch in flight (their progress is
stored) and go back to the queue for another worker; then the process exits. A second signal exits at
once (what was in flight is resumed by the next run, as after a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from pathlib import Path

import sqlalchemy as sa

from sync.config.models import Config, load_config
from sync.store import open_store
from sync.workers import QUEUE
from sync.workers.engine import ensure_schema, make_app, require_postgres
from sync.workers.slots import AccountSlots
from sync.workers.tasks import Runtime
from sync.workers.ticks import Maintenance

log = logging.getLogger("segsync.workers")


def worker_name() -> str:
    """``host:pid``: what the logs, the heartbeat table and ``pg_stat_activity.application_name`` show."""
    return f"{socket.gethostname()}:{os.getpid()}"


def tagged_store_url(store_url: str, name: str) -> str:
    """The store URL with this worker as the connections' application_name (which worker holds which tenant
    lock is then one query on pg_locks and pg_stat_activity)."""
    url = sa.engine.make_url(store_url)
    return url.update_query_dict({"application_name": f"segsync-worker {name}"[:63]}).render_as_string(
        hide_password=False)


def run_worker(config: Path, concurrency: int = 1, name: str | None = None) -> None:
    """Run one worker until SIGTERM/Ctrl-C (see the module docstring)."""
    cfg = load_config(config)
    require_postgres(cfg)
    name = name or worker_name()
    store = open_store(tagged_store_url(cfg.store, name))
    try:
        ensure_schema(store.engine)
        runtime = Runtime(cfg=cfg, base_dir=config.parent, store=store,
                          slots=AccountSlots(store.engine, cfg.workers.per_account))
        asyncio.run(_serve(cfg, runtime, concurrency, name))
    finally:
        store.close()


async def _serve(cfg: Config, runtime: Runtime, concurrency: int, name: str) -> None:
    from procrastinate.worker import Worker

    app = make_app(cfg, pool_size=concurrency + 3)
    stalled = cfg.workers.stalled_after_seconds
    async with app.open_async():
        worker = Worker(app=app, queues=[QUEUE], name=name, concurrency=concurrency, install_signal_handlers=False,
                        additional_context={"segsync": runtime}, update_heartbeat_interval=max(1.0, stalled / 4),
                        stalled_worker_timeout=stalled, fetch_job_polling_interval=2.0)
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if runtime.stop.is_set():
                log.warning("worker %s: second stop signal, exiting now", name)
                os._exit(130)
            log.warning("worker %s: stopping; running runs stop after the batch in flight and are re-queued", name)
            runtime.stop.set()
            worker.stop()  # type: ignore[no-untyped-call]  # procrastinate leaves it unannotated

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        maintenance = asyncio.create_task(Maintenance(app, cfg, runtime.store.engine).run(), name="maintenance")
        log.info("worker %s: %d tenant(s), concurrency %d, queue %s", name, len(cfg.tenants), concurrency, QUEUE)
        try:
            await worker.run()  # type: ignore[no-untyped-call]
        finally:
            maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

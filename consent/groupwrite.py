"""Group commit for the webhook: many requests, one transaction, answered as soon as it commits.

Request handlers :meth:`GroupWriter.submit` their parsed, authenticated work and await the returned
future. One writer thread takes what is queued - waiting at most ``window`` seconds for company when
a request arrives alone - hands up to ``max_group`` items to ``write`` (one transaction, one chain
extension per tenant: see ``consent.webhook``) and settles every future with its item's outcome.

The queue is bounded: when ``max_pending`` items already wait, or the oldest has waited more than
``max_wait`` seconds (the writer does not keep up), :meth:`submit` raises
:class:`Saturated` with how many seconds to wait, which the webhook answers as 429 with
``Retry-After`` (which webhook senders retry) instead of letting requests queue for minutes.
Nothing is acknowledged before its commit, so a request that was refused or never answered is
retried by its sender, and the receipts make the retry a no-op when the first attempt did commit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger("segsync.consent.groupwrite")

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

WINDOW_SECONDS = 0.002
MAX_GROUP = 200
MAX_PENDING = 256
MAX_WAIT_SECONDS = 0.5


class Saturated(Exception):
    """The queue is full: come back in ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"busy: retry after {retry_after} s")
        self.retry_after = retry_after


_Entry = tuple[ItemT, asyncio.AbstractEventLoop, "asyncio.Future[ResultT]", float]  # float: when queued


class GroupWriter(Generic[ItemT, ResultT]):
    """One writer thread that commits queued items in groups (see the module docstring).

    ``write(items)`` returns one outcome per item, in order: a result, or the exception that item
    failed with. An exception raised by ``write`` itself fails every item of the group.
    """

    def __init__(
        self,
        write: Callable[[Sequence[ItemT]], Sequence[ResultT | Exception]],
        *,
        window: float = WINDOW_SECONDS,
        max_group: int = MAX_GROUP,
        max_pending: int = MAX_PENDING,
        max_wait: float = MAX_WAIT_SECONDS,
        after_group: Callable[[Sequence[ItemT], Sequence[ResultT | Exception]], None] | None = None,
        name: str = "segsync-group-writer",
    ) -> None:
        if max_group < 1 or max_pending < 1 or window < 0:
            raise ValueError("max_group and max_pending must be at least 1 and window not negative")
        self._write = write
        self._after = after_group
        self.window = window
        self.max_group = max_group
        self.max_pending = max_pending
        self.max_wait = max_wait
        self._name = name
        self._queue: deque[_Entry[ItemT, ResultT]] = deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._rate = 0.0  # items committed per second, smoothed (for Retry-After)
        self.groups = 0  # transactions committed (or attempted), for tests and the bench
        self.items = 0
        self.taken = 0  # items handed to ``write`` so far
        self._busy = False  # a group is being written or its after-group hook runs

    def pending(self) -> int:
        with self._cv:
            return len(self._queue)

    def retry_after(self) -> int:
        """Seconds until the queue as it is now has drained, at the recent commit rate (1..30)."""
        with self._cv:
            depth = len(self._queue)
        if self._rate <= 0:
            return 1
        return max(1, min(30, math.ceil(depth / self._rate)))

    def submit(self, item: ItemT) -> asyncio.Future[ResultT]:
        """Queue ``item``; await the future for its outcome. :class:`Saturated` when the queue is full."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ResultT] = loop.create_future()
        with self._cv:
            # Full, or the oldest waiting request has waited longer than max_wait already: then the
            # writer does not keep up, and a new request would only wait longer still.
            now = time.monotonic()
            if len(self._queue) >= self.max_pending or (self._queue and now - self._queue[0][3] > self.max_wait):
                full = True
            else:
                full = False
                self._queue.append((item, loop, future, now))
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
                self._cv.notify()
        if full:
            raise Saturated(self.retry_after())
        return future

    def _take(self) -> list[_Entry[ItemT, ResultT]]:
        with self._cv:
            while not self._queue:
                self._cv.wait()
            # Company is waited for only by a request that came alone: what queued while the last
            # group was written goes at once (waiting then would only add latency under load).
            deadline = time.monotonic() + (self.window if len(self._queue) == 1 else 0.0)
            while len(self._queue) < self.max_group:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.max_group))]
            self.taken += len(batch)
            self._busy = True
            return batch

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until nothing is queued and the last group, its answers and its ``after_group`` hook are done
        (False if ``timeout`` passed first). The hook runs after the answers, so a caller that got its answer
        and needs what the hook did (tests: the drain was woken) waits here instead of racing the writer."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._queue and not self._busy, timeout)

    def _run(self) -> None:
        while True:
            batch = self._take()
            items = [entry[0] for entry in batch]
            started = time.monotonic()
            outcomes: Sequence[ResultT | Exception]
            try:
                outcomes = self._write(items)
                if len(outcomes) != len(items):
                    raise RuntimeError(f"write returned {len(outcomes)} outcomes for {len(items)} items")
            except Exception as exc:  # the whole group failed; each request gets the error
                log.exception("group write of %d items failed", len(items))
                outcomes = [exc] * len(items)
            elapsed = max(time.monotonic() - started, 1e-4)
            rate = len(items) / elapsed
            self._rate = rate if self._rate <= 0 else 0.8 * self._rate + 0.2 * rate
            self.groups += 1
            self.items += len(items)
            # One wake-up per event loop for the whole group, not one per request.
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[ResultT], ResultT | Exception]]] = {}
            for (_, loop, future, _queued), outcome in zip(batch, outcomes, strict=True):
                by_loop.setdefault(loop, []).append((future, outcome))
            for loop, settled in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle_all, settled)
                except RuntimeError:  # that event loop is gone (the server stopped while they waited)
                    log.warning("%d webhook requests' event loop closed before their outcome arrived", len(settled))
            if self._after is not None:  # after the answers: it is not on their path
                try:
                    self._after(items, outcomes)
                except Exception:
                    log.exception("after-group hook failed")
            with self._cv:
                self._busy = False
                self._cv.notify_all()


def _settle_all(settled: list[tuple[asyncio.Future[ResultT], ResultT | Exception]]) -> None:
    for future, outcome in settled:
        _settle(future, outcome)


def _settle(future: asyncio.Future[ResultT], outcome: ResultT | Exception) -> None:
    if future.done():  # cancelled: the client disconnected (the write committed regardless)
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


__all__ = ["MAX_GROUP", "MAX_PENDING", "MAX_WAIT_SECONDS", "WINDOW_SECONDS", "GroupWriter", "Saturated"]

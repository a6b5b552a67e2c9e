"""What the advisor-CRM simulators (Redtail, Wealthbox) share: the book as a CRM sees it, a rate window, a server.

:func:`crm_people` turns a :class:`sandbox.book.Book` into the people an advisor's CRM holds: one record
per CRM person (a merged-away duplicate lends its address to the survivor as a second email), a birth
date consistent with the book's age, the dated money events (deposits, upgrades) a CRM keeps as
notes/activities/opportunities, and households of 2-4 people. Households come from the book's
``household_id`` (runs of 1-3 people); every third three-person household also takes in the next
person who lives alone, so four-person households exist too. The simulators expose the resulting grouping
(``household_of``) so tests keep the hidden truth.

These helpers are vendor-neutral; they sit here only because this package was built first (candidates
for ``sandbox/common.py``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Self

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.common import CallLog, Faults, ServerThread, instrument

if TYPE_CHECKING:
    from starlette.responses import Response

    from sandbox.book import Book

MONEY_EVENTS = ("deposit", "upgrade")


@dataclass(frozen=True)
class MoneyEvent:
    """A dated event a CRM records against a person: a deposit or an upgrade, with its value."""

    type: str
    occurred_at: datetime
    value: float


@dataclass
class CrmPerson:
    """One person as an advisor's CRM holds them (derived from a book :class:`sandbox.book.Person`)."""

    key: str
    first_name: str
    last_name: str
    emails: list[str]  # primary first
    birth_date: date
    age: int
    tier: str
    aum: float
    created_at: datetime
    updated_at: datetime
    email_optout: bool
    lifecycle: str
    household: str | None  # simulator household key, None when the person lives alone
    events: list[MoneyEvent] = field(default_factory=list)


def birth_date_for(age: int, as_of: datetime, salt: int) -> date:
    """A birth date that makes the person exactly ``age`` on ``as_of`` (day spread by ``salt``)."""
    month, day = 1 + salt * 7 % 12, 1 + salt * 11 % 28
    born = date(as_of.year - age, month, day)
    if (month, day) > (as_of.month, as_of.day):  # birthday not reached yet this year
        born = date(as_of.year - age - 1, month, day)
    return born


def _households(keys_by_hh: dict[str, list[str]]) -> dict[str, str]:
    """person key -> household key, only for households of two or more (see the module docstring)."""
    out: dict[str, str] = {}
    threes = 0
    waiting: str | None = None  # a three-person household that takes in the next person living alone
    for hh, members in keys_by_hh.items():
        if len(members) == 1 and waiting is not None:
            out[members[0]] = waiting
            waiting = None
            continue
        if len(members) == 3:
            threes += 1
            if threes % 3 == 0:
                waiting = hh
        if len(members) >= 2:
            out.update((k, hh) for k in members)
    return out


def crm_people(book: Book) -> list[CrmPerson]:
    """The CRM's view of ``book``: in-CRM people in book order, merged duplicates folded into survivors."""
    events: dict[str, list[MoneyEvent]] = {}
    money = MONEY_EVENTS
    for e in book.events:  # time-ordered, so each person's list is too; millions of rows, so kept tight
        if e.type in money:
            events.setdefault(e.person_key, []).append(MoneyEvent(e.type, e.occurred_at, float(e.value or 0.0)))
    kept = [p for p in book.people if p.in_crm and not p.merged_into]
    extra: dict[str, list[str]] = {}
    for p in book.people:
        if p.in_crm and p.merged_into:
            extra.setdefault(p.merged_into, []).append(p.email)
    keys_by_hh: dict[str, list[str]] = {}
    for p in kept:
        keys_by_hh.setdefault(p.household_id, []).append(p.key)
    household = _households(keys_by_hh)
    out = []
    for n, p in enumerate(kept):
        evs = events.get(p.key, [])
        emails = [p.email] + [e for e in (p.previous_email, *extra.get(p.key, [])) if e and e != p.email]
        updated = max([p.created_at, *(e.occurred_at for e in evs)])
        out.append(CrmPerson(
            key=p.key, first_name=p.first_name, last_name=p.last_name, emails=emails,
            birth_date=birth_date_for(p.age, book.as_of, n), age=p.age, tier=p.account_tier, aum=p.aum,
            created_at=p.created_at, updated_at=min(updated, book.as_of), email_optout=p.crm_email_optout,
            lifecycle=p.lifecyclestage, household=household.get(p.key), events=evs,
        ))
    return out


class SlidingWindow:
    """At most ``limit`` requests in any ``window`` seconds (thread-safe); ``limit=0`` switches it off."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self._clock = limit, window, clock
        self._stamps: deque[float] = deque()
        self._lock = threading.Lock()
        self.refused = 0

    def admit(self) -> float:
        """Count one request; return 0.0 if admitted, else the seconds until a slot frees up."""
        if self.limit <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            while self._stamps and now - self._stamps[0] >= self.window:
                self._stamps.popleft()
            if len(self._stamps) >= self.limit:
                self.refused += 1
                return max(self.window - (now - self._stamps[0]), 0.001)
            self._stamps.append(now)
            return 0.0


def hold_start(app: ASGIApp) -> ASGIApp:
    """Send a response's start line only together with its first body message.

    :func:`sandbox.common.instrument` logs a call when the body ends; for a bodiless answer (204) a
    client is done as soon as it sees the start line, so without this it could look at the call log
    before the call is in it.
    """

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        held: list[Message] = []

        async def holding_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                held.append(message)
                return
            if held:
                await send(held.pop())
            await send(message)

        await app(scope, receive, holding_send)

    return wrapped


class Running:
    """A simulator served over HTTP on loopback: ``url``, ``calls``, ``faults``, ``sim``; a context manager.

    Pass ``calls`` (and ``faults``) to share a call log with other simulators, as ``start_sandbox`` does.
    """

    def __init__(self, sim: Any, vendor: str, app: ASGIApp, prefix: str, rate_limited: Callable[[], Response],
                 server_error: Callable[[int], Response], seed: int = 0, calls: CallLog | None = None,
                 faults: Faults | None = None) -> None:
        self.sim = sim
        self.calls = calls if calls is not None else CallLog()
        self.faults = faults if faults is not None else Faults(seed=seed)
        self._server = ServerThread(hold_start(instrument(app, vendor, self.calls, self.faults, rate_limited,
                                                          server_error)))
        self.root = self._server.url
        self.url = self._server.url + prefix

    def request_stop(self) -> None:
        """Ask the server to exit without waiting (see :meth:`sandbox.common.ServerThread.request_stop`)."""
        self._server.request_stop()

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        self._server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Paginators: where the next page starts, as data, with no I/O, and loops detected.

A paginator is told what each answer said (:meth:`update`) and says what to ask for next
(:attr:`done`, its position attributes). :func:`paginate` is the only loop: it asks ``fetch`` for
the next page until the paginator is done. So a vendor module never writes ``while True`` for
paging, and a vendor that repeats a paging token, or never stops, gets a
:class:`PagingLoopError` naming the call instead of an endless loop.

    OffsetPaginator     offset + total (Mailchimp ``offset``/``count``/``total_items``)
    TokenPaginator      an opaque ``after`` token (HubSpot ``paging.next.after``, Salesforce ``nextRecordsUrl``)
    PageNumberPaginator page=1,2,... until a short or empty page (Wealthbox, Redtail)
    keyset_step / keyset_advance   keyset on (modified time, id) for search APIs that stop at N results
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from core.errors import InputError

T = TypeVar("T")
MAX_PAGES = 100_000  # no real pull needs more; a vendor that keeps paging past it is looping


class PagingLoopError(InputError):
    """A vendor repeated a paging position or never stopped paging."""


class Paginator(ABC):
    """Base: counts pages and stops a pull that never ends. Each strategy implements :meth:`update`."""

    def __init__(self, what: str, max_pages: int = MAX_PAGES) -> None:
        self.what = what
        self.max_pages = max_pages
        self.pages = 0
        self.done = False

    def _count(self) -> None:
        self.pages += 1
        if self.pages > self.max_pages:
            raise PagingLoopError(f"{self.what} kept paging past {self.max_pages:,} pages; stopping")

    @abstractmethod
    def update(self, body: Any) -> bool:
        """Take one answer; return False when the page must be dropped and asked for again."""


class OffsetPaginator(Paginator):
    """``offset`` paging against a ``total``. ``extract(body) -> (items, total)`` reads one answer.

    With ``shrinking_window``, a total that fell since the last page means records left a fixed
    window behind us (they changed while we paged): the offset steps back by that many and the
    page is asked for again, so no record is skipped.
    """

    def __init__(self, what: str, extract: Callable[[Any], tuple[list[Any], int]], *, offset: int = 0,
                 shrinking_window: bool = False, max_pages: int = MAX_PAGES) -> None:
        super().__init__(what, max_pages)
        self.extract = extract
        self.offset = offset
        self.total: int | None = None
        self.shrinking_window = shrinking_window
        self.items: list[Any] = []
        self.first = offset  # the offset of the page just read

    def update(self, body: Any) -> bool:
        self._count()
        items, total = self.extract(body)
        if self.shrinking_window and self.total is not None and total < self.total:
            self.offset = max(0, self.offset - (self.total - total))
            self.total = total
            return False
        self.total, self.items, self.first = total, items, self.offset
        self.offset += len(items)
        self.done = not items or self.offset >= total
        return True


class TokenPaginator(Paginator):
    """An opaque "next page" token; ``extract(body) -> (items, next token or None)``.

    A token seen before in this pull is a :class:`PagingLoopError`, never a loop.
    """

    def __init__(self, what: str, extract: Callable[[Any], tuple[list[Any], str | None]], *,
                 after: str | None = None, max_pages: int = MAX_PAGES) -> None:
        super().__init__(what, max_pages)
        self.extract = extract
        self.after = after
        self.items: list[Any] = []
        self._seen: set[str] = {after} if after else set()

    def update(self, body: Any) -> bool:
        self._count()
        self.items, token = self.extract(body)
        if token is not None:
            if token in self._seen:
                raise PagingLoopError(f"{self.what} repeated the paging token {token!r}")
            self._seen.add(token)
        self.after = token
        self.done = token is None
        return True


class PageNumberPaginator(Paginator):
    """``page=1,2,...``; ``extract(body) -> (items, total pages or None)``; a short or empty page ends it.

    A page whose items are exactly the previous page's is a :class:`PagingLoopError` (a vendor that
    ignores the page parameter answers page 1 forever).
    """

    def __init__(self, what: str, extract: Callable[[Any], tuple[list[Any], int | None]], *, page: int = 1,
                 per_page: int = 100, max_pages: int = MAX_PAGES) -> None:
        super().__init__(what, max_pages)
        self.extract = extract
        self.page = page
        self.per_page = per_page
        self.items: list[Any] = []

    def update(self, body: Any) -> bool:
        self._count()
        items, last_page = self.extract(body)
        if items and items == self.items:
            raise PagingLoopError(f"{self.what} answered page {self.page} with the same records as page "
                                  f"{self.page - 1}")
        self.items = items
        self.done = not items or len(items) < self.per_page or (last_page is not None and self.page >= last_page)
        self.page += 1
        return True


def paginate(fetch: Callable[[], T], paginator: Paginator) -> Iterator[T]:
    """The one paging loop: ``fetch()`` the page the paginator points at, update it, yield the answer.

    ``fetch`` reads the paginator's position (``offset``, ``after``, ``page``) itself. A page the
    paginator drops (see :class:`OffsetPaginator`) is fetched again, not yielded.
    """
    while not paginator.done:
        body = fetch()
        if paginator.update(body):
            yield body


# --------------------------------------------------------------------------- keyset on (modified, id)

KeysetStep = Literal["tie", "range"]


@dataclass(frozen=True)
class Keyset:
    """A keyset position over ``(modified, id)``: everything modified before ``ts`` has been read, and of
    the records modified exactly at ``ts``, every one with ``id <= last_id`` (``last_id`` None: all of them).

    Queries that continue from it never use an offset, so they never hit a search API's result cap
    (HubSpot stops at 10,000), and a bulk edit that gives thousands of records one timestamp is read
    in id order within that timestamp.
    """

    ts: int
    last_id: int | None = None


def keyset_step(pos: Keyset, cap: int) -> KeysetStep | None:
    """The next query from ``pos`` below ``cap`` (exclusive): "tie" (same ts, id > last_id), "range"
    (ts < modified < cap, by modified), or None when there is nothing left."""
    if pos.last_id is not None:
        return "tie"
    if pos.ts + 1 >= cap:
        return None
    return "range"


def keyset_advance(pos: Keyset, step: KeysetStep, rows: list[tuple[int, int]], limit: int,
                   what: str) -> tuple[Keyset, set[int]]:
    """Move past one page of ``(modified, id)`` rows; return the new position and the ids to emit.

    A full range page may end inside a timestamp whose other records are on later pages (the range
    query sorts by modified only, so ties come in no particular order): those are not emitted here
    but read again by the tie query, in id order. A position that does not move is a
    :class:`PagingLoopError`.
    """
    if step == "tie":
        ids = {i for _, i in rows}
        if len(rows) < limit:
            return Keyset(pos.ts, None), ids
        top = max(ids)
        if pos.last_id is not None and top <= pos.last_id:
            raise PagingLoopError(f"{what} returned ids at or below {pos.last_id} for a GT query")
        return Keyset(pos.ts, top), ids
    if not rows:
        return pos, set()
    top = max(ts for ts, _ in rows)
    if top <= pos.ts:
        raise PagingLoopError(f"{what} returned a modified time {top} not after {pos.ts} for a GT query")
    if len(rows) < limit:  # the whole range fitted: everything up to top is read
        return Keyset(top, None), {i for _, i in rows}
    return Keyset(top, 0), {i for ts, i in rows if ts < top}  # continue with the tie query for top


# --------------------------------------------------------------------------- pages from a stream


def chunked(items: Iterable[T], size: int) -> Iterator[tuple[list[T], bool]]:
    """``(chunk, is_last)`` over a stream, ``size`` items a chunk; the last chunk (maybe empty) always comes.

    For sources that read a stream (a file) rather than pages: a cursor covering the whole stream
    rides on the last chunk, which is handed out only after the stream ended without an error.
    """
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk, False
            chunk = []
    yield chunk, True

"""The Redtail CRM connector: paged pulls (full, then ``updated_since``), tag groups and UDFs out, opt-outs.

Pulls read ``/contacts`` with emails, family, tag memberships and activities included (no extra call per
contact); accounts and notes have no bulk endpoint, so they cost one read each per *changed* contact
(switch them off with ``pull_accounts``/``pull_notes``). The pull also remembers each contact's tag
memberships, so a push in the same run reads nothing first (writes: ``writes.py``). Every call goes
through one :class:`~connectors.kit.http.CallPolicy` (``client.py``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from connectors.base import Contact, CrmConnector, PullPage
from connectors.kit.http import RetrySettings
from connectors.kit.paging import PageNumberPaginator, paginate
from connectors.redtail import mapping as M
from connectors.redtail import settings as S
from connectors.redtail.client import RedtailClient
from connectors.redtail.writes import WriteMixin
from core.errors import ConfigError, InputError, RejectedRecordError
from core.times import as_utc, parse_time_or_none

log = logging.getLogger("segsync.redtail")
DEFAULT_EVENT_TYPES = {"deposit": "deposit", "account upgrade": "upgrade"}


@dataclass
class Cursor:
    """Where a pull stands: ``since`` None = the full pass; ``page`` to read next; ``started`` = that pass's run;
    ``optout`` = the opt-out group's member ids at the last pass's end (None: never listed)."""

    since: str | None = None
    page: int = 1
    started: str | None = None
    optout: list[int] | None = None

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        try:
            raw = json.loads(text)
            cur = cls(**raw)
        except (ValueError, TypeError):
            raise InputError(f"redtail: unreadable stored cursor {text[:80]!r}; reset the CRM cursor") from None
        if not isinstance(cur.page, int) or cur.page < 1:
            raise InputError(f"redtail: stored cursor has a bad page {cur.page!r}")
        if cur.optout is not None and not (isinstance(cur.optout, list)
                                           and all(isinstance(i, int) for i in cur.optout)):
            raise InputError("redtail: stored cursor has a bad opt-out member list; reset the CRM cursor")
        return cur


class RedtailConnector(WriteMixin, CrmConnector):
    """One Redtail database, reached with an API key and one Redtail user's credentials.

    ``tag_group`` prefixes segsync's tag groups (``"<tag_group>: <segment>"``); ``optout_tag_group`` is the
    firm's "do not email" group; ``event_types`` maps note categories and activity subjects (lower case)
    to segsync event types. ``requests_per_second`` 0 turns client-side pacing off (a local simulator).
    """

    name = "redtail"
    limits = S.limits()

    def __init__(self, api_key: str, username: str, password: str, base_url: str = S.DEFAULT_BASE_URL, *,
                 tag_group: str = S.DEFAULT_TAG_GROUP, optout_tag_group: str = S.DEFAULT_OPTOUT_TAG_GROUP,
                 page_size: int = S.PAGE_SIZE, requests_per_second: float = S.REQUESTS_PER_SECOND,
                 pull_accounts: bool = True, pull_notes: bool = True,
                 event_types: Mapping[str, str] | None = None, retry: RetrySettings | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        for key, value in (("api_key", api_key), ("username", username), ("password", password)):
            if not value:
                raise ConfigError(f"redtail: crm.{key} is empty")
        if not 1 <= page_size <= S.PAGE_SIZE:
            raise ConfigError(f"redtail: crm.page_size must be 1-{S.PAGE_SIZE}, got {page_size}")
        self.client = RedtailClient(api_key, username, password, base_url, requests_per_second=requests_per_second,
                                    retry=retry, sleep=sleep)
        self.client.page_size = page_size
        setattr(self, "limits", S.limits(requests_per_second, page_size))  # noqa: B010 - per-instance limits
        self.tag_group, self.optout_tag_group = tag_group, optout_tag_group
        self.pull_accounts, self.pull_notes = pull_accounts, pull_notes
        self.event_types = {k.lower(): v for k, v in (event_types or DEFAULT_EVENT_TYPES).items()}
        self._groups: dict[str, Mapping[str, Any]] | None = None  # lower-case name -> tag group
        self._fields: dict[str, int] | None = None  # lower-case UDF field name -> id
        self._segment_groups: dict[str, int] = {}  # segment -> tag group id (ensure_schema)
        # What segsync knows of each contact's memberships (pulled this run, or written since) and UDF values
        # (written by us): a push reads a contact only when it knows nothing of it.
        self._memberships: dict[str, dict[int, int]] = {}
        self._udfs: dict[str, dict[int, tuple[int, str]]] = {}
        self._fresh_fields: set[int] = set()  # UDF fields this connector created: nobody has a value yet
        self._scores_wanted: tuple[int, ...] = ()
        self._gone: set[str] = set()  # contacts a write found deleted (404): the next pull reports them archived

    def __repr__(self) -> str:
        return f"RedtailConnector({self.client!r})"

    def stats(self) -> dict[str, Any]:
        """API calls by endpoint class (``write_calls`` among them), 429s, retries and failures."""
        return self.client.policy.stats.as_dict(S.WRITE_ENDPOINTS)

    def fence_calls(self, guard: Callable[[], None] | None) -> None:
        """Run ``guard`` before every call (each attempt, each page, the token request too); see the base class."""
        self.call_guard = self.client.policy.guard = guard

    # ----------------------------------------------------------------- pull

    def pull_contacts(self, cursor: str | None, run_started: datetime) -> Iterator[PullPage]:
        """A full pass on the first run, then contacts with ``updated_since`` the last pass's start (less skew)."""
        cur = Cursor.decode(cursor)
        started = as_utc(run_started)
        cur.started = cur.started or started.isoformat()
        what = "GET /contacts/search?updated_since" if cur.since else "GET /contacts"
        # per_page=1: only an empty page or meta.total_pages ends the pass (sub-lists ignore our page size).
        pager = PageNumberPaginator(f"redtail: {what}", lambda b: (M.rows_of(b, "contacts", what), M.total_pages(b)),
                                    page=cur.page, per_page=1)
        seen: set[str] = set()
        since = cur.since
        last_total: int | None = None
        gone, self._gone = sorted(self._gone), set()
        for body in paginate(lambda: self.client.contacts(pager.page, since), pager):
            page = PullPage(total=M.total_records(body))
            # Contacts a write found deleted (404) since the last pull: the listings never say so.
            page.contacts.extend(Contact(source=S.SOURCE, vendor_id=vid, email=None, archived=True) for vid in gone)
            seen.update(gone)
            gone = []
            for raw in pager.items:
                vid = M.record_id(raw, what)
                if vid in seen:  # a contact changed mid-pass moved the pages by one: read once
                    continue
                seen.add(vid)
                self._add(page, raw, started, what)
            if last_total is not None and page.total is not None and page.total < last_total:
                # Contacts left the listing (deleted) while we paged: the ones behind them moved up into the
                # page before this one. Read that page again (what was read already is skipped).
                pager.page, pager.done = max(1, pager.page - 2), False
            last_total = page.total
            if pager.done:
                low = (parse_time_or_none(cur.started) or started) - timedelta(seconds=S.CLOCK_SKEW_SECONDS)
                members = self._optout_members(page, cur.optout, started)
                cur = Cursor(since=min(low, started).isoformat(), optout=members)
            else:
                cur.page = pager.page
            page.cursor = cur.encode()
            yield page

    def _add(self, page: PullPage, raw: Mapping[str, Any], started: datetime, what: str) -> None:
        contact = M.to_contact(raw, started, what, own_prefix=self.group_name(""))
        if isinstance(raw.get("tag_memberships"), list):
            self._memberships[contact.vendor_id] = M.membership_ids(raw["tag_memberships"])
        self._udfs.pop(contact.vendor_id, None)  # changed since we wrote: its UDF values are read again
        if self.pull_accounts and not contact.archived:
            accounts = self._sub_list(contact.vendor_id, "accounts", self.client.accounts)
            if accounts is not None:
                contact = M.with_accounts(contact, accounts)
        page.contacts.append(contact)
        page.events.extend(M.activity_events(contact, raw, self.event_types, started))
        if self.pull_notes and not contact.archived:
            notes = self._sub_list(contact.vendor_id, "notes", self.client.notes)
            page.events.extend(M.note_events(contact, notes or [], self.event_types, started))

    def _optout_members(self, page: PullPage, before: list[int] | None, started: datetime) -> list[int]:
        """List the opt-out group's members (paged) at the end of every pass; each one not among ``before`` (the
        last pass's) becomes a withdrawal dated now. A membership need not change the contact's ``updated_at``,
        so the contact listings alone could miss it. Returns the member ids to remember."""
        group = self.groups().get(self.optout_tag_group.lower())
        if group is None:
            return []
        what = f"GET /tag_groups/{group['id']}/contacts"
        rows = self.all_rows(lambda n: self.client.tag_group_contacts(int(group["id"]), n), "contacts", what)
        known = set(before or ())
        members: dict[int, Mapping[str, Any]] = {int(M.record_id(r, what)): r for r in rows}
        for cid, raw in members.items():
            if cid not in known:
                signal = M.optout_signal(raw, self.optout_tag_group, started, what)
                if signal is not None:
                    page.consent.append(signal)
        return sorted(members)

    def _sub_list(self, vid: str, key: str, fetch: Callable[[str, int], Any]) -> list[Mapping[str, Any]] | None:
        """Every row of a contact's sub-list; None when Redtail refuses it for this contact (e.g. just deleted)."""
        try:
            return self.all_rows(lambda page: fetch(vid, page), key, f"GET /contacts/{vid}/{key}")
        except RejectedRecordError as exc:
            log.warning("redtail: skipping %s of contact %s: %s", key, vid, exc.detail)
            return None


__all__ = ["RedtailConnector"]

"""The Mailchimp ESP connector: pull members and engagement, push tags and static segments, suppress.

The one status change segsync ever makes is :meth:`MailchimpConnector.suppress` (``unsubscribed``);
the one status it ever gives a new member is ``pending``, and only with ``add_missing_as_pending``.
Nothing here sends ``subscribed`` in ``status`` or ``status_if_new``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import islice
from typing import Any

from connectors.base import EspConnector, ObjectLedger, PullPage, RecordResult, TagChange
from connectors.kit.http import RetrySettings
from connectors.kit.paging import OffsetPaginator, paginate
from connectors.mailchimp import settings as S
from connectors.mailchimp.client import MailchimpClient, is_compliance, list_items, offset_pages
from connectors.mailchimp.mapping import activity_events, fmt_time, member_contact, parse_time, subscriber_hash
from connectors.mailchimp.push import Pusher
from core.emails import looks_like_email, normalize_email
from core.errors import ApiError, ConfigError, FatalApiError
from core.times import now


def _floor(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError("run_started must be timezone-aware (UTC)")
    return when.astimezone(UTC).replace(microsecond=0)


class MailchimpConnector(EspConnector):
    """One Mailchimp audience (``list_id``) reached with one API key."""

    name = "mailchimp"
    limits = S.LIMITS

    def __init__(
        self,
        api_key: str,
        list_id: str,
        base_url: str | None = None,
        *,
        add_missing_as_pending: bool = False,
        adopt: Sequence[str] = (),
        retry: RetrySettings | None = None,
        timeout: tuple[float, float] = S.TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key:
            raise ConfigError("esp.api_key: a Mailchimp API key is required")
        if not list_id:
            raise ConfigError("esp.list_id: a Mailchimp audience (list) id is required")
        if base_url is None:
            try:
                base_url = S.base_url_for(api_key)
            except ValueError as exc:
                raise ConfigError(f"esp.api_key: {exc}") from None
        self.list_id = list_id
        self.add_missing_as_pending = add_missing_as_pending
        self.client = MailchimpClient(api_key, base_url, retry=retry, timeout=timeout, sleep=sleep)
        self.pusher = Pusher(self.client, list_id, self._blocked, add_missing_as_pending=add_missing_as_pending,
                             adopt=adopt, sleep=sleep)
        self._list_checked = False
        self._index: dict[str, tuple[str, str]] | None = None  # subscriber hash -> (unique_email_id, status)
        self._index_as_of: datetime | None = None  # Mailchimp's changes up to here are in the index
        self._index_at: float | None = None  # monotonic time of the last read (None: read before trusting it)
        self._blocked_only: dict[str, str] | None = None  # without an index: unsubscribed/cleaned members only
        self._blocked_at = 0.0

    def __repr__(self) -> str:
        return f"MailchimpConnector(list_id={self.list_id!r}, base_url={self.client.base_url!r})"

    # ------------------------------------------------------------------ checks and caches

    def check(self) -> None:
        """Fail fast, naming the problem, on a refused key or an unknown audience (once per connector)."""
        if self._list_checked:
            return
        try:
            self.client.get_list(self.list_id)
        except FatalApiError:
            raise
        except ApiError as exc:
            if exc.status == 404:
                raise FatalApiError(
                    f"{S.VENDOR}: audience (list id) {self.list_id!r} was not found for this API key "
                    f"- check esp.list_id ({exc.detail})", vendor=S.VENDOR, status=404, detail=exc.detail) from None
            raise
        self._list_checked = True

    def known_members(self, members: Mapping[str, tuple[str, str | None]], cursor: str | None) -> None:
        """Seed the member index (email -> (unique_email_id, status)) from what segsync stored, current as of
        the members ``cursor``: later reads ask Mailchimp only for members changed since (``since_last_changed``).
        Without a cursor (nothing pulled yet) the seed is not trusted and the first read lists every member."""
        as_of = parse_time(cursor, "the stored members cursor") if cursor else None
        if as_of is None or not members:
            return
        self._index = {subscriber_hash(email): (uid, status or "") for email, (uid, status) in members.items()}
        self._index_as_of, self._index_at = as_of, None

    def _members(self) -> dict[str, tuple[str, str]]:
        """subscriber hash -> (unique_email_id, status) of every member (re-read after a few minutes).

        Seeded (see :meth:`known_members`) or read once: later reads ask only for members changed since the
        last one, so an unchanged audience costs one call, not a page per thousand members.
        """
        self.check()
        if self._index is not None and self._index_at is not None \
                and time.monotonic() - self._index_at <= S.STATUS_INDEX_TTL:
            return self._index
        index = dict(self._index or {})
        params: dict[str, Any] = {"count": S.PAGE_SIZE,
                                  "fields": ["members.id", "members.unique_email_id", "members.status", "total_items"]}
        if self._index is not None and self._index_as_of is not None:
            params["since_last_changed"] = fmt_time(self._index_as_of - S.CURSOR_OVERLAP)
        read_at = now()
        for _, items in offset_pages(f"GET /lists/{self.list_id}/members", "members", lambda offset: (
                self.client.list_members(self.list_id, offset=offset, **params))):
            for m in items:
                if isinstance(m, Mapping) and m.get("id"):
                    index[str(m["id"])] = (str(m.get("unique_email_id") or m["id"]), str(m.get("status") or ""))
        self._index, self._index_as_of, self._index_at = index, read_at, time.monotonic()
        return index

    def _blocked(self) -> dict[str, str]:
        """subscriber hash -> status of every unsubscribed or cleaned member.

        From the member index when there is one (changes only); otherwise only those two statuses are
        listed (a fraction of the audience), kept a few minutes and updated by what this connector sees.
        """
        if self._index is not None:
            return {h: status for h, (_, status) in self._members().items() if status in S.BLOCKED_STATUSES}
        self.check()
        if self._blocked_only is None or time.monotonic() - self._blocked_at > S.STATUS_INDEX_TTL:
            found: dict[str, str] = {}
            for status in S.BLOCKED_STATUSES:
                what = f"GET /lists/{self.list_id}/members?status={status}"
                for _, items in offset_pages(what, "members", partial(self._members_with, status)):
                    found.update({str(m["id"]): str(m.get("status") or status) for m in items
                                  if isinstance(m, Mapping) and m.get("id")})
            self._blocked_only, self._blocked_at = found, time.monotonic()
        return self._blocked_only

    def _members_with(self, status: str, offset: int) -> Any:
        """One page of members with this status (id and status only)."""
        return self.client.list_members(self.list_id, status=status, count=S.PAGE_SIZE, offset=offset,
                                        fields=["members.id", "members.status", "total_items"])

    def _note_status(self, subscriber: str, status: str, uid: str | None = None) -> None:
        if self._blocked_only is not None:
            if status in S.BLOCKED_STATUSES:
                self._blocked_only[subscriber] = status
            else:
                self._blocked_only.pop(subscriber, None)
        if self._index is None:
            return
        known = self._index.get(subscriber)
        if known is not None or uid:
            self._index[subscriber] = (uid or (known[0] if known else subscriber), status)

    # ------------------------------------------------------------------ pull

    def pull_members(self, cursor: str | None, run_started: datetime) -> Iterator[PullPage]:
        """Members changed in [cursor, run_started), oldest change first, 1000 per page.

        The window's upper end is fixed (``before_last_changed``), so a member changing while we
        page leaves the window instead of reappearing; the offset steps back by however many left,
        and members already yielded in this pull are not yielded again. Each page's cursor is the
        last ``last_changed`` on it, the last page's ``run_started``, both minus one second: Mailchimp
        does not say whether ``since_last_changed`` is inclusive, and a re-read member is harmless
        where a missed one is not.
        """
        self.check()
        until = _floor(run_started)
        since = parse_time(cursor, "the stored members cursor") if cursor else None
        if since is not None and since >= until:
            return
        what = f"GET /lists/{self.list_id}/members"
        params: dict[str, Any] = {"count": S.PAGE_SIZE, "fields": list(S.MEMBER_FIELDS), "sort_field": "last_changed",
                                  "sort_dir": "ASC", "before_last_changed": fmt_time(until)}
        if since is not None:
            params["since_last_changed"] = fmt_time(since)
        seen: set[str] = set()
        pager = OffsetPaginator(f"{S.VENDOR}: {what}", lambda body: list_items(body, "members", what),
                                shrinking_window=True, max_pages=10_000)
        for _ in paginate(lambda: self.client.list_members(self.list_id, offset=pager.offset, **params), pager):
            page = PullPage(total=pager.total)  # the audience's member count: progress bars show n of total
            last_changed: str | None = None
            for i, raw in enumerate(pager.items):
                contact, signal = member_contact(raw, f"{what} member {pager.first + i}")
                last_changed = raw.get("last_changed") or last_changed
                self._note_status(str(contact.properties["subscriber_hash"]), contact.status or "", contact.vendor_id)
                if contact.vendor_id in seen:
                    continue
                seen.add(contact.vendor_id)
                page.contacts.append(contact)
                if signal is not None:
                    page.consent.append(signal)
            if pager.done:
                page.cursor = fmt_time(until - S.CURSOR_OVERLAP)
            elif last_changed:
                page.cursor = fmt_time((parse_time(last_changed) or until) - S.CURSOR_OVERLAP)
            yield page

    def _member_ids(self) -> dict[str, str]:
        """subscriber hash -> unique_email_id for every member (engagement is keyed by the stable id)."""
        return {h: uid for h, (uid, _) in self._members().items()}

    def pull_engagement(self, cursor: str | None, run_started: datetime) -> Iterator[PullPage]:
        """Sends, opens and clicks in [cursor, run_started), from the email activity of sent campaigns.

        Incremental: only campaigns sent since ``cursor`` minus a look-back are read, and only
        activity since ``cursor`` minus a day is asked for. The day of overlap catches a campaign
        that was still "sending" during the last run (not listed then, its early opens already behind
        the cursor); what is read twice has the same event ids, and the store keeps one.
        """
        self.check()
        until = _floor(run_started)
        since = parse_time(cursor, "the stored engagement cursor") if cursor else None
        if since is not None and since >= until:
            return
        ids = self._member_ids()
        params: dict[str, Any] = {"status": "sent", "list_id": self.list_id, "count": S.PAGE_SIZE,
                                  "sort_field": "send_time", "sort_dir": "ASC", "before_send_time": fmt_time(until),
                                  "fields": ["campaigns.id", "campaigns.send_time", "campaigns.settings.title",
                                             "campaigns.recipients.list_id", "total_items"]}
        if since is not None:
            params["since_send_time"] = fmt_time(since - timedelta(days=S.ENGAGEMENT_LOOKBACK_DAYS))
        campaigns: list[Mapping[str, Any]] = []
        for _, items in offset_pages("GET /campaigns", "campaigns",
                                     lambda offset: self.client.list_campaigns(offset=offset, **params)):
            campaigns += [c for c in items if isinstance(c, Mapping) and c.get("id")
                          and (c.get("recipients") or {}).get("list_id", self.list_id) == self.list_id]
        # A few campaigns are read at once (well under the key's 10 connections), yielded in send order.
        pool = ThreadPoolExecutor(max_workers=S.ACTIVITY_WORKERS, thread_name_prefix="mailchimp-activity")
        try:
            pending: deque[Future[list[PullPage]]] = deque()
            todo = iter(campaigns)
            for campaign in islice(todo, S.ACTIVITY_WORKERS):
                pending.append(pool.submit(self._campaign_activity, campaign, ids, since, until))
            while pending:
                pages = pending.popleft().result()
                for campaign in islice(todo, 1):
                    pending.append(pool.submit(self._campaign_activity, campaign, ids, since, until))
                yield from pages
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        yield PullPage(cursor=fmt_time(until - S.CURSOR_OVERLAP))

    def _campaign_activity(self, campaign: Mapping[str, Any], ids: Mapping[str, str], since: datetime | None,
                           until: datetime) -> list[PullPage]:
        """Every page of one campaign's email activity, as pages of events (empty pages dropped)."""
        cid = str(campaign["id"])
        what = f"GET /reports/{cid}/email-activity"
        sent_at = parse_time(campaign.get("send_time"), f"campaign {cid}.send_time")
        if since is not None:
            since = since - S.SENDING_GRACE
        include_sent = sent_at is not None and (since is None or sent_at >= since) and sent_at < until
        extra = {"since": fmt_time(since)} if since is not None else {}
        pages: list[PullPage] = []
        for first, items in offset_pages(what, "emails", lambda offset: self.client.email_activity(
                cid, count=S.PAGE_SIZE, offset=offset, **extra)):
            page = PullPage()
            for i, raw in enumerate(items):
                page.events += activity_events(raw, campaign, ids, since=since, until=until,
                                               include_sent=include_sent, where=f"{what} email {first + i}")
            if page.events:
                pages.append(page)
        return pages

    # ------------------------------------------------------------------ push

    def push_tags(self, changes: Sequence[TagChange]) -> list[RecordResult]:
        """Tag activations/deactivations, one result per change; never touches subscription status."""
        if not changes:
            return []
        self.check()
        return self.pusher.push_tags(changes)

    def sync_segment(self, name: str, add: Sequence[str], remove: Sequence[str]) -> list[RecordResult]:
        """Add/remove emails to/from the static segment ``name`` (created if missing), 500 per call."""
        if not add and not remove:
            return []
        self.check()
        return self.pusher.sync_segment(name, add, remove)

    def suppress(self, email: str, tag_names: Sequence[str]) -> RecordResult:
        """Deactivate segsync's tags, then unsubscribe the member: the one status change segsync makes."""
        address = normalize_email(email)
        if not address or not looks_like_email(address):
            return RecordResult(email, "failed", f"invalid email address: {email!r}")
        self.check()
        h = subscriber_hash(address)
        try:
            member = self.client.get_member(self.list_id, h)
        except FatalApiError:
            raise
        except ApiError as exc:
            if exc.status == 404:
                return RecordResult(email, "skipped", S.NOT_IN_AUDIENCE)
            return RecordResult(email, "failed", str(exc))
        status = str((member or {}).get("status") or "")
        if status in S.BLOCKED_STATUSES:
            # Already out; and nothing is ever sent to a member after their unsubscribe.
            self._note_status(h, status)
            return RecordResult(email, "skipped", f"already {status} at Mailchimp; nothing sent")
        active = {str(t.get("name")) for t in (member or {}).get("tags") or [] if isinstance(t, Mapping)}
        off = [n for n in dict.fromkeys(tag_names) if n in active]
        try:
            if off:
                self.client.update_tags(self.list_id, h, [{"name": n, "status": "inactive"} for n in off])
            self.client.unsubscribe_member(self.list_id, h)
        except FatalApiError:
            raise
        except ApiError as exc:
            outcome = "suppressed" if is_compliance(exc) else "failed"
            return RecordResult(email, outcome, str(exc))  # type: ignore[arg-type]
        self._note_status(h, S.UNSUBSCRIBED)
        return RecordResult(email, "sent", f"unsubscribed at Mailchimp; {len(off)} segsync tag(s) deactivated")

    def use_objects(self, ledger: ObjectLedger) -> None:
        """The tenant's record of the tags segsync created (see :mod:`connectors.mailchimp.owned`)."""
        self.pusher.claims.ledger = ledger

    def stats(self) -> dict[str, Any]:
        """Calls by endpoint class, write calls, 429s, retries and the connection limit."""
        return self.client.policy.stats.as_dict(S.WRITE_ENDPOINTS, {"max_connections": self.client.max_connections})

    def fence_calls(self, guard: Callable[[], None] | None) -> None:
        """Run ``guard`` before every call (each attempt, each split batch); see the base class."""
        self.call_guard = self.client.policy.guard = guard

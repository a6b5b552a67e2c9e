"""The HubSpot CRM connector: incremental pulls, idempotent schema, batched pushes, suppression.

Pulls read only the properties segsync needs (never "all properties": a long URL is a 414 on real
portals). The first pull pages the list endpoint; later pulls search on ``lastmodifieddate`` with a
keyset cursor (see :mod:`connectors.hubspot.cursor`); every ``sweep_every`` runs the archived list
is swept, since archiving does not show up in search. Writes are 100-input batch updates whose 207
answers are read record by record; a batch HubSpot rejects whole (400) is split to isolate the bad
input. Every call goes through one :class:`~connectors.kit.http.CallPolicy` (see ``client.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from connectors.base import Contact, CrmConnector, MemoryLedger, ObjectLedger, PullPage
from connectors.hubspot import mapping as M
from connectors.hubspot import settings as S
from connectors.hubspot.client import HubSpotClient, OAuthRefresh
from connectors.hubspot.cursor import (
    ContactCursor,
    EngagementCursor,
    advance,
    decode_contacts,
    decode_engagement,
    encode_contacts,
    encode_engagement,
    from_ms,
    next_search,
    to_ms,
)
from connectors.hubspot.writes import WriteMixin
from connectors.kit.http import RetrySettings
from connectors.kit.paging import TokenPaginator, paginate
from core.errors import ConfigError, FatalApiError, InputError, RejectedRecordError

log = logging.getLogger("segsync.hubspot")


class HubSpotConnector(WriteMixin, CrmConnector):
    """One HubSpot portal. ``plan`` sets the client-side rate limit (free/starter 100, pro/enterprise 190 per 10 s).

    Keyword knobs past the pipeline's contract are for the sandbox, tests and benchmarks:
    ``window_seconds`` and ``search_per_second`` (the simulator's limits when shortened),
    ``settle_seconds`` (how far behind the run start a search reads; HubSpot indexes with a lag),
    ``sweep_every`` (incremental runs between archived sweeps), ``web_lookback_days`` (how far back the first
    web-events window reaches), ``retry`` and ``sleep``.
    """

    name = "hubspot"
    limits = S.plan_limits("starter")  # the default plan; an instance carries its own plan's limits

    def __init__(
        self,
        access_token: str,
        base_url: str = S.DEFAULT_BASE_URL,
        *,
        plan: str = "starter",
        extra_properties: tuple[str, ...] = (),
        event_deal_types: tuple[str, ...] = ("deposit", "upgrade"),
        oauth: OAuthRefresh | None = None,
        window_seconds: float = S.WINDOW_SECONDS,
        search_per_second: float | None = S.SEARCH_PER_SECOND,
        settle_seconds: float = S.SEARCH_SETTLE_SECONDS,
        sweep_every: int = S.SWEEP_EVERY_RUNS,
        web_lookback_days: int = S.WEB_EVENTS_LOOKBACK_DAYS,
        adopt_properties: Sequence[str] = (),
        retry: RetrySettings | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not access_token:
            raise ConfigError("hubspot: access_token is empty")
        if plan not in S.PLAN_RATES:
            raise ConfigError(f"hubspot: unknown plan {plan!r}; one of {', '.join(S.PLAN_RATES)}")
        self.client = HubSpotClient(access_token, base_url, plan=plan, oauth=oauth, retry=retry, sleep=sleep,
                                    window_seconds=window_seconds, search_per_second=search_per_second)
        setattr(self, "limits", S.plan_limits(plan))  # noqa: B010 - per-instance value of a class-level attribute
        self.properties = list(dict.fromkeys([*S.CONTACT_PROPERTIES, *S.LIFECYCLE_DATE_PROPERTIES,
                                              *extra_properties]))
        self.event_deal_types = tuple(event_deal_types)
        self.settle_ms = int(settle_seconds * 1000)
        self.sweep_every = max(1, int(sweep_every))
        self.web_lookback_days = max(1, int(web_lookback_days))
        self._marketing: list[str] | None = None  # marketing subscription ids, read once
        self._defs: list[Mapping[str, Any]] | None = None  # the portal's subscription definitions, read once
        self.objects: ObjectLedger = MemoryLedger()  # replaced by the tenant's stored record (use_objects)
        self.adopt_properties = frozenset(adopt_properties)
        self.refused: dict[str, str] = {}
        self.skipped_streams: dict[str, str] = {}

    # ----------------------------------------------------------------- helpers

    def use_objects(self, ledger: ObjectLedger) -> None:
        """The tenant's record of the properties segsync created or adopted (see ``ensure_schema``)."""
        self.objects = ledger

    def stats(self) -> dict[str, Any]:
        """API calls by endpoint class, 429s, retries and failures; streams skipped and why; the marketing
        subscription type ids segsync unsubscribes from (never One-to-One or transactional ones)."""
        extra: dict[str, Any] = {"skipped_streams": dict(self.skipped_streams)}
        if self._marketing is not None:  # the subscription types opt-outs were (or would be) sent to
            extra["subscription_types"] = list(self._marketing)
        return self.client.policy.stats.as_dict(extra=extra)

    def fence_calls(self, guard: Callable[[], None] | None) -> None:
        """Run ``guard`` before every call (each attempt, each split batch); see the base class."""
        self.call_guard = self.client.policy.guard = guard

    def _definitions(self) -> list[Mapping[str, Any]]:
        """The portal's email subscription types (GET /communication-preferences/v3/definitions; read once)."""
        if self._defs is None:
            body = self.client.subscription_definitions() or {}
            defs = body.get("subscriptionDefinitions") if isinstance(body, Mapping) else None
            if not isinstance(defs, list):
                raise InputError("hubspot: GET /communication-preferences/v3/definitions answered without "
                                 "subscriptionDefinitions")
            self._defs = [d for d in defs if isinstance(d, Mapping) and d.get("id")]
        return self._defs

    def marketing_subscriptions(self) -> list[str]:
        """Ids of the portal's active marketing email subscriptions: the types segsync UNSUBSCRIBES from.

        Types whose ``purpose`` says marketing; when no type carries a purpose (older portals), every active
        type except One-to-One and transactional/service ones (by name). Never One-to-One, never
        transactional: an opt-out of marketing must not stop a client's statements or an advisor's emails.
        (What an opt-out READ means is :meth:`non_marketing_subscriptions`: there a name never decides.)
        """
        if self._marketing is None:
            active = [d for d in self._definitions() if d.get("isActive", True)
                      and not d.get("isInternal") and not M.non_marketing(d)]
            if any(d.get("purpose") for d in active):
                active = [d for d in active if str(d.get("purpose") or "").lower() == "marketing"]
            self._marketing = [str(d["id"]) for d in active]
        return self._marketing

    def non_marketing_subscriptions(self) -> list[str]:
        """Ids of the portal's subscription types KNOWN not to be marketing.

        Only a type whose ``purpose`` says something other than marketing (One-to-One is "Sales",
        account notices "Customer Service"). A type without a purpose is never excluded here, whatever its
        name: a name can mislead ("Account Insights Newsletter"), and a per-type opt-out that cannot be
        told apart from a marketing one must count (fail closed). The pull and the webhook read an opt-out of
        every other type as a withdrawal of email marketing.
        """
        return [str(d["id"]) for d in self._definitions()
                if str(d.get("purpose") or "") and str(d.get("purpose")).lower() != "marketing"]

    def _optout_properties(self) -> list[str]:
        """Per-subscription opt-out properties (``hs_email_optout_<id>``) of every type not known to be
        non-marketing; none if preferences are unreadable."""
        if "consent_subscriptions" in self.skipped_streams:
            return []
        try:
            other = set(self.non_marketing_subscriptions())
            return [f"hs_email_optout_{d['id']}" for d in self._definitions() if str(d["id"]) not in other]
        except (FatalApiError, RejectedRecordError, InputError) as exc:
            self.skipped_streams["consent_subscriptions"] = str(exc)
            log.warning("hubspot: reading only hs_email_optout, subscription definitions unavailable: %s", exc)
            return []

    def _page(self, rows: Sequence[Mapping[str, Any]], wanted: list[str], optout_props: list[str],
              what: str) -> PullPage:
        page = PullPage()
        for raw in rows:
            contact = M.to_contact(raw, wanted, what)
            page.contacts.append(contact)
            page.contacts.extend(M.merged_aliases(contact))
            page.consent.extend(M.optout_signals(contact, optout_props))
            page.events.extend(M.property_events(contact))
            page.events.extend(M.lifecycle_events(contact))
        return page

    # ----------------------------------------------------------------- contacts

    def pull_contacts(self, cursor: str | None, run_started: datetime) -> Iterator[PullPage]:
        """Full pull on the first run (list endpoint), then keyset search; a sweep every ``sweep_every`` runs."""
        cur = decode_contacts(cursor)
        started = to_ms(run_started)
        optout_props = self._optout_properties()
        wanted = list(dict.fromkeys([*self.properties, *optout_props]))
        if cur.phase == "full":
            yield from self._full(cur, started, wanted, optout_props)
            return
        yield from self._incremental(cur, started, wanted, optout_props)

    def _full(self, cur: ContactCursor, started: int, wanted: list[str], optout_props: list[str]) -> Iterator[
            PullPage]:
        what = "GET /crm/v3/objects/contacts"
        if cur.started is None:
            cur.started = started
        pager = TokenPaginator(f"hubspot: {what}", _page_of(what), after=cur.after)
        for _ in paginate(lambda: self.client.list_contacts(wanted, pager.after), pager):
            page = self._page(pager.items, wanted, optout_props, what)
            if pager.done:
                cur = ContactCursor(phase="inc", ts=max(0, cur.started - int(S.CLOCK_SKEW_SECONDS * 1000)))
            cur.after = pager.after
            page.cursor = encode_contacts(cur)
            yield page

    def _incremental(self, cur: ContactCursor, started: int, wanted: list[str], optout_props: list[str]) -> Iterator[
            PullPage]:
        what = "POST /crm/v3/objects/contacts/search"
        cap = started - self.settle_ms
        if not cur.sweeping:
            while (step := next_search(cur, cap, wanted, S.SEARCH_PAGE_SIZE)) is not None:
                rows = M.results_of(self.client.search_contacts(step.body), what)
                stamps = []
                for raw in rows:
                    rid = M.record_id(raw, what)
                    if not rid.isdigit():
                        raise InputError(f"hubspot: {what} returned a non-numeric contact id {rid!r}")
                    stamps.append((M.modified_ms(raw, what), int(rid)))
                cur, ids = advance(cur, step, stamps, S.SEARCH_PAGE_SIZE)
                kept = [r for r, (_, i) in zip(rows, stamps, strict=True) if i in ids]
                page = self._page(kept, wanted, optout_props, what)
                page.cursor = encode_contacts(cur)
                yield page
                if step.kind == "range" and len(rows) < S.SEARCH_PAGE_SIZE:
                    break  # the range is exhausted; asking again would return nothing
            cur.runs += 1
            cur.sweeping = cur.runs >= self.sweep_every
            yield PullPage(cursor=encode_contacts(cur))
        if cur.sweeping:
            yield from self._sweep(cur)

    def _sweep(self, cur: ContactCursor) -> Iterator[PullPage]:
        """Archived contacts (search never returns them; archiving does not touch lastmodifieddate)."""
        what = "GET /crm/v3/objects/contacts?archived=true"
        wanted = ["email", "hs_merged_object_ids", "hs_additional_emails"]
        pager = TokenPaginator(f"hubspot: {what}", _page_of(what), after=cur.sweep_after)
        for _ in paginate(lambda: self.client.list_contacts(wanted, pager.after, archived=True), pager):
            page = PullPage()
            for raw in pager.items:
                contact = M.to_contact(raw, wanted, what)
                page.contacts.append(Contact(source=contact.source, vendor_id=contact.vendor_id, email=contact.email,
                                             properties=contact.properties, updated_at=contact.updated_at,
                                             created_at=contact.created_at, archived=True,
                                             previous_emails=contact.previous_emails))
            cur.sweep_after = pager.after
            if pager.done:
                cur.sweeping, cur.runs = False, 0
            page.cursor = encode_contacts(cur)
            yield page

    # ----------------------------------------------------------------- engagement

    def pull_engagement(self, cursor: str | None, run_started: datetime) -> Iterator[PullPage]:
        """Won deposit/upgrade deals changed since the cursor, then web page views (Enterprise portals).

        Email opens/clicks/sends come with the contacts (HubSpot keeps them as contact properties).
        """
        cur = decode_engagement(cursor)
        started = to_ms(run_started)
        if cur.deals < started and not cur.web_window:
            yield from self._deals(cur, started)
        yield from self._web(cur, started)

    def won_stages(self) -> frozenset[str]:
        """Stage ids that mean "won", in every deal pipeline (one call per run; stage ids are per pipeline)."""
        return M.won_stages(self.client.deal_pipelines(), "GET /crm/v3/pipelines/deals")

    def _deals(self, cur: EngagementCursor, started: int) -> Iterator[PullPage]:
        won = self.won_stages()
        # Search lags writes (HubSpot indexes asynchronously): read only what settled; the next run takes the rest.
        cap = max(cur.deals, started - self.settle_ms)
        changed = self._changed_deals(cur, cap) if cur.deals else None
        if changed is None:  # the first run, or too many changes: page through every deal with its contacts
            yield from self._all_deals(cur, started, won)
            return
        page = PullPage()
        for deal_id in changed:
            raw = self.client.get_deal(deal_id)
            if isinstance(raw, Mapping):
                page.events.extend(e for e in M.deal_event(raw, self.event_deal_types, won)
                                   if to_ms(e.occurred_at) <= started)
        cur.deals = cap
        page.cursor = encode_engagement(cur)
        yield page

    def _changed_deals(self, cur: EngagementCursor, started: int) -> list[str] | None:
        """Ids of deals modified in (cursor, run start] by search; None when re-listing them all is cheaper."""
        what = "POST /crm/v3/objects/deals/search"
        body: dict[str, Any] = {
            "filterGroups": [{"filters": [
                {"propertyName": "hs_lastmodifieddate", "operator": "GT", "value": str(cur.deals)},
                {"propertyName": "hs_lastmodifieddate", "operator": "LTE", "value": str(started)}]}],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
            "properties": ["hs_lastmodifieddate"], "limit": S.SEARCH_PAGE_SIZE}
        answer = self.client.search_deals(body)
        ids = [M.record_id(raw, what) for raw in M.results_of(answer, what)]
        total = answer.get("total") if isinstance(answer, Mapping) else None
        if len(ids) > S.DEAL_CHANGES_PER_RUN or (isinstance(total, int) and total > len(ids)):
            return None
        return ids

    def _all_deals(self, cur: EngagementCursor, started: int, won: frozenset[str]) -> Iterator[PullPage]:
        what = "GET /crm/v3/objects/deals"
        pager = TokenPaginator(f"hubspot: {what}", _page_of(what))
        for _ in paginate(lambda: self.client.list_deals(pager.after), pager):
            page = PullPage()
            for raw in pager.items:
                props = raw.get("properties") or {}
                changed = M.parse_time(props.get("hs_lastmodifieddate")) or M.parse_time(raw.get("updatedAt"))
                changed_ms = to_ms(changed) if changed else started
                if cur.deals < changed_ms <= started:
                    page.events.extend(e for e in M.deal_event(raw, self.event_deal_types, won)
                                       if to_ms(e.occurred_at) <= started)
            if pager.done:  # otherwise cursor None: the watermark moves only when every page is stored
                cur.deals = started
                page.cursor = encode_engagement(cur)
            yield page

    def _web(self, cur: EngagementCursor, started: int) -> Iterator[PullPage]:
        if "web_events" in self.skipped_streams:
            return
        if cur.web_refused and started - cur.web_refused < S.WEB_EVENTS_RECHECK_DAYS * DAY_MS:
            # The portal refused the events API (not Enterprise) recently: asking every run only costs a call.
            self.skipped_streams["web_events"] = "the portal refused the web analytics events API (Enterprise only)"
            return
        if not cur.web_window:
            if cur.web >= started:
                return
            low = max(cur.web, started - self.web_lookback_days * DAY_MS)
            cur.web_window, cur.web_after = [low, started], None
        low, high = cur.web_window
        what = "GET /events/v3/events"
        pager = TokenPaginator(f"hubspot: {what}", _page_of(what), after=cur.web_after)
        try:
            for _ in paginate(lambda: self.client.web_events(S.PAGE_VIEW_EVENT, from_ms(low).isoformat(),
                                                             from_ms(high + 1).isoformat(), pager.after), pager):
                page = PullPage(events=[e for e in map(M.web_event, pager.items) if e is not None])
                cur.web_after = pager.after
                if pager.done:
                    cur.web, cur.web_window, cur.web_refused = high, [], 0
                page.cursor = encode_engagement(cur)
                yield page
        except (FatalApiError, RejectedRecordError) as exc:
            # Web analytics events need an Enterprise hub; without them the models use the
            # page-view and visit counts that every portal keeps as contact properties. The refusal
            # is remembered in the cursor so later runs do not ask again (until the recheck is due).
            self.skipped_streams["web_events"] = str(exc)
            log.warning("hubspot: skipping web analytics events: %s", exc)
            if exc.status in (402, 403):
                cur.web_refused, cur.web_window, cur.web_after = started, [], None
                yield PullPage(cursor=encode_engagement(cur))


DAY_MS = 86_400_000


def _page_of(what: str) -> Callable[[Any], tuple[list[Any], str | None]]:
    """Read one HubSpot list answer: its results and the next page's ``after`` token."""
    return lambda body: (M.results_of(body, what), M.next_after(body))


__all__ = ["HubSpotConnector", "OAuthRefresh"]

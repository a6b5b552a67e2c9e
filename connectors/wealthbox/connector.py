"""The Wealthbox CRM connector: keyset pulls of every contact type, events and won opportunities as
engagement, segments as namespaced contact tags, scores as custom fields, opt-outs as the firm's
"Do Not Email" tag.

Wealthbox has no batch write: each changed contact is one ``PUT /contacts/{id}``. Its ``tags`` replace
the whole list, so a tag change first reads the contact (``GET``) and keeps every tag segsync did not
create (those without the tag prefix); a change of scores only writes ``custom_fields`` and leaves tags alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from connectors.base import CrmConnector, PropertyUpdate, PullPage, RecordResult
from connectors.kit.http import RetrySettings
from connectors.kit.paging import PageNumberPaginator, paginate
from connectors.wealthbox import mapping as M
from connectors.wealthbox import settings as S
from connectors.wealthbox.client import Auth, WealthboxClient
from connectors.wealthbox.cursor import ContactsCursor, UpdatedKeyset
from core.emails import normalize_email
from core.errors import ConfigError, RejectedRecordError, RetriableApiError

log = logging.getLogger("segsync.wealthbox")


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


class WealthboxConnector(CrmConnector):
    """One Wealthbox workspace. ``tag_prefix`` namespaces segsync's tags (only those are ever removed).

    Knobs past the pipeline's contract (sandbox, tests, benchmarks): ``per_page``, ``rate_limit`` and
    ``window_seconds`` (None/0: unpaced), ``retry``, ``sleep``.
    """

    name = S.SOURCE
    limits = S.LIMITS

    def __init__(self, access_token: str, base_url: str = S.DEFAULT_BASE_URL, *, auth: Auth = "api_token",
                 tag_prefix: str = "segsync:", per_page: int = S.DEFAULT_PER_PAGE,
                 rate_limit: int | None = S.RATE_LIMIT, window_seconds: float = S.RATE_WINDOW_SECONDS,
                 retry: RetrySettings | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        if not access_token:
            raise ConfigError("wealthbox: crm.access_token is empty")
        if not 1 <= per_page <= S.MAX_PER_PAGE:
            raise ConfigError(f"wealthbox: per_page must be 1..{S.MAX_PER_PAGE}, got {per_page}")
        if not tag_prefix.strip():
            raise ConfigError("wealthbox: tag_prefix must not be blank (it marks the tags segsync may remove)")
        self.client = WealthboxClient(access_token, base_url, auth=auth, rate_limit=rate_limit,
                                      window_seconds=window_seconds, retry=retry, sleep=sleep)
        self.per_page, self.prefix = per_page, tag_prefix
        self._tags: dict[str, tuple[str, ...]] = {}  # contact id -> tag names, as last read (this process)
        self._fields: dict[str, int] | None = None  # custom field name -> id (contacts), read once
        self._stages: dict[str, str] | None = None
        self.skipped: dict[str, int] = {}
        self.missing_fields: list[str] = []

    def stats(self) -> dict[str, Any]:
        """Calls by endpoint class (and write calls), 429s, retries; records skipped by type; missing fields."""
        return self.client.policy.stats.as_dict(S.WRITE_ENDPOINTS, extra={
            "skipped_records": dict(self.skipped), "missing_custom_fields": list(self.missing_fields)})

    # ----------------------------------------------------------------- contacts

    def pull_contacts(self, cursor: str | None, run_started: datetime) -> Iterator[PullPage]:
        """Every contact updated since the cursor (all on the first run), then deletions since the last run."""
        cur = ContactsCursor.decode(cursor)
        cap = _iso(run_started)
        first = cur.since is None and cur.deleted_since is None
        what = "GET /contacts"
        pager = UpdatedKeyset(f"wealthbox: {what}", cur, self.per_page, lambda b: M.rows_of(b, "contacts", what)[0])

        def fetch() -> Any:
            filters = {"updated_before": cap, "order": "updated"}
            if cur.since:
                filters["updated_since"] = cur.since
            return self.client.contacts(cur.page, self.per_page, **filters)

        for body in paginate(fetch, pager):
            page = self._page(pager.items, what)
            page.total = (body.get("meta") or {}).get("total_count") if isinstance(body, Mapping) else None
            page.cursor = cur.encode()
            yield page
        if first:  # nothing was deleted "since" a first run: start watching deletions now
            cur.deleted_since = cap
            yield PullPage(cursor=cur.encode())
            return
        yield from self._deleted(cur, cap)

    def _page(self, rows: Sequence[Mapping[str, Any]], what: str) -> PullPage:
        page = PullPage()
        for raw in rows:
            vid = M.record_id(raw, what)
            self._tags[vid] = tuple(M.tag_names(raw))
            contact = M.to_contact(raw, what, self.prefix)
            if contact is None:
                kind = str(raw.get("type"))
                self.skipped[kind] = self.skipped.get(kind, 0) + 1
                continue
            page.contacts.append(contact)
            page.consent.extend(M.optout_signals(raw, contact))
        return page

    def _deleted(self, cur: ContactsCursor, cap: str) -> Iterator[PullPage]:
        what = "GET /contacts?deleted=true"
        pager = PageNumberPaginator(f"wealthbox: {what}", lambda b: M.rows_of(b, "contacts", what),
                                    per_page=self.per_page)
        filters = {"deleted": "true", "deleted_since": cur.deleted_since or cap, "order": "updated"}
        for _ in paginate(lambda: self.client.contacts(pager.page, self.per_page, **filters), pager):
            page = PullPage(contacts=[M.deleted_contact(r, what) for r in pager.items])
            if pager.done:  # the watermark moves only when every page is stored
                cur.deleted_since = cap
                page.cursor = cur.encode()
            yield page

    # ----------------------------------------------------------------- engagement

    def pull_engagement(self, cursor: str | None, run_started: datetime) -> Iterator[PullPage]:
        """Dated events (meetings) and Won opportunities with amounts, updated since the cursor."""
        since = cursor or None
        yield from self._linked("events", self.client.events, since, run_started)
        yield from self._linked("opportunities", self.client.opportunities, since, run_started)
        yield PullPage(cursor=_iso(run_started))  # both streams stored: read from the run start next time

    def _linked(self, key: str, fetch: Callable[..., Any], since: str | None,
                run_started: datetime) -> Iterator[PullPage]:
        what = f"GET /{key}"
        pager = PageNumberPaginator(f"wealthbox: {what}", lambda b: M.rows_of(b, key, what), per_page=self.per_page)
        filters = {"updated_since": since} if since else {}
        for _ in paginate(lambda: fetch(pager.page, self.per_page, **filters), pager):
            page = PullPage()
            for raw in pager.items:
                found = M.meeting_events(raw, what) if key == "events" else M.won_events(
                    raw, self._stage_names(raw), what)
                page.events.extend(e for e in found if e.occurred_at <= run_started)
            yield page

    def _stage_names(self, raw: Mapping[str, Any]) -> Mapping[str, str]:
        """Stage ids -> names, read once and only when an opportunity gives its stage as an id."""
        stage = raw.get("stage")
        if self._stages is None and (isinstance(stage, int) or (isinstance(stage, str) and stage.isdigit())):
            try:
                self._stages = M.stage_names(self.client.opportunity_stages())
            except RejectedRecordError as exc:  # unknown stage ids are then not money (never guessed)
                log.warning("wealthbox: opportunity stages unreadable, numeric stages skipped: %s", exc)
                self._stages = {}
        return self._stages or {}

    # ----------------------------------------------------------------- schema and push

    def custom_fields(self) -> dict[str, int]:
        """Contact custom field name -> id (paged; read once)."""
        if self._fields is None:
            what = "GET /categories/custom_fields"
            pager = PageNumberPaginator(f"wealthbox: {what}", lambda b: M.rows_of(b, "custom_fields", what),
                                        per_page=self.per_page)
            found: dict[str, int] = {}
            for _ in paginate(lambda: self.client.custom_fields(pager.page, self.per_page), pager):
                found.update({str(f["name"]): int(f["id"]) for f in pager.items
                              if f.get("document_type", "Contact") == "Contact" and "name" in f and "id" in f})
            self._fields = found
        return self._fields

    def ensure_schema(self, property_name: str, segment_names: Sequence[str], score_names: Sequence[str]) -> None:
        """Tags need nothing (Wealthbox creates a tag on first use). Score fields are looked up once: the API
        documents no way to create a custom field, so a missing one is named (stats, log) and its score skipped."""
        bad = [n for n in segment_names if not n.strip() or ";" in n]
        if bad:
            raise ConfigError(f"wealthbox: segment names cannot be blank or contain ';': {bad}")
        if not score_names:
            return
        have = self.custom_fields()
        self.missing_fields = [f"{S.SCORE_FIELD_PREFIX}{n}" for n in score_names
                               if f"{S.SCORE_FIELD_PREFIX}{n}" not in have]
        if self.missing_fields:
            log.warning("wealthbox: custom fields %s do not exist; an admin must create them (Settings > Custom "
                        "Fields, type text, for contacts) - until then those scores are not written",
                        ", ".join(self.missing_fields))

    def push_properties(self, updates: Sequence[PropertyUpdate]) -> list[RecordResult]:
        """One PUT per changed contact (a GET first when its segsync tags change); a result per update."""
        merged: dict[str, dict[str, str]] = {}
        for u in updates:
            merged.setdefault(str(u.key), {}).update(u.properties)
        results: dict[str, RecordResult] = {}
        for n, (key, props) in enumerate(merged.items()):
            try:
                results[key] = self._push_one(key, props)
            except RejectedRecordError as exc:
                results[key] = RecordResult(key, "failed", exc.detail or str(exc))
            except RetriableApiError as exc:  # Wealthbox stopped answering: the rest waits for the next run
                for k in list(merged)[n:]:
                    results[k] = RecordResult(k, "failed", str(exc))
                break
        return [results[str(u.key)] for u in updates]

    def _push_one(self, key: str, props: Mapping[str, str]) -> RecordResult:
        scores = {k: v for k, v in props.items() if k.startswith(S.SCORE_FIELD_PREFIX)}
        segment_values = [v for k, v in props.items() if not k.startswith(S.SCORE_FIELD_PREFIX)]
        body: dict[str, Any] = {}
        if scores:
            fields = self.custom_fields()
            body["custom_fields"] = [{"id": fields[k], "value": v} for k, v in sorted(scores.items()) if k in fields]
            if not body["custom_fields"]:
                del body["custom_fields"]
        if segment_values:
            wanted = {self.prefix + s for v in segment_values for s in v.split(";") if s.strip()}
            known = self._tags.get(key)
            if known is None or M.segsync_tags(known, self.prefix) != wanted:
                current = M.tag_names(self._read(key))  # tags replace the list: read right before writing
                tags = [t for t in current if not t.startswith(self.prefix)] + sorted(wanted)
                if tags != current:
                    body["tags"] = tags
        # A score whose field does not exist is not written: the record is "skipped" (not confirmed), so the
        # next run sends it again and the score lands once an admin creates the field. Clearing ("") a field
        # that does not exist leaves nothing behind: that one is done.
        missing = sorted(k for k, v in scores.items() if v != "" and k not in (self._fields or {}))
        if body:
            answer = self.client.update_contact(key, body)
            if isinstance(answer, Mapping):
                self._tags[key] = tuple(M.tag_names(answer))
        if missing:
            return RecordResult(key, "skipped", f"no custom field {', '.join(missing)}: create it (Settings > "
                                                "Custom Fields)")
        return RecordResult(key, "sent", "" if body else "nothing to change")

    def _read(self, key: str) -> Mapping[str, Any]:
        raw = self.client.contact(key)
        if not isinstance(raw, Mapping):
            raise RejectedRecordError(f"wealthbox: GET /contacts/{key} answered without a contact",
                                      vendor=S.SOURCE, status=200, detail="no contact in the answer")
        return raw

    # ----------------------------------------------------------------- opt-out

    def suppress(self, email: str, vendor_id: str | None, property_name: str) -> RecordResult:
        """Tag every contact holding the address "Do Not Email" (the firm's opt-out mark) and, with
        ``property_name``, remove segsync's tags; every other tag stays. Spouses, or a household and its member,
        may share one address: each is marked. No Wealthbox contact with the address: nothing to do."""
        address = normalize_email(email)
        key = vendor_id or address or ""
        try:
            found = self._find(address, vendor_id)
            if not found:
                return RecordResult(key, "sent", "no Wealthbox contact has this address")
            for raw in found:
                cid = M.record_id(raw, "GET /contacts")
                current = M.tag_names(raw)
                tags = [t for t in current if not (property_name and t.startswith(self.prefix))]
                if S.DO_NOT_EMAIL_TAG.lower() not in {t.lower() for t in tags}:
                    tags.append(S.DO_NOT_EMAIL_TAG)
                if tags != current:
                    answer = self.client.update_contact(cid, {"tags": tags})
                    if isinstance(answer, Mapping):
                        self._tags[cid] = tuple(M.tag_names(answer))
        except (RejectedRecordError, RetriableApiError) as exc:
            return RecordResult(key, "failed", exc.detail or str(exc))
        return RecordResult(key, "sent", f"tagged {S.DO_NOT_EMAIL_TAG!r}")

    def _find(self, address: str | None, vendor_id: str | None) -> list[Mapping[str, Any]]:
        """The contact ``vendor_id`` and every contact whose email addresses include ``address`` (once each)."""
        found: dict[str, Mapping[str, Any]] = {}
        if vendor_id:
            try:
                raw = self._read(vendor_id)
                found[M.record_id(raw, "GET /contacts/{id}")] = raw
            except RejectedRecordError as exc:
                if exc.status != 404:
                    raise
        if address:
            what = "GET /contacts?email"
            pager = PageNumberPaginator(f"wealthbox: {what}", lambda b: M.rows_of(b, "contacts", what),
                                        per_page=self.per_page)
            for _ in paginate(lambda: self.client.contacts(pager.page, self.per_page, email=address), pager):
                for raw in pager.items:
                    if isinstance(raw, Mapping) and address in _addresses(raw):
                        found.setdefault(M.record_id(raw, what), raw)
        return list(found.values())

    def fence_calls(self, guard: Callable[[], None] | None) -> None:
        """Run ``guard`` before every call (each attempt, each page); see the base class."""
        self.call_guard = self.client.policy.guard = guard


def _addresses(raw: Mapping[str, Any]) -> set[str]:
    """A contact's email addresses, normalized."""
    found = raw.get("email_addresses")
    return {a for e in (found if isinstance(found, list) else []) if isinstance(e, Mapping)
            for a in [normalize_email(str(e.get("address") or ""))] if a}

__all__ = ["WealthboxConnector"]

"""The HubSpot simulator's state and write logic, independent of HTTP.

Routes in :mod:`sandbox.hubspot.app` call into :class:`HubSpotSim`; tests call its inspection
helpers directly (``contact_by_email``, ``properties_of``, ``list_members``, ``optouts``).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response

from sandbox.hubspot import deals, loader
from sandbox.hubspot.app import build_app
from sandbox.hubspot.errors import HubSpotError, batch_error, error_body, validation
from sandbox.hubspot.events import WebEvents
from sandbox.hubspot.faults import BatchFailures
from sandbox.hubspot.http import rate_limited
from sandbox.hubspot.inspection import Inspection
from sandbox.hubspot.merges import Merges
from sandbox.hubspot.ratelimit import OAUTH_APP_LIMIT, PLAN_DAILY, PLAN_LIMITS, TIERS, RollingLimiter
from sandbox.hubspot.schema import (
    CONTACT_GROUPS,
    READ_ONLY,
    customer_property,
    default_contact_properties,
    default_deal_properties,
    iso,
    validate_value,
)
from sandbox.hubspot.store import ObjectStore, Record

if TYPE_CHECKING:
    from sandbox.book import Book

BATCH_MAX = 100
CONTACT_DEFAULTS = ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname")


class HubSpotSim(Merges, Inspection):
    """An in-memory HubSpot portal: contacts, deals, properties, lists, subscriptions, web events.

    ``plan`` sets the ten-secondly limit (starter/free 100, professional/enterprise 190, unlimited none) and
    the daily one (or ``daily_limit``); ``window_seconds`` shortens the window for fast tests. Search has
    its own bucket of ``search_per_second`` (HubSpot documents 5/s; None = unlimited). ``batch_errors``:
    "partial" answers bad inputs with a 207, "strict" fails the whole batch with a 400. ``scopes``: the
    token's private-app scopes (None = all). ``clock`` replaces "now" for timestamps. ``tier``: the hub tier
    (below "enterprise" the web analytics events API answers 403); ``app_type``: "private" (limits by plan)
    or "oauth" (a public app's own 110 per 10 s, no daily headers); ``burst_limit`` overrides the burst
    for fast tests; ``deal_noise`` (default on, as a real portal): open and lost deals besides the won ones;
    ``merge_new_id`` (default on): a merge makes a new record (HubSpot's current behaviour);
    ``customer_properties``: contact properties a user of the portal made by hand (in HubSpot's UI, so
    they carry ``createdUserId``), e.g. one named like segsync's; ``subscription_types``: "standard" or "legacy"
    (no ``purpose`` on any type). ``search_lag_seconds``:
    records written more recently than this are not yet found by search (HubSpot's index lags writes).
    """

    def __init__(self, token: str, plan: str = "unlimited", window_seconds: float = 10.0,
                 search_per_second: float | None = 5, daily_limit: int | None = None, portal_id: int = 4_242_424,
                 batch_errors: str = "partial", clock: Callable[[], datetime] | None = None,
                 scopes: Iterable[str] | None = None, search_lag_seconds: float = 0.0, tier: str = "enterprise",
                 app_type: str = "private", deal_noise: bool = True, merge_new_id: bool = True,
                 subscription_types: str = "standard", burst_limit: int | None = None,
                 customer_properties: Iterable[str] = ()) -> None:
        if plan not in PLAN_LIMITS:
            raise ValueError(f"unknown HubSpot plan {plan!r}; one of {sorted(PLAN_LIMITS)}")
        if batch_errors not in ("partial", "strict"):
            raise ValueError("batch_errors must be 'partial' (207) or 'strict' (whole batch 400)")
        if tier not in TIERS:
            raise ValueError(f"unknown HubSpot hub tier {tier!r}; one of {list(TIERS)}")
        if app_type not in ("private", "oauth"):
            raise ValueError("app_type must be 'private' (limits by plan) or 'oauth' (a public app's own limit)")
        self.token, self.plan, self.portal_id, self.batch_errors = token, plan, portal_id, batch_errors
        # The hub tier decides which APIs answer (web analytics events: Enterprise only); ``plan`` the limits.
        self.tier, self.app_type = tier, app_type
        self.deal_noise, self.merge_new_id = deal_noise, merge_new_id
        self.pipelines = deals.pipelines()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.scopes = None if scopes is None else set(scopes)  # None: the token has every scope
        # HubSpot indexes asynchronously: a record changed in the last few seconds is not yet searchable.
        self.search_lag_seconds = search_lag_seconds
        daily = daily_limit if daily_limit is not None else (PLAN_DAILY[plan] if PLAN_LIMITS[plan] else None)
        burst = PLAN_LIMITS[plan]
        if app_type == "oauth" and burst is not None:
            # A public (OAuth) app has its own burst limit per account whatever the plan, and its calls
            # carry no daily headers (HubSpot's usage guidelines; see ratelimit.py).
            burst, daily = OAUTH_APP_LIMIT, None
        if burst_limit is not None:  # a sandbox knob, like window_seconds: a tighter limit for fast tests
            burst = burst_limit
        self.limiter = RollingLimiter(burst, window_seconds, daily)
        self.search_limiter = RollingLimiter(max(1, round(search_per_second)) if search_per_second else None, 1.0,
                                             policy="SECONDLY")
        self.lock = threading.RLock()
        self.contacts = ObjectStore("contacts", default_contact_properties(), "lastmodifieddate", CONTACT_DEFAULTS)
        self.deals = ObjectStore("deals", default_deal_properties(deals.stage_ids(), [p["id"] for p in self.pipelines]),
                                 "hs_lastmodifieddate",
                                 ("amount", "closedate", "createdate", "dealname", "dealstage", "pipeline"))
        self.groups: dict[str, dict[str, Any]] = {
            n: {"name": n, "label": label, "displayOrder": -1, "archived": False} for n, label in CONTACT_GROUPS}
        for name in customer_properties:
            self.contacts.schema[name] = customer_property(name)
        self.email_index: dict[str, str] = {}  # lower-cased email -> contact id
        self.person_ids: dict[str, str] = {}  # book person key -> contact id
        self.lists: dict[str, dict[str, Any]] = {}
        self.memberships: dict[str, dict[str, datetime]] = {}
        self.subscriptions = loader.subscription_definitions(portal_id, subscription_types)
        self.sub_status: dict[str, dict[str, dict[str, Any]]] = {}  # email -> subscription id -> status
        self.portal_optouts: set[str] = set()  # lower-cased emails opted out of all email (v4 unsubscribe-all)
        self.web_events = WebEvents()
        self.subscribe_calls: list[dict[str, Any]] = []
        self.unsubscribe_calls: list[dict[str, Any]] = []
        self.batch_failures = BatchFailures()
        self.gdpr_deleted: set[str] = set()  # lower-cased emails permanently deleted (for tests)
        self.expired_tokens: set[str] = set()
        self.extra_tokens: set[str] = set()  # issued by the OAuth refresh endpoint, valid besides ``token``
        # OAuth app credentials accepted by POST /oauth/v1/token (grant_type=refresh_token).
        self.oauth_client_id = "sandbox-client-id"
        self.oauth_client_secret = hashlib.sha256(f"client:{token}".encode()).hexdigest()[:36]
        self.oauth_refresh_token = hashlib.sha256(f"refresh:{token}".encode()).hexdigest()[:36]
        self.token_lifetime = 1800
        self.tokens_issued = 0

    # -- loading and HTTP --------------------------------------------------------

    def load(self, book: Book) -> None:
        """Seed contacts (merges pre-applied), deals and web analytics from a generated book."""
        from sandbox.book import paused_gc

        with self.lock, paused_gc():
            loader.load_book(self, book)

    def app(self) -> Starlette:
        """The Starlette app serving this portal's REST API."""
        return build_app(self)

    def index_email(self, rec: Record) -> None:
        """Keep the email -> id index in step with a record's email."""
        email = (rec.properties.get("email") or "").lower()
        if email:
            self.email_index[email] = rec.id

    # -- writes ------------------------------------------------------------------

    def _clean(self, store: ObjectStore, props: dict[str, Any], exclude: str | None = None) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in (props or {}).items():
            if name in READ_ONLY:
                continue  # HubSpot silently ignores writes to read-only system properties
            out[name] = validate_value(store.schema.get(name), name, value)
        email = out.get("email", "").lower()
        if store is self.contacts and email and self.email_index.get(email) not in (None, exclude):
            raise HubSpotError(409, f"Contact already exists. Existing ID: {self.email_index[email]}", "CONFLICT")
        return out

    def _apply(self, store: ObjectStore, rec: Record, props: dict[str, str], at: datetime) -> None:
        if store is self.contacts and "email" in props:
            self.email_index.pop((rec.properties.get("email") or "").lower(), None)
        stage = props.get("lifecyclestage")
        if store is self.contacts and stage and stage != rec.properties.get("lifecyclestage"):
            props = {**props, f"hs_lifecyclestage_{stage}_date": iso(at)}  # HubSpot stamps entering a stage
        rec.properties.update(props)
        store.touch(rec, at)
        if store is self.contacts:
            self.index_email(rec)

    def resolve(self, store: ObjectStore, raw_id: str, id_property: str | None = None) -> Record | None:
        """A live record by id (or by email when ``id_property`` is "email")."""
        if id_property == "email":
            rid = self.email_index.get(str(raw_id).lower())
        elif id_property not in (None, "hs_object_id"):
            rid = next((r.id for r in store.live() if r.properties.get(id_property) == str(raw_id)), None)
        else:
            rid = str(raw_id)
        rec = store.records.get(rid) if rid else None
        return rec if rec and not rec.archived else None

    def batch_write(self, store: ObjectStore, action: str, inputs: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        """create/update/upsert: validate every input, apply the good ones, report the bad (207)."""
        if not isinstance(inputs, list) or not inputs:
            raise validation("inputs must be a non-empty array")
        if len(inputs) > BATCH_MAX:
            raise validation(f"Batch input cannot exceed {BATCH_MAX} inputs (got {len(inputs)}).",
                             sub_category="BATCH_TOO_LARGE")
        if action in ("update", "upsert"):
            keys = [str(i.get("id")).lower() for i in inputs]
            dupes = sorted({k for k in keys if keys.count(k) > 1})
            if dupes:
                raise validation(f"Duplicate IDs found in batch input: {dupes}. IDs must be unique",
                                 sub_category="DUPLICATE_IDS")
        started = self.clock()  # one timestamp for the whole batch, as HubSpot's bulk edits share one
        with self.lock:
            planned: list[tuple[Record | None, dict[str, str], dict[str, Any]]] = []
            errors: list[dict[str, Any]] = []
            new_emails: set[str] = set()  # two creates of one address in a batch: the second conflicts
            for item in inputs:
                ref = str(item.get("id", (item.get("properties") or {}).get("email", "")))
                if self.batch_failures.hits(ref):
                    f = self.batch_failures
                    errors.append(batch_error(f.message, f.category, [ref]))
                    continue
                try:
                    rec = None
                    if action in ("update", "upsert"):
                        rec = self.resolve(store, item.get("id", ""), item.get("idProperty"))
                        if rec is None and action == "update":
                            errors.append(batch_error(f"Object not found. objectId={ref}", "OBJECT_NOT_FOUND", [ref]))
                            continue
                    if not isinstance(item.get("properties") or {}, dict):
                        raise validation("properties must be an object of property name -> value")
                    props = dict(item.get("properties") or {})
                    if action == "upsert" and rec is None and item.get("idProperty") == "email":
                        props.setdefault("email", item.get("id"))
                    clean = self._clean(store, props, exclude=rec.id if rec else None)
                    email = clean.get("email", "").lower() if store is self.contacts else ""
                    if email and email in new_emails:
                        raise HubSpotError(409, f"Contact already exists. Duplicate email {email} in this batch",
                                           "CONFLICT")
                    if email:
                        new_emails.add(email)
                    planned.append((rec, clean, item))
                except HubSpotError as exc:
                    errors.append(batch_error(exc.message, exc.category, [ref], exc.sub_category))
            if errors and self.batch_errors == "strict":
                raise validation("Property values were not valid", errors=[
                    {"message": e["message"], "code": e.get("subCategory", e["category"]), "context": e["context"]}
                    for e in errors])
            results = []
            for rec, props, _item in planned:
                new = rec is None
                if rec is None:
                    if store is self.contacts and props.get("lifecyclestage"):
                        props = {**props, f"hs_lifecyclestage_{props['lifecyclestage']}_date": iso(started)}
                    rec = store.add(props, started)
                    if store is self.contacts:
                        self.index_email(rec)
                else:
                    self._apply(store, rec, props, started)
                out = store.serialise(rec, list(props) or None)
                if action == "upsert":
                    out["new"] = new
                results.append(out)
        done = self.clock()
        body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": iso(started),
                                "completedAt": iso(done)}
        if errors:
            body.update(errors=errors, numErrors=len(errors))
            return 207, body
        return (201 if action == "create" else 200), body

    def batch_read(self, store: ObjectStore, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """batch/read: merged-away ids resolve to their survivor, as HubSpot does."""
        inputs = body.get("inputs") or []
        if len(inputs) > BATCH_MAX:
            raise validation(f"Batch input cannot exceed {BATCH_MAX} inputs (got {len(inputs)}).")
        started = self.clock()
        results, missing = [], []
        with self.lock:
            for item in inputs:
                rec = self.follow_merge(store, str(item.get("id", "")), body.get("idProperty"))
                if rec is None:
                    missing.append(str(item.get("id", "")))
                else:
                    results.append(store.serialise(rec, body.get("properties")))
        out: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": iso(started),
                               "completedAt": iso(self.clock())}
        if missing:
            out["errors"] = [batch_error(f"Could not get some {store.object_type.upper()[:-1]} objects, they may be "
                                         "deleted or not exist. Check that ids are valid.", "OBJECT_NOT_FOUND",
                                         missing)]
            out["numErrors"] = 1
            return 207, out
        return 200, out

    def follow_merge(self, store: ObjectStore, raw_id: str, id_property: str | None = None) -> Record | None:
        """Resolve an id, following a merge to the surviving record."""
        rec = store.records.get(raw_id) if id_property in (None, "hs_object_id") else self.resolve(
            store, raw_id, id_property)
        while rec is not None and rec.merged_into:
            rec = store.records.get(rec.merged_into)
        return rec if rec and not rec.archived else None

    def archive(self, store: ObjectStore, ids: Iterable[str]) -> None:
        """Archive records; deliberately leaves the modification timestamp alone (HubSpot does too)."""
        now = self.clock()
        with self.lock:
            for rid in ids:
                rec = store.records.get(str(rid))
                if rec and not rec.archived:
                    rec.archived, rec.archived_at = True, now
                    if store is self.contacts:
                        emails = [rec.properties.get("email") or "",
                                  *(rec.properties.get("hs_additional_emails") or "").split(";")]
                        for email in emails:
                            if email and self.email_index.get(email.lower()) == rec.id:
                                del self.email_index[email.lower()]

    def gdpr_delete(self, object_id: str, id_property: str | None = None) -> None:
        """Permanently delete a contact and its subscription statuses (no archive, nothing left to read)."""
        with self.lock:
            rec = self.resolve(self.contacts, object_id, id_property)
            if rec is None:
                raise HubSpotError(404, f"resource not found: contact {object_id} does not exist", "OBJECT_NOT_FOUND")
            self.archive(self.contacts, [rec.id])
            email = (rec.properties.get("email") or "").lower()
            self.sub_status.pop(email, None)
            self.portal_optouts.discard(email)
            for members in self.memberships.values():
                members.pop(rec.id, None)
            for rid, other in list(self.contacts.records.items()):
                if other is rec or other.merged_into == rec.id:
                    del self.contacts.records[rid]
            self.gdpr_deleted.add(email)

    def merge_contacts(self, primary_id: str, merge_id: str, at: datetime | None = None,
                       new_id: bool | None = None) -> Record:
        """Test helper: merge contact ``merge_id`` into ``primary_id`` as a HubSpot user would."""
        return self.merge(primary_id, merge_id, at, new_id)

    def archive_contacts(self, ids: Iterable[str]) -> None:
        """Test helper: archive (soft-delete) contacts as a HubSpot user would."""
        self.archive(self.contacts, [str(i) for i in ids])

    def fail_batch_inputs(self, ids: Iterable[str] = (), rate: float = 0.0, seed: int = 0,
                          count: int | None = None, message: str | None = None,
                          category: str = "VALIDATION_ERROR") -> None:
        """Make chosen inputs of batch writes fail with a 207 (``ids`` and/or a seeded ``rate``).

        ``count`` limits how many failures are injected; call with no arguments to switch it off.
        """
        with self.lock:
            self.batch_failures = BatchFailures({str(i).lower() for i in ids}, rate, seed, count,
                                                message or "Simulated failure for this record", category)

    def rotate_token(self, new_token: str) -> str:
        """Replace the access token; every older one now answers 401 EXPIRED_AUTHENTICATION (OAuth expiry)."""
        with self.lock:
            old, self.token = self.token, new_token
            self.expired_tokens |= {old, *self.extra_tokens}
            self.extra_tokens.clear()
            self.expired_tokens.discard(new_token)
            return old

    def expire_tokens(self) -> None:
        """Make every access token handed out so far expire (the refresh token stays good)."""
        self.rotate_token(f"expired-{self.tokens_issued}-{self.token}")
        self.expired_tokens.add(self.token)

    def token_valid(self, token: str) -> bool:
        """Whether a bearer token is currently accepted."""
        return token not in self.expired_tokens and (token == self.token or token in self.extra_tokens)

    def issue_token(self) -> dict[str, Any]:
        """A fresh access token from the refresh grant (HubSpot's token response shape)."""
        with self.lock:
            self.tokens_issued += 1
            token = f"CKsandbox-{self.tokens_issued}-" + hashlib.sha256(
                f"{self.oauth_refresh_token}:{self.tokens_issued}".encode()).hexdigest()[:24]
            self.extra_tokens.add(token)
            return {"token_type": "bearer", "refresh_token": self.oauth_refresh_token, "access_token": token,
                    "expires_in": self.token_lifetime}

    def touch_contacts(self, ids: Iterable[str], at: datetime | None = None) -> None:
        """Simulate a bulk edit in HubSpot's UI: every contact gets the same lastmodifieddate."""
        at = at or self.clock()
        with self.lock:
            for rid in ids:
                self.contacts.touch(self.contacts.records[str(rid)], at)

    def add_contacts(self, rows: list[dict[str, str]], at: datetime | None = None) -> list[str]:
        """Insert contacts directly (no validation, no HTTP): for big fixtures such as the 10,000-result test."""
        at = at or self.clock()
        with self.lock:
            ids = []
            for props in rows:
                rec = self.contacts.add(props, at)
                self.index_email(rec)
                ids.append(rec.id)
            return ids

    def server_error_response(self, status: int) -> Response:
        """HubSpot's error body for an injected error (usually 5xx; a 400 reads as a validation error)."""
        category = "VALIDATION_ERROR" if status == 400 else "INTERNAL_ERROR" if status < 502 else "SERVICE_UNAVAILABLE"
        return JSONResponse(error_body("Simulated server error", category), status_code=status)

    def rate_limited_response(self) -> Response:
        """The ten-secondly 429 (used by the fault injector's ``storm``)."""
        return rate_limited(self.limiter, "TEN_SECONDLY_ROLLING")

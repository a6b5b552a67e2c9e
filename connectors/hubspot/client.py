"""One HubSpot account behind one :class:`~connectors.kit.http.CallPolicy`: the official SDK and raw HTTP.

The SDK (``hubspot-api-client``, urllib3 underneath) serves the CRM object and property calls;
:class:`~connectors.kit.http.HttpClient` (requests) serves what the SDK covers poorly (communication
preferences, web analytics events, lists, the OAuth token endpoint). Both go through the same
policy, so there is one retry loop, one set of rate-limit buckets and one set of counters. The
SDK's own urllib3 retries are switched off for that reason.

SDK calls are made with ``_preload_content=False`` and decoded here: segsync's mapping works on
HubSpot's JSON as documented, whichever client fetched it, and the SDK's model classes never
leak past this module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import urllib3
from hubspot import HubSpot

from connectors.hubspot import settings as S
from connectors.kit.http import (
    CallPolicy,
    ErrorShape,
    HttpClient,
    RateLimiter,
    RetrySettings,
    decode_json,
    redact,
    register_secret,
)
from connectors.kit.sdk import SdkAdapter, SdkFailure
from core.errors import ApiError, ConfigError, FatalApiError, RejectedRecordError


@dataclass(frozen=True)
class OAuthRefresh:
    """What it takes to refresh an OAuth access token (private-app tokens need none of this)."""

    client_id: str
    client_secret: str
    refresh_token: str
    token_url: str = S.TOKEN_URL

    def __post_init__(self) -> None:
        register_secret(self.client_secret)
        register_secret(self.refresh_token)

    def __repr__(self) -> str:  # never print the secrets
        return f"OAuthRefresh(client_id={self.client_id!r}, token_url={self.token_url!r})"


def _scopes_in(context: Any) -> list[str]:
    found: list[str] = []
    if isinstance(context, Mapping):
        for key, value in context.items():
            if "scope" in str(key).lower() and isinstance(value, list):
                found.extend(str(v) for v in value)
    return found


def hubspot_detail(body: Any, text: str) -> str:
    """HubSpot's message from an error body, naming missing scopes and the rate policy if given."""
    if not isinstance(body, Mapping):
        return text[:300]
    message = str(body.get("message") or text[:300])
    scopes = _scopes_in(body.get("context"))
    extra: list[str] = []
    for err in body.get("errors") or []:
        if isinstance(err, Mapping):
            scopes += _scopes_in(err.get("context"))
            if err.get("message") and err["message"] != message and len(extra) < 3:
                extra.append(str(err["message"]))
    if extra:
        message += " - " + "; ".join(extra)
    if scopes:
        message += f" (missing scope: {', '.join(dict.fromkeys(scopes))})"
    elif body.get("category") == "MISSING_SCOPES":
        message += f" (missing scope; segsync needs: {', '.join(S.REQUIRED_SCOPES)})"
    if body.get("policyName"):
        message += f" [policy {body['policyName']}]"
    return message


class HubSpotSdk(SdkAdapter):
    """``hubspot-api-client`` under the policy: raw JSON out (``_preload_content=False``), errors into ours."""

    vendor = S.VENDOR
    shape = ErrorShape(code_keys=("subCategory", "category", "errorType"), request_id_keys=("correlationId",),
                       request_id_headers=("X-HubSpot-Correlation-Id",))

    def __init__(self, policy: CallPolicy, timeout: tuple[float, float],
                 observe: Callable[[Mapping[str, str] | None], None]) -> None:
        super().__init__(policy)
        self.timeout = timeout
        self.observe = observe

    def sdk_failure(self, exc: BaseException, what: str) -> SdkFailure | None:
        # The SDK has one ApiException class per generated package: recognise any of them by shape.
        if type(exc).__module__.startswith("hubspot.") and hasattr(exc, "status") and hasattr(exc, "body"):
            self.observe(getattr(exc, "headers", None))  # a 429's headers announce the limit too
            return int(exc.status or 0), getattr(exc, "headers", None) or {}, exc.body or getattr(exc, "reason", "")
        return None

    def invoke(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
               what: str) -> tuple[int, Any]:
        response = fn(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
        try:
            self.observe(response.headers)
            return response.status, decode_json(response.data)
        finally:
            response.release_conn()

    def detail(self, body: Any, text: str) -> str:
        return hubspot_detail(body, text)

    def classify(self, status: int, body: Any, text: str, what: str, retry_after: float | None,
                 fields: dict[str, Any]) -> ApiError:
        if status == 429 and isinstance(body, Mapping) and body.get("policyName") == "DAILY":
            # Retrying inside this run cannot help: the daily quota resets tomorrow.
            detail = redact(hubspot_detail(body, text))
            return FatalApiError(redact(f"{S.VENDOR} answered 429 ({what}): {detail}"), vendor=S.VENDOR, status=429,
                                 detail=detail, **fields)
        return super().classify(status, body, text, what, retry_after, fields)


def build_limiters(plan: str, sleep: Callable[[float], None] = time.sleep, window_seconds: float = S.WINDOW_SECONDS,
                   search_per_second: float | None = S.SEARCH_PER_SECOND) -> dict[str, RateLimiter]:
    """Rate-limit buckets for a plan.

    HubSpot counts a *rolling* window, so a bucket that bursts to the full 100 and then refills
    would send ~200 in the first 10 s. A bucket of one token refilled at 95% of the plan rate never
    puts more than the limit in any window; search gets its own per-second bucket likewise. Each bucket
    also guards HubSpot's own rule (``window``): no call while the limit's worth were answered within the
    window, so uneven latency cannot squeeze one call too many into it.
    """
    limiters: dict[str, RateLimiter] = {}
    if search_per_second:  # search has its own bucket on every plan
        limiters["search"] = paced(search_per_second, 1.0, sleep, margin=0.92)
    rate = S.PLAN_RATES[plan]
    if rate is not None:  # None: the sandbox's "unlimited" plan
        limiters["default"] = paced(rate, window_seconds, sleep)
    return limiters


def paced(limit: float, window: float, sleep: Callable[[float], None], margin: float = 0.95) -> RateLimiter:
    """A bucket for ``limit`` calls per rolling ``window`` seconds: spaced at ``margin`` of the rate, guarded by
    the limit itself (see :class:`~connectors.kit.ratelimit.RateLimiter`)."""
    return RateLimiter(1, window / (limit * margin), sleep=sleep, window=(max(1, int(limit)), window))


def _with_scope(exc: FatalApiError, endpoint: str) -> FatalApiError:
    """A 401/403 that says what to fix: the token, or the scope this call needs."""
    if exc.status == 401:
        hint = "the access token is invalid or expired; create a private-app token with scopes " + ", ".join(
            S.REQUIRED_SCOPES)
    elif exc.status == 403:
        needed = S.ENDPOINT_SCOPES.get(endpoint)
        hint = f"the access token lacks scope {needed}" if needed else "the access token lacks a scope this call needs"
        hint += f" (segsync needs: {', '.join(S.REQUIRED_SCOPES)})"
    else:
        return exc
    if "missing scope:" in str(exc):  # HubSpot named it already
        hint = "add that scope to the private app (or OAuth app) behind the access token and retry"
    return FatalApiError(redact(f"{exc} - {hint}"), **exc.fields())


class HubSpotClient:
    """Authenticated calls to one HubSpot account, all under one policy; returns decoded JSON."""

    def __init__(
        self,
        access_token: str,
        base_url: str = S.DEFAULT_BASE_URL,
        *,
        plan: str = "starter",
        oauth: OAuthRefresh | None = None,
        retry: RetrySettings | None = None,
        timeout: tuple[float, float] = (5.0, 30.0),
        sleep: Callable[[float], None] = time.sleep,
        window_seconds: float = S.WINDOW_SECONDS,
        search_per_second: float | None = S.SEARCH_PER_SECOND,
    ) -> None:
        if plan not in S.PLAN_RATES:
            raise ConfigError(f"hubspot: unknown plan {plan!r}; one of {', '.join(S.PLAN_RATES)}")
        register_secret(access_token)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.oauth = oauth
        self._sleep = sleep
        self._announced: dict[str, tuple[int, float]] = {}  # bucket -> the rate limit the portal announced last
        self._calling = threading.local()  # which bucket the current call is paced by (for its headers)
        limiters = build_limiters(plan, sleep, window_seconds, search_per_second)
        if oauth is not None and S.PLAN_RATES[plan] is not None:
            # A public OAuth app is limited per app and account (about 100 per 10 s) whatever the tier.
            rate = min(S.PLAN_RATES[plan] or S.OAUTH_APP_RATE, S.OAUTH_APP_RATE)
            limiters["default"] = paced(rate, window_seconds, sleep)
        self.policy = CallPolicy(S.VENDOR, limiters, retry, sleep=sleep)
        self.http = HttpClient(S.VENDOR, self.base_url, self.policy, timeout=timeout, detail=hubspot_detail,
                               shape=HubSpotSdk.shape, observe=self.observe_limits)
        self.adapter = HubSpotSdk(self.policy, timeout, self.observe_limits)
        # retry=Retry(0): urllib3 would otherwise retry connection errors on its own, below our policy.
        self._sdk = HubSpot(access_token=access_token, host=self.base_url, retry=urllib3.Retry(0, redirect=0))
        crm = self._sdk.crm
        self.contacts_basic = crm.contacts.basic_api
        self.contacts_search = crm.contacts.search_api
        self.contacts_batch = crm.contacts.batch_api
        self.properties_core = crm.properties.core_api
        self.properties_groups = crm.properties.groups_api
        self._apis = [self.contacts_basic, self.contacts_search, self.contacts_batch,
                      self.properties_core, self.properties_groups]
        self._token_lock = threading.Lock()
        self._expires_at: float | None = None  # monotonic; None = unknown (refresh on first use)
        self._set_token(access_token)

    # ----------------------------------------------------------------- tokens

    def _set_token(self, token: str) -> None:
        register_secret(token)
        self._token = token
        self.http.session.headers["Authorization"] = f"Bearer {token}"
        for api in self._apis:
            api.api_client.configuration.access_token = token

    def refresh_token(self) -> None:
        """Exchange the refresh token for a new access token (OAuth apps only)."""
        if self.oauth is None:
            return
        with self._token_lock:
            try:
                answer = self.http.json(
                    "POST",
                    self.oauth.token_url,
                    endpoint=S.EP_OAUTH,
                    data={
                        "grant_type": "refresh_token",
                        "client_id": self.oauth.client_id,
                        "client_secret": self.oauth.client_secret,
                        "refresh_token": self.oauth.refresh_token,
                    },
                )
            except RejectedRecordError as exc:  # a 400 here is a config problem, not a bad record
                raise FatalApiError(redact(f"{S.VENDOR}: the OAuth token refresh was refused: {exc.detail} - check "
                                           "the app's client_id, client_secret and refresh_token"),
                                    vendor=S.VENDOR, status=exc.status, detail=exc.detail) from None
            token = (answer or {}).get("access_token")
            if not token:
                raise FatalApiError(f"{S.VENDOR}: the token endpoint answered without an access_token",
                                    vendor=S.VENDOR, status=200)
            self._set_token(str(token))
            self._expires_at = time.monotonic() + float(answer.get("expires_in") or 1800)

    def _ensure_fresh(self) -> None:
        if self.oauth is None:
            return
        if self._expires_at is None or time.monotonic() >= self._expires_at - S.REFRESH_AHEAD_SECONDS:
            self.refresh_token()

    def _authed(self, call: Callable[[], Any], endpoint: str) -> Any:
        """Run ``call``; with OAuth, refresh ahead of expiry and retry once on a 401.

        A 401/403 that remains is raised naming the token problem or the missing scope.
        """
        self._ensure_fresh()
        try:
            try:
                return call()
            except FatalApiError as exc:
                if exc.status != 401 or self.oauth is None:
                    raise
                self.refresh_token()
                return call()
        except FatalApiError as exc:
            raise _with_scope(exc, endpoint) from None

    # ----------------------------------------------------------------- transports

    def observe_limits(self, headers: Mapping[str, str] | None) -> None:
        """Follow the portal's own ``X-HubSpot-RateLimit-Max``/``-Interval-Milliseconds`` headers.

        A portal on a different plan than configured (or with the API add-on), and a public OAuth app
        (limited per app, about 100 per 10 s whatever the tier), announce their real limit on every
        answer, raw calls and errors included; pacing to it avoids a 429 storm when the configured plan
        is not the limit that applies.
        """
        if not headers:
            return
        try:
            limit = int(headers.get("X-HubSpot-RateLimit-Max") or 0)
            interval = float(headers.get("X-HubSpot-RateLimit-Interval-Milliseconds") or 0) / 1000.0
        except (TypeError, ValueError):
            return
        # Search answers announce search's own per-second limit: it paces the search bucket, not the rest.
        bucket = getattr(self._calling, "bucket", None) or "default"
        if limit <= 0 or interval <= 0 or self._announced.get(bucket) == (limit, interval):
            return
        self._announced[bucket] = (limit, interval)
        current = self.policy.limiters.get(bucket)
        if current is not None:  # retuned, not replaced: a fresh bucket would let the next call go at once
            current.retune(1, interval / (limit * 0.95), (limit, interval))
        else:
            self.policy.limiters[bucket] = paced(limit, interval, self._sleep)

    def sdk(self, endpoint: str, what: str, fn: Callable[..., Any], *args: Any,
            limiter: str | None = None, accept: Sequence[int] = (), **kwargs: Any) -> tuple[int, Any]:
        """Call an SDK method under the policy; return (status, decoded JSON body)."""
        self._calling.bucket = limiter
        answer: tuple[int, Any] = self._authed(
            lambda: self.adapter.call(endpoint, what, fn, *args, limiter=limiter, accept=accept, **kwargs), endpoint)
        return answer

    def json(self, method: str, path: str, *, endpoint: str, **kwargs: Any) -> Any:
        """A raw HTTP call under the policy (see :meth:`HttpClient.json`)."""
        self._calling.bucket = kwargs.get("limiter")
        return self._authed(lambda: self.http.json(method, path, endpoint=endpoint, **kwargs), endpoint)

    def request(self, method: str, path: str, *, endpoint: str, **kwargs: Any) -> Any:
        """A raw HTTP call returning the ``requests.Response`` (for ``accept``-ed statuses)."""
        self._calling.bucket = kwargs.get("limiter")
        return self._authed(lambda: self.http.request(method, path, endpoint=endpoint, **kwargs), endpoint)

    # ----------------------------------------------------------------- CRM objects

    def list_contacts(self, properties: Sequence[str], after: str | None, archived: bool = False) -> Any:
        """GET /crm/v3/objects/contacts: one page of up to 100, only ``properties``."""
        kwargs: dict[str, Any] = {"limit": S.PAGE_SIZE, "properties": list(properties), "archived": archived}
        if after:
            kwargs["after"] = after
        return self.sdk(S.EP_LIST, "GET /crm/v3/objects/contacts", self.contacts_basic.get_page, **kwargs)[1]

    def search_contacts(self, body: Mapping[str, Any]) -> Any:
        """POST /crm/v3/objects/contacts/search (its own rate bucket)."""
        return self.sdk(S.EP_SEARCH, "POST /crm/v3/objects/contacts/search", self.contacts_search.do_search,
                        public_object_search_request=dict(body), limiter="search")[1]

    def batch_update(self, inputs: Sequence[Mapping[str, Any]]) -> tuple[int, Any]:
        """POST /crm/v3/objects/contacts/batch/update; returns (200 | 207, body); a 400 raises."""
        return self.sdk(S.EP_BATCH_UPDATE, "POST /crm/v3/objects/contacts/batch/update", self.contacts_batch.update,
                        batch_input_simple_public_object_batch_input={"inputs": list(inputs)})

    def list_deals(self, after: str | None) -> Any:
        """GET /crm/v3/objects/deals with contact associations (the SDK's generic API serves it poorly)."""
        params: dict[str, Any] = {"limit": S.PAGE_SIZE, "properties": ",".join(S.DEAL_PROPERTIES),
                                  "associations": "contacts", "archived": "false"}
        if after:
            params["after"] = after
        return self.json("GET", "/crm/v3/objects/deals", endpoint=S.EP_DEALS, params=params)

    def search_deals(self, body: Mapping[str, Any]) -> Any:
        """POST /crm/v3/objects/deals/search (the search bucket; answers carry no associations)."""
        return self.json("POST", "/crm/v3/objects/deals/search", endpoint=S.EP_DEALS_SEARCH, json=dict(body),
                         limiter="search")

    def get_deal(self, deal_id: str) -> Any:
        """GET /crm/v3/objects/deals/{id} with its contact associations."""
        params = {"properties": ",".join(S.DEAL_PROPERTIES), "associations": "contacts"}
        return self.json("GET", f"/crm/v3/objects/deals/{deal_id}", endpoint=S.EP_DEALS, params=params)

    def deal_pipelines(self) -> Any:
        """GET /crm/v3/pipelines/deals: every deal pipeline with its stages (one call)."""
        return self.json("GET", "/crm/v3/pipelines/deals", endpoint=S.EP_PIPELINES)

    # ----------------------------------------------------------------- properties

    def contact_properties(self) -> Any:
        """GET /crm/v3/properties/contacts: every definition (one call)."""
        return self.sdk(S.EP_PROPERTIES, "GET /crm/v3/properties/contacts", self.properties_core.get_all,
                        "contacts")[1]

    def create_property(self, definition: Mapping[str, Any]) -> tuple[int, Any]:
        """POST /crm/v3/properties/contacts; a 409 (already exists) is returned, not raised."""
        return self.sdk(S.EP_PROPERTIES, "POST /crm/v3/properties/contacts", self.properties_core.create,
                        "contacts", dict(definition), accept=(409,))

    def update_property(self, name: str, changes: Mapping[str, Any]) -> Any:
        """PATCH /crm/v3/properties/contacts/{name}."""
        return self.sdk(S.EP_PROPERTIES, "PATCH /crm/v3/properties/contacts/{name}", self.properties_core.update,
                        "contacts", name, dict(changes))[1]

    def create_group(self, name: str, label: str) -> tuple[int, Any]:
        """POST /crm/v3/properties/contacts/groups; a 409 (already exists) is returned, not raised."""
        return self.sdk(S.EP_PROPERTIES, "POST /crm/v3/properties/contacts/groups", self.properties_groups.create,
                        "contacts", {"name": name, "label": label}, accept=(409,))

    # ----------------------------------------------------------------- communication preferences, events

    def subscription_definitions(self) -> Any:
        """GET /communication-preferences/v3/definitions."""
        return self.json("GET", "/communication-preferences/v3/definitions", endpoint=S.EP_COMM_PREFS)

    def write_statuses(self, inputs: Sequence[Mapping[str, Any]]) -> tuple[int, Any]:
        """POST /communication-preferences/v4/statuses/batch/write (up to 100 inputs); 207 is returned."""
        response = self.request("POST", "/communication-preferences/v4/statuses/batch/write",
                                endpoint=S.EP_COMM_PREFS_WRITE, json={"inputs": list(inputs)}, accept=(207,))
        return response.status_code, decode_json(response.content) if response.content else None

    def web_events(self, event_type: str, occurred_after: str, occurred_before: str, after: str | None) -> Any:
        """GET /events/v3/events for contacts: one page of web analytics events in a time window."""
        params: dict[str, Any] = {"objectType": "contact", "eventType": event_type, "limit": S.EVENTS_PAGE_SIZE,
                                  "occurredAfter": occurred_after, "occurredBefore": occurred_before}
        if after:
            params["after"] = after
        return self.json("GET", "/events/v3/events", endpoint=S.EP_EVENTS, params=params)

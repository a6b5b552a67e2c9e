"""One Mailchimp account behind one :class:`~connectors.kit.http.CallPolicy`: the official SDK and raw HTTP.

The SDK (``mailchimp-marketing``, module-level ``requests`` calls underneath) serves the audience,
member, segment, batch and report calls. It handles three things badly, fixed here in one place:

- problem+json error bodies arrive as an undecoded string (their content type is not
  ``application/json``): :func:`problem_detail` decodes them into "Title: detail (field: message)";
- an error answer without a JSON content type comes back as a ``requests.Response`` instead of
  an exception: :meth:`MailchimpClient.sdk` classifies it like any other answer;
- it rewrites the substring "server" anywhere in the URL with the data center: the client gets
  an empty server and the full base URL as host, so nothing is rewritten.

The batch results archive is fetched with :class:`~connectors.kit.http.HttpClient` *without* the API
key: Mailchimp serves it from a pre-signed storage link on another host.

Mailchimp limits concurrency (10 connections per key), not a rate: every call holds a slot of a
per-key semaphore shared by every client in the process, taken inside the retry loop.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import mailchimp_marketing
import requests
from mailchimp_marketing.api_client import ApiClientError

from connectors.kit.http import CallPolicy, ErrorShape, HttpClient, RetrySettings, decode_json, redact, register_secret
from connectors.kit.paging import OffsetPaginator, paginate
from connectors.kit.sdk import SdkAdapter, SdkFailure
from connectors.mailchimp import settings as S
from core.errors import ApiError, FatalApiError, RejectedRecordError, RetriableApiError

_SLOTS: dict[str, threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()


def connection_slots(api_key: str, size: int = S.MAX_CONNECTIONS) -> threading.BoundedSemaphore:
    """The process-wide semaphore for one API key (keyed by a digest, never the key itself)."""
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    with _SLOTS_LOCK:
        slots = _SLOTS.get(digest)
        if slots is None:
            slots = _SLOTS[digest] = threading.BoundedSemaphore(size)
        return slots


def problem_detail(body: Any, text: str) -> str:
    """Mailchimp's problem+json as one readable line: ``Title: detail (field: message; ...)``."""
    if not isinstance(body, Mapping):
        return (text or "").strip()[:300] or "no error body"
    title = str(body.get("title") or "").strip()
    detail = str(body.get("detail") or body.get("message") or "").strip()
    message = f"{title}: {detail}" if title and detail else (title or detail or text[:300])
    fields = []
    for err in body.get("errors") or []:
        said = err.get("message") or err.get("error") if isinstance(err, Mapping) else None
        if said:
            where = err.get("field") or err.get("email_address") or ""
            fields.append(f"{where}: {said}" if where else str(said))
    if fields:
        message += f" ({'; '.join(fields[:5])})"
    return message


def is_compliance(exc: BaseException) -> bool:
    """True for Mailchimp's "Member In Compliance State" refusal."""
    return isinstance(exc, ApiError) and S.COMPLIANCE_TITLE.lower() in str(exc.detail).lower()


class MailchimpSdk(SdkAdapter):
    """``mailchimp-marketing`` under the policy, holding one of the key's connection slots per call."""

    vendor = S.VENDOR
    shape = ErrorShape(code_keys=("title",), request_id_keys=("instance",), request_id_headers=("X-Request-Id",))

    def __init__(self, policy: CallPolicy, slots: threading.BoundedSemaphore | None = None) -> None:
        super().__init__(policy)
        self.slots = slots or threading.BoundedSemaphore(S.MAX_CONNECTIONS)

    def sdk_failure(self, exc: BaseException, what: str) -> SdkFailure | ApiError | None:
        if not isinstance(exc, ApiClientError):
            return None
        if exc.status_code is None:  # the SDK wraps whatever requests raised
            inner = exc.text
            if isinstance(inner, BaseException):
                mapped = self.transport_error(inner, what)
                if mapped is not None:
                    return mapped
            name = type(inner).__name__ if isinstance(inner, BaseException) else "unknown error"
            return FatalApiError(redact(f"{S.VENDOR}: the request could not be sent ({what}): {name}"),
                                 vendor=S.VENDOR, status=0)
        return int(exc.status_code), {}, exc.text

    def invoke(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
               what: str) -> tuple[int, Any]:
        with self.slots:
            result = fn(*args, **kwargs)
        if isinstance(result, requests.Response):  # an answer without a JSON content type
            if result.status_code >= 400:
                raise self.error_for(result.status_code, result.text, what, result.headers)
            return result.status_code, decode_json(result.content) if result.content else None
        if isinstance(result, str):  # a 2xx the SDK did not decode
            return 200, decode_json(result)
        return 200, result

    def detail(self, body: Any, text: str) -> str:
        return problem_detail(body, text)

    def classify(self, status: int, body: Any, text: str, what: str, retry_after: float | None,
                 fields: dict[str, Any]) -> ApiError:
        detail = problem_detail(body, text)
        if status == 401:
            detail += " - check esp.api_key (a Mailchimp key ends with -<data center>)"
            return FatalApiError(redact(f"{S.VENDOR} refused the API key ({what}): {detail}"),
                                 vendor=S.VENDOR, status=status, detail=redact(detail), **fields)
        if status == 403:  # an API key has no scopes: its user cannot reach this audience or resource
            detail += " - check esp.api_key: its user has no access to this audience (or the account is suspended)"
            return FatalApiError(redact(f"{S.VENDOR} refused the API key ({what}): {detail}"),
                                 vendor=S.VENDOR, status=status, detail=redact(detail), **fields)
        if status == 400 and S.COMPLIANCE_TITLE.lower() in detail.lower():
            # Never retried: the member unsubscribed or bounced; only their own double opt-in brings them back.
            return RejectedRecordError(redact(f"{S.VENDOR} refused ({what}): {detail}"),
                                       vendor=S.VENDOR, status=status, detail=redact(detail), **fields)
        return super().classify(status, body, text, what, retry_after, fields)


def error_for(status: int, raw: Any, what: str) -> ApiError:
    """Classify one Mailchimp error answer (status and raw body) as the client would."""
    return MailchimpSdk(CallPolicy(S.VENDOR)).error_for(status, raw, what)


class MailchimpClient:
    """Authenticated calls to one Mailchimp account, all under one policy; returns decoded JSON."""

    def __init__(
        self,
        api_key: str,
        base_url: str,
        *,
        retry: RetrySettings | None = None,
        timeout: tuple[float, float] = S.TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        max_connections: int = S.MAX_CONNECTIONS,
    ) -> None:
        register_secret(api_key)
        self.base_url = base_url.rstrip("/")
        self.policy = CallPolicy(S.VENDOR, {}, retry, sleep=sleep)
        self.sleep = sleep
        self.max_connections = max_connections
        self.slots = connection_slots(api_key, max_connections)
        self.adapter = MailchimpSdk(self.policy, self.slots)
        # No auth on purpose: the results archive lives behind a pre-signed link on another host.
        self.download = HttpClient(S.VENDOR, self.base_url, self.policy, timeout=timeout, detail=problem_detail,
                                   shape=MailchimpSdk.shape)
        self._sdk = mailchimp_marketing.Client()
        self._sdk.set_config({"api_key": api_key, "server": "", "timeout": timeout})
        self._sdk.api_client.host = self.base_url
        self.lists = self._sdk.lists
        self.batches = self._sdk.batches
        self.campaigns = self._sdk.campaigns
        self.reports = self._sdk.reports

    def __repr__(self) -> str:  # never print the key
        return f"MailchimpClient(base_url={self.base_url!r})"

    def sdk(self, endpoint: str, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call an SDK method under the policy; return the decoded JSON body (None for an empty one)."""
        return self.adapter.call(endpoint, what, fn, *args, **kwargs)[1]

    # ----------------------------------------------------------------- audience and members

    def get_list(self, list_id: str) -> Any:
        """GET /lists/{id} (only its id and name)."""
        return self.sdk(S.EP_LIST, "GET /lists/{list_id}", self.lists.get_list, list_id, fields=["id", "name"])

    def list_members(self, list_id: str, **params: Any) -> Any:
        """GET /lists/{id}/members with the given filters, paging and ``fields``."""
        return self.sdk(S.EP_MEMBERS, "GET /lists/{list_id}/members", self.lists.get_list_members_info, list_id,
                        **params)

    def get_member(self, list_id: str, subscriber_hash: str) -> Any:
        """GET /lists/{id}/members/{hash}."""
        return self.sdk(S.EP_MEMBER, "GET /lists/{list_id}/members/{hash}", self.lists.get_list_member, list_id,
                        subscriber_hash, fields=["id", "email_address", "unique_email_id", "status", "tags"])

    def unsubscribe_member(self, list_id: str, subscriber_hash: str) -> Any:
        """PATCH /lists/{id}/members/{hash} ``{"status": "unsubscribed"}`` - the one status segsync sets."""
        return self.sdk(S.EP_MEMBER_WRITE, "PATCH /lists/{list_id}/members/{hash}", self.lists.update_list_member,
                        list_id, subscriber_hash, {"status": S.UNSUBSCRIBED})

    def update_tags(self, list_id: str, subscriber_hash: str, tags: Sequence[Mapping[str, str]]) -> Any:
        """POST /lists/{id}/members/{hash}/tags (automations do not fire: ``is_syncing``)."""
        return self.sdk(S.EP_TAGS, "POST /lists/{list_id}/members/{hash}/tags", self.lists.update_list_member_tags,
                        list_id, subscriber_hash, {"tags": [dict(t) for t in tags], "is_syncing": True})

    def add_pending(self, list_id: str, members: Sequence[Mapping[str, Any]]) -> Any:
        """POST /lists/{id} with ``update_existing: false``: new members only, each as ``pending``."""
        for m in members:
            if m.get("status") != S.PENDING:  # the invariant, checked where the request is built
                raise ValueError("segsync only ever creates Mailchimp members as pending")
        body = {"members": [dict(m) for m in members], "update_existing": False, "sync_tags": False}
        return self.sdk(S.EP_BATCH_SUBSCRIBE, "POST /lists/{list_id}", self.lists.batch_list_members, list_id, body)

    # ----------------------------------------------------------------- segments (tags are static segments)

    def list_segments(self, list_id: str, offset: int) -> Any:
        """GET /lists/{id}/segments?type=static (id, name and member count)."""
        return self.sdk(S.EP_SEGMENTS, "GET /lists/{list_id}/segments", self.lists.list_segments, list_id,
                        type="static", count=S.PAGE_SIZE, offset=offset,
                        fields=["segments.id", "segments.name", "segments.member_count", "total_items"])

    def segment_members(self, list_id: str, segment_id: int, offset: int) -> Any:
        """GET /lists/{id}/segments/{segment_id}/members, every status (email addresses only)."""
        return self.sdk(S.EP_SEGMENTS, "GET /lists/{list_id}/segments/{segment_id}/members",
                        self.lists.get_segment_members_list, list_id, str(segment_id), count=S.PAGE_SIZE,
                        offset=offset, include_cleaned=True, include_unsubscribed=True, include_transactional=True,
                        fields=["members.email_address", "total_items"])

    def create_segment(self, list_id: str, name: str) -> Any:
        """POST /lists/{id}/segments ``{name, static_segment: []}``."""
        return self.sdk(S.EP_SEGMENT_WRITE, "POST /lists/{list_id}/segments", self.lists.create_segment, list_id,
                        {"name": name, "static_segment": []})

    def update_segment(self, list_id: str, segment_id: int, add: Sequence[str], remove: Sequence[str]) -> Any:
        """POST /lists/{id}/segments/{segment_id} with up to 500 emails to add and 500 to remove."""
        body = {"members_to_add": list(add), "members_to_remove": list(remove)}
        return self.sdk(S.EP_SEGMENT_WRITE, "POST /lists/{list_id}/segments/{segment_id}",
                        self.lists.batch_segment_members, body, list_id, str(segment_id))

    # ----------------------------------------------------------------- /batches

    def start_batch(self, operations: Sequence[Mapping[str, Any]]) -> Any:
        """POST /batches."""
        return self.sdk(S.EP_BATCHES, "POST /batches", self.batches.start, {"operations": list(operations)})

    def batch_status(self, batch_id: str) -> Any:
        """GET /batches/{id}."""
        return self.sdk(S.EP_BATCH_STATUS, "GET /batches/{batch_id}", self.batches.status, batch_id)

    def batch_results(self, url: str) -> list[dict[str, Any]]:
        """Download and unpack a finished batch's results archive: ``[{operation_id, status_code, response}]``."""
        response = self.download.request("GET", url, endpoint=S.EP_BATCH_RESULTS)
        return parse_results_archive(response.content)

    # ----------------------------------------------------------------- campaigns and reports

    def list_campaigns(self, **params: Any) -> Any:
        """GET /campaigns (sent campaigns of one audience)."""
        return self.sdk(S.EP_CAMPAIGNS, "GET /campaigns", self.campaigns.list, **params)

    def email_activity(self, campaign_id: str, **params: Any) -> Any:
        """GET /reports/{campaign_id}/email-activity."""
        return self.sdk(S.EP_ACTIVITY, "GET /reports/{campaign_id}/email-activity",
                        self.reports.get_email_activity_for_campaign, campaign_id, **params)


def malformed(what: str, problem: str) -> RetriableApiError:
    """A 2xx answer segsync cannot read: say which call and what is wrong (retried, then reported)."""
    return RetriableApiError(redact(f"{S.VENDOR}: {what} answered {problem}"), vendor=S.VENDOR, status=200)


def list_items(body: Any, key: str, what: str) -> tuple[list[Any], int]:
    """``body[key]`` and ``total_items`` of a list answer, or a clear error naming the call."""
    items = body.get(key) if isinstance(body, Mapping) else None
    if not isinstance(items, list):
        raise malformed(what, f"without a '{key}' array")
    try:
        total = int(body.get("total_items") or 0)
    except (TypeError, ValueError):
        raise malformed(what, "a non-numeric total_items") from None
    return items, total


def offset_pages(what: str, key: str, fetch: Callable[[int], Any]) -> Iterator[tuple[int, list[Any]]]:
    """Every page of an offset-paged list call: ``(offset of the page, its items)``; ``fetch(offset)`` reads one."""
    pager = OffsetPaginator(f"{S.VENDOR}: {what}", lambda body: list_items(body, key, what))
    for _ in paginate(lambda: fetch(pager.offset), pager):
        yield pager.first, pager.items


def parse_results_archive(data: bytes) -> list[dict[str, Any]]:
    """The ``.tar.gz`` of JSON files Mailchimp produces for a batch, flattened; a bad archive is a clear error."""
    out: list[dict[str, Any]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for info in tar:
                if not info.isfile() or not info.name.endswith(".json"):
                    continue
                handle = tar.extractfile(info)
                items = json.loads(handle.read()) if handle is not None else []
                if not isinstance(items, list):
                    raise ValueError(f"{info.name} does not hold a JSON array")
                out.extend(item for item in items if isinstance(item, dict))
    except (tarfile.TarError, ValueError, EOFError, OSError) as exc:
        raise RetriableApiError(f"{S.VENDOR}: the batch results archive could not be read: {exc}",
                                vendor=S.VENDOR, status=200) from None
    return out

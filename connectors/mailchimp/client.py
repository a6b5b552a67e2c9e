"""One Mailchimp account behind one :class:`~connectors.http.CallPolicy`: the official SDK and raw HTTP.

The SDK (``mailchimp-marketing``, module-level ``requests`` calls underneath) serves the audience,
member, segment, batch and report calls. It handles three things badly, fixed here in one place:

- problem+json error bodies arrive as an undecoded string (their content type is not
  ``application/json``): :func:`problem_detail` decodes them into "Title: detail (field: message)";
- an error answer without a JSON content type comes back as a ``requests.Response`` instead of
  an exception: :meth:`MailchimpClient.sdk` classifies it like any other answer;
- it rewrites the substring "server" anywhere in the URL with the data center: the client gets
  an empty server and the full base URL as host, so nothing is rewritten.

The batch results archive is fetched with :class:`~connectors.http.HttpClient` *without* the API
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
from contextlib import contextmanager
from typing import Any

import mailchimp_marketing
import requests
from mailchimp_marketing.api_client import ApiClientError

from connectors.errors import ApiError, FatalApiError, RejectedRecordError, RetriableApiError
from connectors.http import (
    DEFAULT_TIMEOUT,
    CallPolicy,
    HttpClient,
    RetrySettings,
    classify_status,
    redact,
    register_secret,
    transport_error,
)
from connectors.mailchimp import settings as S

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


def decode_body(raw: Any) -> Any:
    """A JSON body from whatever the SDK handed over (dict, str, bytes, None)."""
    if isinstance(raw, (dict, list)):
        return raw
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str) and raw.strip()[:1] in ("{", "["):
        try:
            return json.loads(raw)
        except ValueError:
            return None
    return None


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


def error_for(status: int, raw: Any, what: str) -> ApiError:
    """Classify one Mailchimp error answer (shared by the SDK and the raw path)."""
    body = decode_body(raw)
    text = raw if isinstance(raw, str) else ""
    detail = problem_detail(body, text)
    if status == 401:
        detail += " - check esp.api_key (a Mailchimp key ends with -<data center>)"
        return FatalApiError(redact(f"{S.VENDOR} refused the API key ({what}): {detail}"),
                             vendor=S.VENDOR, status=status, detail=redact(detail))
    if status == 400 and S.COMPLIANCE_TITLE.lower() in detail.lower():
        # Never retried: the member unsubscribed or bounced; only their own double opt-in brings them back.
        return RejectedRecordError(redact(f"{S.VENDOR} refused ({what}): {detail}"),
                                   vendor=S.VENDOR, status=status, detail=redact(detail))
    return classify_status(S.VENDOR, status, detail, what=what)


def translate_sdk(what: str) -> Callable[[BaseException], BaseException | None]:
    """Map the SDK's ``ApiClientError`` (HTTP errors and wrapped transport failures) to ours."""

    def translate(exc: BaseException) -> BaseException | None:
        if isinstance(exc, requests.RequestException):
            return transport_error(S.VENDOR, exc, what)
        if not isinstance(exc, ApiClientError):
            return None
        if exc.status_code is None:  # the SDK wraps whatever requests raised
            inner = exc.text
            if isinstance(inner, BaseException):
                mapped = transport_error(S.VENDOR, inner, what)
                if mapped is not None:
                    return mapped
                name = type(inner).__name__
            else:
                name = "unknown error"
            return FatalApiError(redact(f"{S.VENDOR}: the request could not be sent ({what}): {name}"),
                                 vendor=S.VENDOR, status=0)
        return error_for(int(exc.status_code), exc.text, what)

    return translate


class MailchimpClient:
    """Authenticated calls to one Mailchimp account, all under one policy; returns decoded JSON."""

    def __init__(
        self,
        api_key: str,
        base_url: str,
        *,
        retry: RetrySettings | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        max_connections: int = S.MAX_CONNECTIONS,
    ) -> None:
        register_secret(api_key)
        self.base_url = base_url.rstrip("/")
        self.policy = CallPolicy(S.VENDOR, {}, retry, sleep=sleep)
        self.sleep = sleep
        self.max_connections = max_connections
        self.slots = connection_slots(api_key, max_connections)
        # No auth on purpose: the results archive lives behind a pre-signed link on another host.
        self.download = HttpClient(S.VENDOR, self.base_url, self.policy, timeout=timeout, detail=problem_detail)
        self._sdk = mailchimp_marketing.Client()
        self._sdk.set_config({"api_key": api_key, "server": "", "timeout": timeout})
        self._sdk.api_client.host = self.base_url
        self.lists = self._sdk.lists
        self.batches = self._sdk.batches
        self.campaigns = self._sdk.campaigns
        self.reports = self._sdk.reports

    def __repr__(self) -> str:  # never print the key
        return f"MailchimpClient(base_url={self.base_url!r})"

    @contextmanager
    def _slot(self) -> Iterator[None]:
        with self.slots:
            yield

    # ----------------------------------------------------------------- transport

    def sdk(self, endpoint: str, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call an SDK method under the policy; return the decoded JSON body (None for an empty one)."""

        def once() -> Any:
            with self._slot():
                result = fn(*args, **kwargs)
            if isinstance(result, requests.Response):
                if result.status_code >= 400:
                    raise error_for(result.status_code, result.text, what)
                return decode_body(result.content) if result.content else None
            if isinstance(result, str):  # a 2xx the SDK did not decode
                return decode_body(result)
            return result

        return self.policy.call(once, endpoint=endpoint, translate=translate_sdk(what))

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
        """GET /lists/{id}/segments?type=static (id and name only)."""
        return self.sdk(S.EP_SEGMENTS, "GET /lists/{list_id}/segments", self.lists.list_segments, list_id,
                        type="static", count=S.PAGE_SIZE, offset=offset,
                        fields=["segments.id", "segments.name", "total_items"])

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

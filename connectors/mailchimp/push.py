"""Writing to one audience: tags and static segments, at the lowest call count, never touching status.

Mailchimp stores a tag as a static segment, so both writes have two routes:

- the segment route, ``POST /lists/{id}/segments/{segment_id}`` with up to 500 emails to add and
  500 to remove per call: one call per tag per 500 members, answered synchronously;
- the batch route, one ``POST .../members/{hash}/tags`` operation per member inside ``POST /batches``
  (up to :data:`~connectors.mailchimp.settings.BATCH_OPERATIONS` per job): about four calls per job
  (submit, poll until finished, download the results) however many tags each member changes, and
  ``is_syncing`` keeps tag-triggered automations from firing.

:meth:`Pusher.push_tags` costs both and takes the cheaper. Before any write, members Mailchimp has
as unsubscribed or cleaned are set aside ("suppressed"): segsync never changes anything on them.
Members absent from the audience are reported "suppressed: not in the audience", or - only when the
tenant asks for it - created as ``pending`` so that Mailchimp itself asks them to opt in. Members are
added only to tags segsync created or was given (:mod:`connectors.mailchimp.owned`); an add to any other
tag fails, naming it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import zip_longest
from typing import Any

from connectors.base import RecordResult, TagChange
from connectors.kit.batch import CallBudget, Verdict, halves, send_isolating
from connectors.kit.http import decode_json
from connectors.mailchimp import settings as S
from connectors.mailchimp.client import MailchimpClient, offset_pages, problem_detail
from connectors.mailchimp.mapping import subscriber_hash
from connectors.mailchimp.owned import Claims
from core.emails import looks_like_email, normalize_email
from core.errors import ApiError, FatalApiError, InputError

SENT: Verdict = ("sent", "")
ABSENT: Verdict = ("suppressed", S.NOT_IN_AUDIENCE)


def blocked_reason(status: str) -> str:
    """Why a member in compliance state gets nothing from segsync."""
    return f"{status} at Mailchimp"


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class Pusher:
    """Tag and static-segment writes for one audience (state: the segment-id cache)."""

    def __init__(
        self,
        client: MailchimpClient,
        list_id: str,
        blocked: Callable[[], Mapping[str, str]],
        *,
        add_missing_as_pending: bool = False,
        adopt: Sequence[str] = (),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.list_id = list_id
        self.blocked = blocked
        self.add_missing_as_pending = add_missing_as_pending
        self.sleep = sleep
        self._segments: dict[str, int] | None = None
        self._counts: dict[str, int] = {}  # subscribed members per tag, as last listed
        self.claims = Claims(client, list_id, adopt)
        self.budget = CallBudget(S.SPLIT_CALLS)  # calls left to isolate refused records in one segment update

    # ------------------------------------------------------------------ public

    def push_tags(self, changes: Sequence[TagChange]) -> list[RecordResult]:
        """One result per change; case-variant emails are one member (their tag changes merge)."""
        verdicts: dict[str, Verdict] = {}
        keys: list[tuple[str, str | None]] = []  # (change key, hash or None when settled up front)
        settled: dict[int, Verdict] = {}
        tags: dict[str, dict[str, str]] = {}  # hash -> {tag name: active|inactive}
        emails: dict[str, str] = {}
        blocked = self.blocked() if changes else {}
        for i, change in enumerate(changes):
            email = normalize_email(change.email)
            if not email or not looks_like_email(email):
                settled[i] = ("failed", f"invalid email address: {change.email!r}")
                keys.append((change.email, None))
                continue
            h = subscriber_hash(email)
            keys.append((change.email, h))
            if h in blocked:
                settled[i] = ("suppressed", blocked_reason(blocked[h]))
                continue
            wanted = tags.setdefault(h, {})
            emails[h] = email
            for name in change.inactive:
                wanted[str(name)] = "inactive"
            for name in change.active:  # a tag both on and off in one batch: on wins
                wanted[str(name)] = "active"
        refused = self._claim({n for w in tags.values() for n, state in w.items() if state == "active"})
        for h, wanted in list(tags.items()):
            names = [n for n in wanted if wanted[n] == "active" and n in refused]
            if names:
                verdicts[h] = ("failed", refused[names[0]])
                for n in names:
                    del wanted[n]
            if not wanted:
                verdicts.setdefault(h, ("skipped", "no tag changes"))
                del tags[h]
        if tags:
            sent: dict[str, Verdict] = {}
            if self._segment_cost(tags) <= self._batch_cost(len(tags)):
                sent.update(self._tags_by_segment(tags, emails))
            else:
                sent.update(self._tags_by_batches(tags))
            sent.update(self._invite_absent(sent, tags, emails))
            for h, verdict in sent.items():  # a member with a refused tag keeps that failure
                verdicts[h] = _worse(verdicts[h], verdict) if h in verdicts else verdict
        out = []
        for i, (key, member) in enumerate(keys):
            outcome, message = settled.get(i) or verdicts.get(member or "", ("failed", "no result for this member"))
            out.append(RecordResult(key, outcome, message))  # type: ignore[arg-type]
        return out

    def sync_segment(self, name: str, add: Sequence[str], remove: Sequence[str]) -> list[RecordResult]:
        """Add/remove emails to/from the static segment ``name`` (created if missing), 500 per call."""
        if not name or not name.strip():
            raise InputError("a Mailchimp static segment needs a non-blank name")
        blocked = self.blocked() if (add or remove) else {}
        settled: dict[str, Verdict] = {}
        adds: dict[str, str] = {}
        removes: dict[str, str] = {}
        hashes: dict[str, str] = {}
        for key, target in [(k, adds) for k in add] + [(k, removes) for k in remove]:
            email = normalize_email(key)
            if not email or not looks_like_email(email):
                settled[key] = ("failed", f"invalid email address: {key!r}")
                continue
            h = hashes[key] = subscriber_hash(email)
            if h in blocked:
                settled[key] = ("suppressed", blocked_reason(blocked[h]))
            elif target is adds or h not in adds:  # an email both added and removed: added
                target[h] = email
                if target is adds:
                    removes.pop(h, None)
        refused = self._claim([name] if adds else [])
        if refused:
            settled.update({key: ("failed", refused[name]) for key in add if key not in settled})
            adds = {}
        verdicts = self._update_segment(name, adds, removes) if (adds or removes) else {}
        if self.add_missing_as_pending:
            absent = {h: {name: "active"} for h in adds if verdicts.get(h) == ABSENT}
            verdicts.update(self._invite_absent(verdicts, absent, adds))
        out = []
        for key in list(add) + list(remove):
            outcome, message = settled.get(key) or verdicts.get(hashes.get(key, ""), ("failed", "no result"))
            out.append(RecordResult(key, outcome, message))  # type: ignore[arg-type]
        return out

    # ------------------------------------------------------------------ costing

    def _segment_cost(self, tags: Mapping[str, Mapping[str, str]]) -> int:
        per_tag: dict[str, list[int]] = {}
        for wanted in tags.values():
            for name, state in wanted.items():
                counts = per_tag.setdefault(name, [0, 0])
                counts[0 if state == "active" else 1] += 1
        cost = 0 if self._segments is not None else 1
        for name, (on, off) in per_tag.items():
            cost += math.ceil(max(on, off) / S.BATCH_MEMBERS)
            if on and self._segments is not None and name not in self._segments:
                cost += 1  # create the tag first
        return cost

    @staticmethod
    def _batch_cost(members: int) -> int:
        return S.BATCH_CALLS * math.ceil(members / S.BATCH_OPERATIONS)

    # ------------------------------------------------------------------ the segment route

    def _claim(self, names: Iterable[str]) -> dict[str, str]:
        """The tags among ``names`` segsync may not add members to, with why (the others exist afterwards)."""
        names = set(names)
        return self.claims.claim(names, self.segment_ids(), self._counts) if names else {}

    def segment_ids(self) -> dict[str, int]:
        """Static segments (and tags) by name, read once per connector."""
        if self._segments is None:
            found: dict[str, int] = {}
            self._counts = {}
            what = f"GET /lists/{self.list_id}/segments"
            for _, items in offset_pages(what, "segments", lambda offset: self.client.list_segments(self.list_id,
                                                                                                    offset)):
                for seg in items:
                    if isinstance(seg, Mapping) and seg.get("name") is not None and seg.get("id") is not None:
                        found.setdefault(str(seg["name"]), int(seg["id"]))
                        self._counts.setdefault(str(seg["name"]), int(seg.get("member_count") or 0))
            self._segments = found
        return self._segments

    def _tags_by_segment(self, tags: Mapping[str, Mapping[str, str]], emails: Mapping[str, str]) -> dict[str, Verdict]:
        per_tag: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        for h, wanted in tags.items():
            for name, state in wanted.items():
                on, off = per_tag.setdefault(name, ({}, {}))
                (on if state == "active" else off)[h] = emails[h]
        verdicts: dict[str, Verdict] = {}
        for name in sorted(per_tag):
            on, off = per_tag[name]
            for h, verdict in self._update_segment(name, on, off).items():
                verdicts[h] = _worse(verdicts.get(h, SENT), verdict)
        return verdicts

    def _update_segment(self, name: str, adds: Mapping[str, str], removes: Mapping[str, str]) -> dict[str, Verdict]:
        """Apply adds/removes (hash -> email) to one segment; a verdict per hash."""
        verdicts: dict[str, Verdict] = {}
        self.budget = CallBudget(S.SPLIT_CALLS)
        seg_id = self.segment_ids().get(name)  # a tag members are added to was claimed (so created) first
        if seg_id is None:  # nothing to remove from a segment that does not exist
            return {h: ("sent", "not in the segment") for h in removes}
        add_items, remove_items = list(adds.items()), list(removes.items())
        for add_chunk, remove_chunk in zip_longest(_chunks(add_items, S.BATCH_MEMBERS),
                                                   _chunks(remove_items, S.BATCH_MEMBERS), fillvalue=()):
            verdicts.update(self._segment_call(seg_id, list(add_chunk), list(remove_chunk)))
        return verdicts

    def _segment_call(
        self, seg_id: int, add: list[tuple[str, str]], remove: list[tuple[str, str]]
    ) -> dict[str, Verdict]:
        """One segment update; a refused call (400) is split to isolate the record it refused, within the budget."""
        items = [("add", h, e) for h, e in add] + [("remove", h, e) for h, e in remove]
        return send_isolating(items, lambda part: self._segment_send(seg_id, part), key=lambda item: item[1],
                              budget=self.budget, split=_split_segment_items, absorb=(ApiError,))

    def _segment_send(self, seg_id: int, items: Sequence[tuple[str, str, str]]) -> dict[str, Verdict]:
        by_email = {e: h for _, h, e in items}
        body = self.client.update_segment(self.list_id, seg_id, [e for op, _, e in items if op == "add"],
                                          [e for op, _, e in items if op == "remove"])
        verdicts = dict.fromkeys(by_email.values(), SENT)
        removing = {h for op, h, _ in items if op == "remove"}
        for err in body.get("errors") or [] if isinstance(body, Mapping) else []:
            if not isinstance(err, Mapping):
                continue
            listed = err.get("email_addresses") or ([err["email_address"]] if err.get("email_address") else [])
            text = str(err.get("error") or "refused")
            for email in listed if isinstance(listed, list) else []:
                h = by_email.get(normalize_email(str(email)) or "")
                if h is not None:
                    verdicts[h] = _segment_error(text, h in removing)
        return verdicts

    # ------------------------------------------------------------------ the batch route

    def _tags_by_batches(self, tags: Mapping[str, Mapping[str, str]]) -> dict[str, Verdict]:
        ops = [
            {
                "method": "POST",
                "path": f"/lists/{self.list_id}/members/{h}/tags",
                "operation_id": h,
                "body": json.dumps({"tags": [{"name": n, "status": s} for n, s in sorted(w.items())],
                                    "is_syncing": True}),
            }
            for h, w in tags.items()
        ]
        verdicts: dict[str, Verdict] = {}
        jobs: list[tuple[str | None, list[str], str]] = []
        for chunk in _chunks(ops, S.BATCH_OPERATIONS):
            ids = [op["operation_id"] for op in chunk]
            try:
                body = self.client.start_batch(chunk)
            except FatalApiError:
                raise
            except ApiError as exc:
                jobs.append((None, ids, str(exc)))
                continue
            jobs.append((str(body.get("id")) if isinstance(body, Mapping) and body.get("id") else None, ids,
                         "the batch was not accepted"))
        outcomes = self._wait_for([b for b, _, _ in jobs if b])
        for batch_id, ids, problem in jobs:
            results = outcomes.get(batch_id or "", problem)
            if isinstance(results, str):
                for h in ids:
                    verdicts[h] = ("failed", results)
                continue
            by_op = {str(r.get("operation_id")): r for r in results}
            for h in ids:
                verdicts[h] = _op_verdict(by_op.get(h), batch_id or "")
        return verdicts

    def _wait_for(self, batch_ids: Sequence[str]) -> dict[str, list[dict[str, Any]] | str]:
        """Poll jobs together with growing pauses: per job, its results or why there are none."""
        out: dict[str, list[dict[str, Any]] | str] = {}
        waiting = list(batch_ids)
        waited, pause = 0.0, S.POLL_FIRST
        while waiting:
            self.sleep(pause)
            waited += pause
            for batch_id in list(waiting):
                try:
                    job = self.client.batch_status(batch_id)
                except FatalApiError:
                    raise
                except ApiError as exc:
                    out[batch_id] = f"batch {batch_id}: {exc} (retried next run)"
                    waiting.remove(batch_id)
                    continue
                if not isinstance(job, Mapping) or job.get("status") != "finished":
                    continue
                waiting.remove(batch_id)
                url = job.get("response_body_url")
                if not url:
                    out[batch_id] = f"batch {batch_id} finished without a results link (retried next run)"
                    continue
                try:
                    out[batch_id] = self.client.batch_results(str(url))
                except FatalApiError:
                    raise
                except ApiError as exc:
                    out[batch_id] = f"batch {batch_id}: results could not be read: {exc} (retried next run)"
            if waiting and waited >= S.POLL_BUDGET:
                for batch_id in waiting:
                    out[batch_id] = f"batch {batch_id} did not finish within {S.POLL_BUDGET:.0f}s (retried next run)"
                break
            pause = min(S.POLL_MAX, pause * S.POLL_FACTOR)
        return out

    # ------------------------------------------------------------------ absent members

    def _invite_absent(self, verdicts: Mapping[str, Verdict], tags: Mapping[str, Mapping[str, str]],
                       emails: Mapping[str, str]) -> dict[str, Verdict]:
        """With ``add_missing_as_pending``: create absent members as pending, with their active tags."""
        if not self.add_missing_as_pending:
            return {}
        absent = [h for h in tags if verdicts.get(h) == ABSENT and any(s == "active" for s in tags[h].values())]
        out: dict[str, Verdict] = {}
        for chunk in _chunks(absent, S.BATCH_MEMBERS):
            members = [{"email_address": emails[h], "status": S.PENDING,
                        "tags": sorted(n for n, s in tags[h].items() if s == "active")} for h in chunk]
            try:
                body = self.client.add_pending(self.list_id, members)
            except FatalApiError:
                raise
            except ApiError as exc:
                out.update({h: ("failed", str(exc)) for h in chunk})
                continue
            errors = {normalize_email(str(e.get("email_address"))): str(e.get("error") or "refused")
                      for e in (body or {}).get("errors") or [] if isinstance(e, Mapping)}
            for h in chunk:
                error = errors.get(emails[h])
                out[h] = ("failed", f"could not add as pending: {error}") if error else \
                    ("sent", "added as pending: Mailchimp asks them to confirm (double opt-in)")
        if self._segments is not None:
            self._segments = None  # tags may have been created on the way
        return out


def _split_segment_items(items: Sequence[tuple[str, str, str]]) -> list[Sequence[tuple[str, str, str]]]:
    """Halves of the adds, then halves of the removes: each part is one call with one list."""
    adds = [i for i in items if i[0] == "add"]
    removes = [i for i in items if i[0] == "remove"]
    return [*halves(adds), *halves(removes)]


def _worse(a: Verdict, b: Verdict) -> Verdict:
    rank = {"sent": 0, "skipped": 1, "suppressed": 2, "failed": 3}
    return b if rank.get(b[0], 3) > rank.get(a[0], 3) else a


def _segment_error(text: str, removing: bool) -> Verdict:
    """Read one per-email error of a segment update."""
    low = text.lower()
    if removing and "segment" in low:
        return ("sent", "not in the segment")  # the wanted state already holds
    if any(k in low for k in ("not subscribed", "not exist", "not found", "not a list member", "not on the list")):
        return ABSENT
    return ("failed", text)


def _op_verdict(result: Mapping[str, Any] | None, batch_id: str) -> Verdict:
    """Read one operation's result from a finished batch."""
    if result is None:
        return ("failed", f"batch {batch_id} returned no result for this member (retried next run)")
    try:
        status = int(result.get("status_code") or 0)
    except (TypeError, ValueError):
        status = 0
    if 200 <= status < 300:
        return SENT
    if status == 404:
        return ABSENT
    raw = result.get("response")
    detail = problem_detail(decode_json(raw), raw if isinstance(raw, str) else "")
    if S.COMPLIANCE_TITLE.lower() in detail.lower():
        return ("suppressed", detail)
    suffix = " (retried next run)" if status in (0, 429) or status >= 500 else ""
    return ("failed", f"{S.VENDOR} answered {status}: {detail}{suffix}")

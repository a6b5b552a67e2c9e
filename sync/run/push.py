"""Push: send a plan's changes in vendor-sized batches, re-checking consent right before each.

Before a batch is sent, its records are written ahead as in flight (:meth:`Store.intend_batch`);
after the vendor answers, its confirmed values and per-record outcomes are written in one
transaction (:meth:`Store.confirm_batch`). A crash between the two leaves the records in flight:
the next run treats them as possibly applied and re-sends the wanted state, clears included, and a
re-run sends nothing that was already confirmed. Every change ends as sent, suppressed (with
the consent reason) or failed (with the vendor's message); none is silently dropped.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from connectors.base import CrmConnector, EspConnector, PropertyUpdate, RecordResult, TagChange
from connectors.kit.http import redact
from core.errors import ApiError, FatalApiError
from sync.run.plan import CRM, SEGMENT, TAGS, Change, Plan, crm_desired
from sync.run.report import PushSummary
from sync.store.interface import LockLost, Store

log = logging.getLogger("segsync.push")

# emails -> {email: (profiling allowed, email_marketing allowed, reason)}
Recheck = Callable[[Sequence[str]], dict[str, tuple[bool, bool, str]]]
Progress = Callable[[str, int], None]


KEPT_FAILURES = 50  # failures kept with their record and message (the report shows these); all are counted


@dataclass
class PushReport:
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (destination, outcome) -> n
    failures: list[dict[str, str]] = field(default_factory=list)  # the first KEPT_FAILURES
    failures_total: int = 0
    batches: Counter[str] = field(default_factory=Counter)
    stopped: bool = False
    lock_lost: str = ""  # why the push stopped early because the tenant lock was lost

    def add(self, destination: str, outcome: str, n: int = 1) -> None:
        if n:
            self.outcomes[(destination, outcome)] += n

    def failed(self, destination: str, contact_id: str, message: str) -> None:
        self.failures_total += 1
        if len(self.failures) < KEPT_FAILURES:
            self.failures.append({"destination": destination, "contact_id": contact_id, "message": message})

    def totals(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (_, outcome), n in self.outcomes.items():
            out[outcome] += n
        return dict(out)


class PlanPusher:
    """Executes one plan against one tenant's connectors."""

    def __init__(
        self,
        store: Store,
        tenant_id: str,
        run_id: int,
        recheck: Recheck,
        *,
        crm: CrmConnector | None,
        esp: EspConnector | None,
        property_name: str,
        score_names: list[str],
        push_scores: bool,
        segment_prefix: str = "",
        progress: Progress | None = None,
        stop: threading.Event | None = None,
        fence: Callable[[], None] | None = None,
    ) -> None:
        self.store, self.tenant_id, self.run_id = store, tenant_id, run_id
        self.recheck = recheck
        self.crm, self.esp = crm, esp
        self.property_name, self.score_names, self.push_scores = property_name, score_names, push_scores
        self.segment_prefix = segment_prefix  # ESP segments share the tags' namespace (never a customer's name)
        self.progress = progress or (lambda _d, _n: None)
        self.stop = stop or threading.Event()
        self.fence = fence or (lambda: None)  # raises LockLost once the tenant lock is not ours
        self.report = PushReport()
        self.dead: dict[str, str] = {}  # destination -> the fatal error that stopped it for the rest of the run

    def run(self, plan: Plan) -> PushReport:
        """Send one plan (the whole book's, or one chunk's: call again with the next; the report adds up)."""
        for dest, contact_id in plan.forget:
            self.store.confirm_batch(
                self.tenant_id,
                self.run_id,
                dest,
                [(contact_id, None)],
                [(contact_id, "suppressed", "consent withdrawn: local state dropped, nothing sent")],
            )
            self.report.add(dest, "suppressed")
        for dest, changes in plan.changes.items():
            if not changes or self.report.lock_lost:
                continue
            if dest in self.dead:
                self._fail(dest, changes, self.dead[dest])  # stopped by a fatal error in an earlier chunk
                continue
            if dest == CRM and self.crm is not None:
                self._run_dest(dest, changes, self.crm.limits.batch_size, self._send_crm)
            elif dest == TAGS and self.esp is not None:
                self._run_dest(dest, changes, self.esp.limits.batch_size, self._send_tags)
            elif dest.startswith(SEGMENT) and self.esp is not None:
                self._run_dest(dest, changes, self.esp.limits.batch_size, self._send_segment)
        return self.report

    def not_sent(self, dest: str, n: int) -> None:
        """``n`` records of a chunk a shutdown kept from being planned again: failed (not sent, retried next
        run), counted, not stored."""
        self.report.stopped = True
        self.report.add(dest, "failed", n)
        self.report.failures_total += n  # counted, not listed: there is no record at hand to name

    # ------------------------------------------------------------------ one destination

    def _run_dest(
        self, dest: str, changes: list[Change], size: int, send: Callable[[str, list[Change]], list[RecordResult]]
    ) -> None:
        for i in range(0, len(changes), size):
            if self.stop.is_set():
                # Graceful shutdown: the batch in flight finished; the rest is retried next run.
                self.report.stopped = True
                self._fail(dest, changes[i:], "not sent: shutdown requested (retried next run)", persist=False)
                return
            try:
                self.fence()  # the fencing check: never send a batch once another run may own the tenant
            except LockLost as exc:
                self.report.stopped, self.report.lock_lost = True, str(exc)
                self._fail(dest, changes[i:], "not sent: the tenant lock was lost (retried next run)", persist=False)
                return
            batch = self._gate(dest, changes[i : i + size])
            if not batch:
                continue
            # Write-ahead: should the process die before the answer, the next run knows these may be applied.
            ahead = [(c.contact_id, v) for c in batch if (v := c.possible()) is not None]
            self.store.intend_batch(self.tenant_id, self.run_id, dest, ahead)
            try:
                results = send(dest, batch)
            except LockLost as exc:
                # The connector's own fence (checked before every call, retries and splits included) stopped
                # it mid-batch: what was sent stays written ahead as in flight, the next run settles it.
                self.report.stopped, self.report.lock_lost = True, str(exc)
                self._fail(dest, changes[i:], "not sent: the tenant lock was lost (retried next run)", persist=False)
                return
            except FatalApiError as exc:
                self.dead[dest] = f"{exc}"
                self._fail(dest, changes[i:], f"{exc}")
                log.error("%s: %s - stopping this destination", dest, redact(exc))
                return
            except ApiError as exc:
                self._fail(dest, batch, f"{exc}")
                continue
            self.report.batches[dest] += 1
            self._confirm(dest, batch, results)
            self.progress(dest, len(changes[i : i + size]))

    def _gate(self, dest: str, batch: list[Change]) -> list[Change]:
        """Consent as of now, right before sending: an opt-out that arrived mid-run wins."""
        emails = [c.email for c in batch if c.email]
        decisions = self.recheck(emails) if emails else {}
        keep: list[Change] = []
        suppressed: list[tuple[Change, str]] = []
        for c in batch:
            if c.desired is None and dest == CRM:
                keep.append(c)  # clearing our own data is always allowed
                continue
            profiling, email_ok, reason = decisions.get(c.email or "", (False, False, "no consent record"))
            # ESP: email consent is needed to touch the member at all; profiling to add segment data.
            allowed = profiling if dest == CRM else email_ok and (profiling or not c.desired)
            if allowed:
                keep.append(c)
            else:
                suppressed.append((c, reason))
        if suppressed:
            outcomes = [
                (c.contact_id, "suppressed", f"consent re-check before send: {reason or 'not allowed'}")
                for c, reason in suppressed
            ]
            # Local state is kept: the opt-out's own outbox action needs it to clear what we put there,
            # and the next plan drops it once that has run.
            self.store.confirm_batch(self.tenant_id, self.run_id, dest, [], outcomes)
            self.report.add(dest, "suppressed", len(suppressed))
        return keep

    def _confirm(self, dest: str, batch: list[Change], results: list[RecordResult]) -> None:
        by_key: dict[str, RecordResult] = {r.key: r for r in results}
        confirmed, outcomes = [], []
        for c in batch:
            r = by_key.get(c.vendor_key or "")
            if r is None:
                r = RecordResult(c.vendor_key or "", "failed", "the vendor returned no result for this record")
            if r.outcome == "sent":
                confirmed.append((c.contact_id, c.value))
            elif r.outcome == "failed":
                self.report.failed(dest, c.contact_id, redact(r.message))
            outcomes.append((c.contact_id, r.outcome, redact(r.message)))
            self.report.add(dest, r.outcome)
        self.store.confirm_batch(self.tenant_id, self.run_id, dest, confirmed, outcomes)

    def _fail(self, dest: str, changes: list[Change], message: str, persist: bool = True) -> None:
        message = redact(message)
        for c in changes:
            self.report.failed(dest, c.contact_id, message)
        self.report.add(dest, "failed", len(changes))
        if persist:
            self.store.confirm_batch(
                self.tenant_id, self.run_id, dest, [], [(c.contact_id, "failed", message) for c in changes]
            )

    # ------------------------------------------------------------------ vendor calls

    def _send_crm(self, _dest: str, batch: list[Change]) -> list[RecordResult]:
        assert self.crm is not None
        cleared = crm_desired([], {}, self.property_name, self.score_names, self.push_scores)
        updates = [
            PropertyUpdate(key=c.vendor_key or "", properties=c.desired if c.desired is not None else cleared)
            for c in batch
        ]
        return self.crm.push_properties(updates)

    def _send_tags(self, _dest: str, batch: list[Change]) -> list[RecordResult]:
        assert self.esp is not None
        changes = []
        for c in batch:
            want, had = set(c.desired or []), set(c.previous or [])
            # In flight at a crash: ``had`` is only what may be there, so every wanted tag is set again.
            active = want if c.unsure else want - had
            changes.append(
                TagChange(email=c.vendor_key or "", active=tuple(sorted(active)), inactive=tuple(sorted(had - want)))
            )
        return self.esp.push_tags(changes)

    def _send_segment(self, dest: str, batch: list[Change]) -> list[RecordResult]:
        assert self.esp is not None
        name = self.segment_prefix + dest[len(SEGMENT) :]
        add = [c.vendor_key or "" for c in batch if c.desired]
        remove = [c.vendor_key or "" for c in batch if not c.desired]
        return self.esp.sync_segment(name, add, remove)


def summarize(report: PushReport) -> PushSummary:
    """The run report's push section (the first 50 failures; the count of all)."""
    per_dest: dict[str, dict[str, int]] = {}
    for (dest, outcome), n in report.outcomes.items():
        per_dest.setdefault(dest, {})[outcome] = n
    return PushSummary(by_destination=per_dest, totals=report.totals(), failures=report.failures[:KEPT_FAILURES],
                       failures_total=report.failures_total, batches=dict(report.batches), stopped=report.stopped)

"""One tenant's run: lock -> pull -> consent gate -> score -> plan -> guard -> push -> propagate -> report.

Every step's effect on the outside world is bounded and resumable:

- pulls store each page and its cursor in one transaction (a crash re-pulls at most one page);
- vendor consent signals go to the ledger before the page is stored, idempotently;
- the push writes last-sent state per batch after the vendor confirms, so a re-run sends only
  what is still different, and a run with no change sends nothing at all;
- consent is decided for the plan and decided again right before each batch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from connectors import registry
from connectors.base import CrmConnector, EspConnector, PullPage
from connectors.kit.http import redact
from connectors.registry import Evidence
from core.errors import ApiError, FatalApiError, InputError, SegsyncError
from core.times import now as utcnow
from sync.config.models import Config, TenantCfg
from sync.propagation import propagate, queued
from sync.run.book import Book, ChunkPlanner, PlanOutline, score_rows
from sync.run.gate import ConsentGate
from sync.run.plan import CRM, SEGMENT, TAGS, Change, Plan, PlanTally
from sync.run.plan_text import describe_change
from sync.run.push import PlanPusher, summarize
from sync.run.report import DrainSummary, PushSummary, RunReport, ScoringSummary
from sync.run.scorer import ScoreResult, score_tenant
from sync.store.interface import LockLost, Store, TenantLease
from sync.store.objects import TenantObjects

log = logging.getLogger("segsync.sync")

# status of a finished run
OK, FAILED_RECORDS, REFUSED, DRY_RUN, ERROR, STOPPED = "ok", "failed_records", "refused", "dry_run", "error", "stopped"


@dataclass
class RunOptions:
    dry_run: bool = False
    force: bool = False
    retrain: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    progress: Callable[[str, int, int | None], None] | None = None  # (task, advance, total)
    full_refresh: bool = False  # pull every stream from the beginning (stored cursors ignored, then replaced)
    select: tuple[str, ...] = ()  # "segment:NAME": push only what concerns these segments
    # (tenant, changes in words): --plan-out; called once per chunk of the book, the calls together are every change
    plan_sink: Callable[[str, list[dict[str, Any]]], None] | None = None
    examples: int = 5


def _evidence_hook(block: Any) -> Evidence | None:
    """The vendor's consent-evidence hook (an ESP's own opt-in record), if it has one."""
    return registry.plugin_for(block).evidence if block is not None else None


class TenantRun:
    def __init__(self, cfg: Config, tenant: TenantCfg, store: Store, crm: CrmConnector, esp: EspConnector | None,
                 options: RunOptions | None = None) -> None:
        self.cfg, self.tenant, self.store, self.crm, self.esp = cfg, tenant, store, crm, esp
        self.opts = options or RunOptions()
        self.gate = ConsentGate(store, tenant, crm.name, esp.name if esp else None)
        self.report = RunReport(tenant=tenant.id, dry_run=self.opts.dry_run)
        self.report.extra["timezone"] = tenant.timezone  # times in the report are shown in the firm's own zone
        self.run_id = 0
        self.segment_names = [s.name for s in tenant.segments]
        self.score_names = [s.name for s in tenant.scores if s.kind != "cluster"]  # pushed as number properties
        self.lease = TenantLease(tenant.id)  # replaced by the real one when the run takes the lock
        self._vendor_ids: dict[str, tuple[str | None, str | None]] = {}  # of the chunk being planned
        self.book = Book(store, tenant.id, self.gate, crm.name, esp.name if esp else None)
        self.contact_of: dict[str, str] = {}  # email -> contact id, of the chunk being pushed
        self.addresses: dict[str, set[str]] = {}  # contact id -> emails, of the chunk being pushed
        # What segsync created at each vendor is recorded per tenant: it writes into nothing else.
        crm.use_objects(TenantObjects(store, tenant.id, crm.name))
        if esp is not None:
            esp.use_objects(TenantObjects(store, tenant.id, esp.name, sent_to=self._sent_to_tag))

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        # The lock first: a run refused because another holds the tenant leaves no trace in the run log.
        with self.store.tenant_lock(self.tenant.id) as lease:
            self.lease = lease
            # Every vendor call of the run (each retry, each split batch) first checks the lock is ours.
            connectors = [c for c in (self.crm, self.esp) if c is not None]
            for connector in connectors:
                connector.fence_calls(lease.check)
            started = time.monotonic()
            run_started = utcnow()
            self.run_id = self.store.start_run(self.tenant.id, self.opts.dry_run)
            self.report.run_id, self.report.started_at = self.run_id, run_started.isoformat()
            status = ERROR
            try:
                status = self._run(run_started)
            except LockLost as exc:
                # Another run may own the tenant now: stop cleanly, write nothing more to the vendors.
                log.error("%s", exc)
                self.report.error = str(exc)
                status = STOPPED
            except InputError as exc:
                self.report.error = redact(str(exc))
                if not self._from_a_vendor(exc):
                    raise  # a local file the user exports (CSV): their input, exit 2
                # An API answer that makes no sense is the vendor's fault, not the config's: exit 1.
                raise FatalApiError(f"{self.report.error} (an unexpected answer from the vendor)") from None
            except (SegsyncError, ApiError) as exc:
                self.report.error = redact(str(exc))
                raise
            except Exception as exc:
                self.report.error = redact(f"{type(exc).__name__}: {exc}")
                raise
            finally:
                self.report.status = status
                self.report.duration_s = round(time.monotonic() - started, 2)
                self.report.api = {"crm": self.crm.stats(), "esp": self.esp.stats() if self.esp else {}}
                for connector in connectors:
                    connector.fence_calls(None)
                self.store.finish_run(self.run_id, status, self.report.to_dict())
        return self.report.to_dict()

    def _from_a_vendor(self, exc: InputError) -> bool:
        """Whether malformed input came from a vendor's API: the API connectors name themselves first.

        Anything else (a CSV export, the key file, a saved model) is the user's input and keeps exit 2.
        """
        apis = [c.name for c in (self.crm, self.esp) if c is not None and c.name != "csv"]
        return any(str(exc).startswith(f"{name}:") for name in apis)

    def _run(self, run_started: datetime) -> str:
        if not self.opts.dry_run:
            self.report.outbox_before = self._drain()
        self._pull_all(run_started)
        if self.opts.stop.is_set():
            return STOPPED  # every stored page kept its cursor: the next run goes on from there
        allowed = self._gate()
        self._progress("score", 0, None)
        scored = self._score(allowed)
        self._progress("score", 1, 1)
        outline = self._plan(scored)
        self._progress("plan", outline.full.count(), outline.full.count())
        if self.opts.dry_run:
            return DRY_RUN
        if self._guard(outline.chosen):
            self.report.outbox_after = self._drain()  # opt-outs never wait for a plan to be approved
            return REFUSED
        if lost := self._push(outline):
            self.report.error = lost
            return STOPPED
        self.report.outbox_after = self._drain()
        push = self.report.push or PushSummary()
        if push.stopped:
            return STOPPED
        return FAILED_RECORDS if push.totals.get("failed") else OK

    def _sent_to_tag(self, _kind: str, name: str) -> set[str] | None:
        """The ESP emails segsync sent to its tag ``name`` (as a tag or as a static segment; confirmed or in
        flight): what an install from before vendor objects were recorded checks an existing tag against."""
        prefix = self.tenant.push.tag_prefix
        if self.esp is None or not name.startswith(prefix):
            return None
        segment = SEGMENT + name[len(prefix):]
        out: set[str] = set()
        # One streamed query of the two destinations' rows with the ESP's email: no map of every contact's state.
        for dest, email, value in self.store.sent_emails(self.tenant.id, self.esp.name, [TAGS, segment]):
            sent = json.loads(value)
            if (isinstance(sent, list) and name in sent) if dest == TAGS else bool(sent):
                out.add(email)
        return out

    # ------------------------------------------------------------------ pull

    def _esp_members(self) -> dict[str, tuple[str, str | None]]:
        """email the ESP knows -> (its vendor id, the ESP status last seen), from the store."""
        assert self.esp is not None
        # One streamed join (identity email, vendor id, status): not every contact with its properties.
        return {email: (vid, status) for email, vid, status in self.store.esp_audience(self.tenant.id, self.esp.name)}

    def _pull_all(self, run_started: datetime) -> None:
        streams: list[tuple[str, Callable[[str | None, datetime], Iterator[PullPage]]]] = [
            (f"{self.crm.name}.contacts", self.crm.pull_contacts),
            (f"{self.crm.name}.engagement", self.crm.pull_engagement),
        ]
        hooks = {self.crm.name: _evidence_hook(self.tenant.crm)}
        if self.esp is not None:
            streams += [
                (f"{self.esp.name}.members", self.esp.pull_members),
                (f"{self.esp.name}.engagement", self.esp.pull_engagement),
            ]
            hooks[self.esp.name] = _evidence_hook(self.tenant.esp)
            # What the store holds of the audience: the ESP then reads only what changed.
            self.esp.known_members(self._esp_members(), self.store.cursor(self.tenant.id, f"{self.esp.name}.members"))
        pulls: dict[str, dict[str, int]] = {}
        consent = Counter[str]()
        for stream, pull in streams:
            stats = pulls.setdefault(stream, Counter())
            evidence = hooks.get(stream.rpartition(".")[0])  # the vendor's own consent evidence in its records
            cursor = None if self.opts.full_refresh else self.store.cursor(self.tenant.id, stream)
            for page in pull(cursor, run_started):
                signals = [*page.consent, *(evidence(page.contacts, page.consent) if evidence else [])]
                recorded = self.gate.record(signals)
                consent["signals_seen"] += len(signals)
                consent["recorded"] += recorded.recorded
                consent["withdrawals_recorded"] += recorded.withdrawals
                consent["propagations_queued"] += recorded.enqueued
                consent["withdrawals_already_held"] += recorded.already_withdrawn
                result = self.store.store_page(self.tenant.id, page.contacts, page.events, (stream, page.cursor))
                stats["pages"] += 1
                stats["records"] += len(page.contacts)
                stats["new"] += result.new
                stats["changed"] += result.changed
                stats["events"] += result.events
                self._progress(f"pull {stream}", len(page.contacts) + len(page.events), page.total)
                if self.opts.stop.is_set():
                    break
            if self.opts.stop.is_set():
                break
        consent["carried_from_vendor_ids"] = self.gate.link_vendor_refs()
        self.report.pull = {k: dict(v) for k, v in pulls.items()}
        self.report.consent = dict(consent)

    # ------------------------------------------------------------------ consent gate

    def _gate(self) -> set[str]:
        """Consent for every contact, a chunk at a time: the report's counts and who may be scored (ids only)."""
        allowed: set[str] = set()
        seen = Counter[str]()
        for _, chunk in self.book.chunks(sent=False):
            for p in self.book.people(chunk, share=True):
                seen["total"] += 1
                seen["in_crm"] += bool(p.crm_id)
                seen["in_esp"] += bool(p.esp_id)
                seen["profiling_allowed"] += p.profiling
                seen["email_marketing_allowed"] += p.email_marketing
                if p.profiling:
                    allowed.add(p.contact_id)
        counts = self.store.counts(self.tenant.id)
        self.report.contacts = {"total": seen["total"], "events": counts["events"],
                                **{k: seen[k] for k in ("in_crm", "in_esp", "profiling_allowed",
                                                        "email_marketing_allowed")}}
        return allowed

    # ------------------------------------------------------------------ score

    def _score(self, allowed: set[str]) -> ScoreResult:
        # --retrain and --full-refresh always score in full; otherwise unchanged inputs reuse the stored scores.
        result = score_tenant(self.store, self.tenant, self.cfg.model_dir, allowed, retrain=self.opts.retrain,
                              reuse=not self.opts.full_refresh)
        if not self.opts.dry_run:
            self._save_scores(result)
        self.report.scoring = ScoringSummary(
            scored=result.scored, as_of=result.as_of, models=result.models, insufficient=result.verdicts,
            holdout_percent=self.tenant.holdout_percent, holdout_contacts=len(result.holdout_ids),
            warnings=result.warnings, fairness=result.fairness, reused=result.reused,
            changed_inputs=result.changed,
        )
        self.report.segments = result.assignment.to_dict() if result.assignment else {}
        return result

    def _save_scores(self, result: ScoreResult) -> None:
        """Store the scores and segments, and then the mark saying which inputs they match (cleared first: a crash
        in between leaves no mark, so the next run scores in full). Reused ones are stored already."""
        tenant_id = self.tenant.id
        if result.reused:
            self.store.confirm_segments(tenant_id)
            return
        self.store.set_scoring_mark(tenant_id, None)
        self.store.save_scores(tenant_id, score_rows(result, utcnow()))  # a generator, saved in batches
        if result.assignment is not None:
            self.store.save_segments(
                tenant_id,
                {k: set(v) for k, v in result.assignment.members.items()},
                {k: set(v) for k, v in result.assignment.holdout.items()},
            )
        if result.mark is not None:
            self.store.set_scoring_mark(tenant_id, result.mark)

    # ------------------------------------------------------------------ plan

    def _plan(self, scored: ScoreResult) -> PlanOutline:
        """Pass 1: every chunk's plan is built, tallied, described (examples, ``--plan-out``) and dropped, so the
        guard and the report see the whole plan while only one chunk of it exists at a time."""
        self.planner = ChunkPlanner(self.tenant, self.book, scored, self.score_names, self.segment_names,
                                    self.esp is not None)
        outline = PlanOutline.start(self.planner.dests, self.planner.initial)
        examples: dict[str, list[dict[str, Any]]] = {}
        for after, chunk in self.book.chunks():
            part = self.planner.plan(chunk, share=True)  # the gate's verdicts for these people, if unchanged
            outline.full.add(part.plan)
            self._vendor_ids = part.vendor_ids()
            for dest, changes in part.plan.changes.items():
                if changes:
                    shown = examples.setdefault(dest, [])
                    shown += [self._describe(c) for c in changes[: max(0, self.opts.examples - len(shown))]]
            chosen = self._select(part.plan)
            outline.chosen.add(chosen)
            if self.opts.plan_sink:
                self.opts.plan_sink(self.tenant.id, [self._describe(c) for cs in chosen.changes.values() for c in cs])
            if chosen.count() or chosen.forget:
                outline.work.append((after, {d: len(cs) for d, cs in chosen.changes.items()}))
                outline.keep(after, chosen, part.chunk.addresses, budget=2 * self.book.size)
        full = outline.full
        summary = full.summary()
        summary["change_share"] = round(full.change_share(), 4)
        summary["initial_destinations"] = sorted(full.initial)
        summary["cost"] = self._cost(full.counts())
        summary["examples"] = {d: examples[d] for d in self.planner.dests if d in examples}
        summary["forget"] = full.forget
        summary["in_flight_resent"] = full.in_flight_resent
        if self.opts.select:
            summary["selected"] = {"select": list(self.opts.select), "changes": outline.chosen.count()}
        self.report.plan = summary
        return outline

    def _select(self, plan: Plan) -> Plan:
        """The part of a chunk's plan ``--select`` asked for (all of it without a selection)."""
        if not self.opts.select:
            return plan
        from sync.run.select import select_plan

        return select_plan(plan, self.opts.select, self.tenant.push.tag_prefix)

    def _describe(self, c: Change) -> dict[str, Any]:
        """A change in words with the masked email and the vendor's own record id (dry-run examples, --plan-out)."""
        crm_id, esp_id = self._vendor_ids.get(c.contact_id, (None, None))
        return describe_change(c, crm_id if c.destination == CRM else esp_id,
                               segment_property=self.tenant.push.crm_property, tag_prefix=self.tenant.push.tag_prefix)

    def _cost(self, counts: dict[str, int]) -> dict[str, Any]:
        """API write calls the push will cost, per destination, from the connectors' batch limits."""
        out: dict[str, Any] = {}
        for dest, records in counts.items():
            if not records:
                continue
            conn = self.crm if dest == CRM else self.esp
            if conn is None:
                continue
            limits = conn.limits
            out[dest] = {
                "records": records,
                "calls": math.ceil(records / limits.batch_size),
                "vendor": conn.name,
                "limit": f"{limits.requests_per_window} requests / {limits.window_seconds:g} s, "
                f"{limits.batch_size} per batch",
            }
        return out

    # ------------------------------------------------------------------ guard and push

    def _guard(self, plan: PlanTally) -> bool:
        share = plan.change_share()
        limit = self.tenant.max_change_share
        if share > limit and not self.opts.force:
            self.report.refused = (
                f"the plan would change {share:.0%} of {plan.total_contacts} contacts, above max_change_share "
                f"{limit:.0%}; check the model and mappings, then re-run with --force if it is intended"
            )
            self.report.push = PushSummary()
            return True
        return False

    def _push(self, outline: PlanOutline) -> str:
        """Pass 2: each chunk with something to send is sent; returns why it stopped early if the tenant lock was
        lost (else "").

        A plan small enough (a few chunks' worth of changes) was kept from pass 1; a larger one is planned again
        chunk by chunk, so only one chunk of it exists at a time. What a plan reads does not change in between
        (the tenant lock is held; the pull is over) but consent, decided again as of now; and consent is
        re-checked right before every batch as well, so an opt-out that lands meanwhile wins.
        """
        counts = outline.chosen.counts()
        if counts.get(CRM):
            # Create (idempotently) the property group, the segment property with every option, the score properties.
            scores = self.score_names if self.tenant.push.crm_scores else []
            self.crm.ensure_schema(self.tenant.push.crm_property, self.segment_names, scores)

        def recheck(emails: Sequence[str]) -> dict[str, tuple[bool, bool, str]]:
            cids = {e: self.contact_of.get(e) for e in emails}
            fresh = self.store.addresses(self.tenant.id, [c for c in cids.values() if c])
            verdicts = self.gate.decide_people(
                {c: fresh.get(c, set()) | self.addresses.get(c, set()) for c in cids.values() if c}
            )
            return {
                e: verdicts.get(c, (False, False, "unknown contact")) if c else (False, False, "unknown contact")
                for e, c in cids.items()
            }

        pusher = PlanPusher(
            self.store, self.tenant.id, self.run_id, recheck,
            crm=self.crm, esp=self.esp, property_name=self.tenant.push.crm_property,
            score_names=self.score_names, push_scores=self.tenant.push.crm_scores,
            segment_prefix=self.tenant.push.tag_prefix,
            progress=lambda dest, n: self._progress(f"push {dest}", n, counts.get(dest, 0)),
            stop=self.opts.stop,
            fence=self.lease.check,
        )
        for i, (after, _) in enumerate(outline.work):
            if pusher.report.lock_lost:
                break  # as within a chunk: what is left is planned again by the next run
            if self.opts.stop.is_set():
                # Graceful shutdown between chunks: the rest is not planned again, only reported as not sent.
                for _, left in outline.work[i:]:
                    for dest, n in left.items():
                        pusher.not_sent(dest, n)
                break
            if after in outline.kept:
                plan, self.addresses = outline.kept.pop(after)
            else:
                part = self.planner.plan(self.book.chunk(after))
                plan, self.addresses = self._select(part.plan), part.chunk.addresses
            self.contact_of = {c.email: c.contact_id for cs in plan.changes.values() for c in cs if c.email}
            pusher.run(plan)
        done = pusher.report
        self.report.push = summarize(done)
        return done.lock_lost

    def _drain(self) -> DrainSummary:
        self.lease.check()  # the drain writes to the vendors too: only while the tenant is ours
        report = propagate(self.store, self.tenant, self.crm, self.esp)
        return DrainSummary(
            report.done,
            report.retrying,
            report.failed,
            [redact(m) for m in list(report.errors.values())[:10]],
            queued(self.store, self.tenant.id),
        )

    def _progress(self, task: str, n: int, total: int | None) -> None:
        if self.opts.progress:
            self.opts.progress(task, n, total)


def run_tenant(
    cfg: Config,
    tenant: TenantCfg,
    store: Store,
    options: RunOptions | None = None,
    *,
    base_dir: Path = Path("."),
    crm: CrmConnector | None = None,
    esp: EspConnector | None = None,
) -> dict[str, Any]:
    """Build the tenant's connectors (unless given) and run it once."""
    from sync.config.wiring import build_crm, build_esp

    crm = crm or build_crm(tenant, base_dir)
    if esp is None and tenant.esp is not None:
        esp = build_esp(tenant)
    return TenantRun(cfg, tenant, store, crm, esp, options).run()


def exit_code(reports: list[dict[str, Any]]) -> int:
    """0 ok (or dry run), 1 if any run finished with failed records, was stopped or errored, 2 if refused."""
    statuses = {r.get("status") for r in reports}
    if REFUSED in statuses:
        return 2
    if statuses & {FAILED_RECORDS, ERROR, STOPPED}:
        return 1
    return 0


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")

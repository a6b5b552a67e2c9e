"""A tenant's book chunk by chunk: consent-gated people and each chunk's plan, never the whole book at once.

A run reads its contacts ``CHUNK`` at a time in id order (:meth:`Store.contact_chunk`: the contacts'
columns without their properties, vendor ids, addresses, last-sent and in-flight rows of those contacts
only), decides consent for them, and builds their plan with the pure :func:`sync.run.plan.build_plan`.
The chunks partition the contacts, so the chunk plans together are the whole plan: a person's changes
depend only on that person's own state and scores, except which destinations are new, which is
read once for the whole book (:meth:`ChunkPlanner.initial`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from sync.config.models import TenantCfg
from sync.run.gate import ConsentGate, Verdict
from sync.run.plan import Person, Plan, PlanTally, build_plan, destinations
from sync.run.scorer import ScoreResult
from sync.store.chunks import ContactChunk
from sync.store.interface import Store

CHUNK = 20_000  # contacts per chunk: a chunk's plan inputs are a few tens of MB, a book's would be GBs


class Book:
    """The tenant's live contacts, read and consent-gated one chunk at a time."""

    def __init__(self, store: Store, tenant_id: str, gate: ConsentGate, crm: str, esp: str | None,
                 size: int = CHUNK) -> None:
        self.store, self.tenant_id, self.gate = store, tenant_id, gate
        self.crm, self.esp, self.size = crm, esp, size
        # The gate pass's verdicts for the plan's first pass, by chunk: (digest of what they were decided on, the
        # ledger's position then, one shared verdict object per contact in the chunk's order: a pointer each).
        self._kept: dict[str | None, tuple[int, int, list[Verdict]]] = {}

    def chunks(self, after: str | None = None, *, sent: bool = True) -> Iterator[tuple[str | None, ContactChunk]]:
        """(where the chunk starts, the chunk) from ``after`` to the end of the book."""
        while True:
            chunk = self.store.contact_chunk(self.tenant_id, after, self.size, sent=sent)
            if not chunk.contacts:
                return
            yield after, chunk
            after = chunk.last_id

    def chunk(self, after: str | None) -> ContactChunk:
        """The chunk that starts after ``after`` (as :meth:`chunks` yielded it)."""
        return self.store.contact_chunk(self.tenant_id, after, self.size)

    def people(self, chunk: ContactChunk, *, share: bool = False) -> list[Person]:
        """The chunk's contacts with their vendor ids and the ledger's verdicts as of now (fails closed).

        ``share``: the gate pass and the plan's first pass ask for the same chunks one after the other (the gate
        for who may be scored, the plan for what to send): the first asker's verdicts are kept and the second
        takes them instead of asking the ledger again, when the chunk's contacts and addresses are the same and
        nothing was recorded in the ledger since (a webhook's opt-out in between: everyone is decided again).
        The push still decides again, as of then, before every batch (:meth:`sync.run.pipeline.TenantRun._push`)."""
        crm_ids = chunk.identities.get(self.crm, {})
        esp = chunk.identities.get(self.esp, {}) if self.esp else {}
        start = chunk.contacts[0][0] if chunk.contacts else None
        digest = mark = 0
        if share:  # only the two sharing passes pay for the digest and the ledger's position
            digest = hash(tuple((cid, email, frozenset(chunk.addresses.get(cid, ())))
                                for cid, email, _ in chunk.contacts))
            mark = self.gate.ledger_mark()  # read before deciding: a later record moves it
        kept = self._kept.pop(start, None) if share else None
        if kept is not None and kept[:2] == (digest, mark):
            ordered = kept[2]
        else:
            decided = self.gate.decide_people({cid: chunk.addresses.get(cid, set()) for cid, _, _ in chunk.contacts})
            shared: dict[Verdict, Verdict] = {}
            no_email: Verdict = (False, False, "no email to check consent against")
            ordered = [shared.setdefault(decided[cid], decided[cid]) if email else no_email
                       for cid, email, _ in chunk.contacts]
            if share and kept is None:
                self._kept[start] = (digest, mark, ordered)
        people = []
        for (cid, email, esp_status), (profiling, email_ok, reason) in zip(chunk.contacts, ordered, strict=True):
            crm_id = crm_ids.get(cid, (None, None))[0]
            esp_id, esp_email = esp.get(cid, (None, None))
            people.append(Person(cid, email, crm_id, esp_id, esp_status, profiling, email_ok, reason, esp_email))
        return people


@dataclass
class PlanOutline:
    """The whole plan without its changes (pass 1): what the report and the guard read, and which chunks to send."""

    full: PlanTally
    chosen: PlanTally  # what ``--select`` keeps of it (all of it without a selection): guarded and sent
    work: list[tuple[str | None, dict[str, int]]] = field(default_factory=list)
    # ^ (where the chunk starts, its changes per destination) of each chunk with something to send or forget
    kept: dict[str | None, tuple[Plan, dict[str, set[str]]]] = field(default_factory=dict)
    # ^ chunk start -> its plan and its people's addresses, kept from pass 1 while the whole plan is small
    kept_records: int | None = 0  # None once the plan outgrew the budget: every chunk is planned again

    def keep(self, after: str | None, plan: Plan, addresses: dict[str, set[str]], *, budget: int) -> None:
        """Keep a chunk's plan for the push while all kept plans hold at most ``budget`` records (changes and
        forgets); past that, keep none (pass 2 plans every chunk again: one chunk of changes at a time)."""
        if self.kept_records is None:
            return
        self.kept_records += plan.count() + len(plan.forget)
        if self.kept_records > budget:
            self.kept.clear()
            self.kept_records = None
            return
        plan.suppressed = []  # tallied already; the push reads only changes and forgets
        ids = {c.contact_id for cs in plan.changes.values() for c in cs}
        self.kept[after] = (plan, {cid: emails for cid, emails in addresses.items() if cid in ids})

    @classmethod
    def start(cls, dests: list[str], initial: set[str]) -> PlanOutline:
        def tally() -> PlanTally:
            return PlanTally({d: Counter() for d in dests}, initial=set(initial))

        return cls(tally(), tally())


@dataclass
class ChunkPlan:
    chunk: ContactChunk
    people: list[Person]
    plan: Plan

    def vendor_ids(self) -> dict[str, tuple[str | None, str | None]]:
        return {p.contact_id: (p.crm_id, p.esp_id) for p in self.people}


class ChunkPlanner:
    """Builds each chunk's plan from the run's scores and the tenant's push settings."""

    def __init__(self, tenant: TenantCfg, book: Book, scored: ScoreResult, score_names: list[str],
                 segment_names: list[str], has_esp: bool) -> None:
        self.tenant, self.book, self.scored = tenant, book, scored
        self.score_names, self.segment_names, self.has_esp = score_names, segment_names, has_esp
        push = tenant.push
        # An ESP's tag may BE a static segment: with tags on, a segment of the same name would be the
        # same object written twice, so static segments are pushed only when tags are off.
        self.esp_tags, self.esp_segments = push.esp_tags, push.esp_static_segments and not push.esp_tags
        self.dests = destinations(segment_names, has_esp=has_esp, esp_tags=self.esp_tags,
                                  esp_segments=self.esp_segments)
        # Segment members as sets (ids only; holdouts are never members), asked once per contact.
        members = scored.assignment.members if scored.assignment else {}
        self.members = {name: set(ids) for name, ids in members.items()}
        self.initial = {d for d in self.dests if d not in set(book.store.destinations(book.tenant_id, ""))}

    def plan(self, chunk: ContactChunk, *, share: bool = False) -> ChunkPlan:
        people = self.book.people(chunk, share=share)
        ids = [p.contact_id for p in people]
        segments_of: dict[str, set[str]] = {}
        for name, members in self.members.items():
            for cid in ids:
                if cid in members:
                    segments_of.setdefault(cid, set()).add(name)
        held = self.scored.holdout_ids
        scores_of: dict[str, dict[str, float | None]] = {}
        for name in self.score_names:
            series = self.scored.scores.get(name)
            if series is None:
                continue
            # The chunk's rows of the book's scores: a reindex, not a dict of every contact's scores.
            values = series.reindex(pd.Index(ids, dtype=object)).to_numpy()
            for contact_id, v in zip(ids, values, strict=True):
                if contact_id not in held and pd.notna(v):
                    scores_of.setdefault(contact_id, {})[name] = float(v)
        push = self.tenant.push
        plan = build_plan(
            self.tenant.id, people, segments_of, scores_of, chunk.sent, unsure=chunk.in_flight, initial=self.initial,
            property_name=push.crm_property, score_names=self.score_names, segment_names=self.segment_names,
            push_scores=push.crm_scores, esp_tags=self.esp_tags, esp_segments=self.esp_segments,
            tag_prefix=push.tag_prefix, has_esp=self.has_esp,
        )
        return ChunkPlan(chunk, people, plan)


def score_rows(result: ScoreResult, now: datetime) -> Iterator[dict[str, Any]]:
    """The score rows to save, one at a time (numbers, then cluster labels): never a list of the whole book's."""
    for name, series in result.scores.items():
        for cid, v in series.items():
            if pd.notna(v):
                yield {"contact_id": cid, "score": name, "value": float(v), "label": None, "scored_at": now}
    for name, series in result.clusters.items():
        for cid, v in series.items():
            yield {"contact_id": cid, "score": name, "value": None, "label": str(v), "scored_at": now}

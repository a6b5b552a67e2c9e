"""Plan: desired state minus what the vendors last confirmed = the changes to send.

Pure functions over plain data, so the rules (consent gating, holdout exclusion, the
change guard) are tested without any I/O. Destinations:

- ``crm.properties``: per contact, the segment multi-select and the score properties;
- ``esp.tags``: per contact, the set of active segsync tags;
- ``esp.segment:<name>``: per contact, membership of one static segment.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sync.store.sqlcore import canonical

CRM = "crm.properties"
TAGS = "esp.tags"
SEGMENT = "esp.segment:"


@dataclass(frozen=True)
class Person:
    """What the planner knows of one contact."""

    contact_id: str
    email: str | None
    crm_id: str | None
    esp_id: str | None
    esp_status: str | None
    profiling: bool  # consent gate: may be scored and tagged
    email_marketing: bool  # consent gate: may be in ESP tags and segments
    reason: str = ""  # why a purpose is refused (from the ledger)
    esp_email: str | None = None  # the address the ESP knows the person by, when it differs


@dataclass(frozen=True)
class Change:
    destination: str
    contact_id: str
    email: str | None
    vendor_key: str | None  # CRM id for properties, email for the ESP
    desired: Any  # what we want there (dict / sorted list / True); None = nothing of ours
    previous: Any  # what the vendor last confirmed; None = nothing
    unsure: bool = False  # a crash left the last batch unanswered: ``previous`` is what the vendor MAY hold

    @property
    def value(self) -> str | None:
        """The last-sent value to store once the vendor confirms (None deletes the row)."""
        return None if self.desired in (None, [], {}) else canonical(self.desired)

    def possible(self) -> str | None:
        """What the vendor may hold while this change is in flight (applied or not), for the write-ahead.

        Tags: the union of before and after; a segment: a member if either is; CRM properties: the
        values sent (or, for a clear, those there before). None when there is nothing of ours either way.
        """
        if self.destination == TAGS:
            tags = sorted(set(self.previous or []) | set(self.desired or []))
            return canonical(tags) if tags else None
        if self.destination.startswith(SEGMENT):
            return canonical(True) if (self.previous or self.desired) else None
        value = self.desired if self.desired not in (None, [], {}) else self.previous
        return None if value in (None, [], {}) else canonical(value)


@dataclass
class Plan:
    tenant_id: str
    changes: dict[str, list[Change]] = field(default_factory=dict)
    suppressed: list[tuple[str, str, str]] = field(default_factory=list)  # (destination, contact id, reason)
    forget: list[tuple[str, str]] = field(
        default_factory=list
    )  # (destination, contact id): drop local state, send nothing
    total_contacts: int = 0
    initial: set[str] = field(default_factory=set)  # destinations with no confirmed state yet
    segment_property: str = "segsync_segments"

    def count(self) -> int:
        return sum(len(v) for v in self.changes.values())

    def changed_contacts(self) -> int:
        """Contacts whose pushed state would change, over destinations that already had state.

        In the CRM every pushed contact has confirmed state, so a first-time value (``previous``
        None: a new contact, or the rest of an interrupted first push) is not a change of mind; nor is
        re-sending, unchanged, a record a crash left in flight.
        """
        return len({c.contact_id for d, cs in self.changes.items() if d not in self.initial for c in cs
                    if not self._resent_as_is(c) and (d != CRM or self._segments_moved(c))})

    @staticmethod
    def _resent_as_is(c: Change) -> bool:
        return c.unsure and c.value == (None if c.previous in (None, [], {}) else canonical(c.previous))

    def _segments_moved(self, c: Change) -> bool:
        """A CRM change counts for the guard when the person's segments change, not when a score drifts."""
        if c.previous is None:
            return False
        before = (c.previous or {}).get(self.segment_property, "")
        after = (c.desired or {}).get(self.segment_property, "")
        return bool(before != after)

    def change_share(self) -> float:
        return self.changed_contacts() / self.total_contacts if self.total_contacts else 0.0

    def summary(self) -> dict[str, Any]:
        return PlanTally.of(self).summary()


@dataclass
class PlanTally:
    """What the run report and the change guard need of a plan built chunk by chunk, without its changes:
    counts per destination, suppression reasons, contacts changed. Summing the tallies of the chunk plans
    gives the whole plan's (chunks partition the contacts, so per-contact counts add up)."""

    destinations: dict[str, Counter[str]] = field(default_factory=dict)  # destination -> changes/adds/removes
    suppressed: Counter[str] = field(default_factory=Counter)  # reason -> contacts
    total_contacts: int = 0
    changed_contacts: int = 0  # what :meth:`Plan.changed_contacts` counts
    forget: int = 0
    in_flight_resent: int = 0
    initial: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, plan: Plan) -> PlanTally:
        tally = cls(initial=set(plan.initial))
        tally.add(plan)
        return tally

    def add(self, plan: Plan) -> None:
        for dest, changes in plan.changes.items():
            counts = self.destinations.setdefault(dest, Counter())
            counts["changes"] += len(changes)
            counts["adds"] += sum(1 for c in changes if c.previous is None)
            counts["removes"] += sum(1 for c in changes if c.desired is None)
            self.in_flight_resent += sum(1 for c in changes if c.unsure)
        self.suppressed.update(r for _, _, r in plan.suppressed)
        self.total_contacts += plan.total_contacts
        self.changed_contacts += plan.changed_contacts()
        self.forget += len(plan.forget)

    def count(self) -> int:
        return sum(c["changes"] for c in self.destinations.values())

    def counts(self) -> dict[str, int]:
        """destination -> changes (every destination of the plan, none left out)."""
        return {dest: c["changes"] for dest, c in self.destinations.items()}

    def change_share(self) -> float:
        return self.changed_contacts / self.total_contacts if self.total_contacts else 0.0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for dest, c in sorted(self.destinations.items()):
            out[dest] = {
                "changes": c["changes"],
                "adds": c["adds"],
                "removes": c["removes"],
                "updates": c["changes"] - c["adds"] - c["removes"],
            }
        return {"destinations": out, "suppressed": dict(self.suppressed), "total_changes": self.count()}


def crm_desired(
    segments: Iterable[str],
    scores: Mapping[str, float | None],
    property_name: str,
    score_names: Iterable[str],
    push_scores: bool,
) -> dict[str, str]:
    """The CRM property values for one contact. Empty strings clear a property."""
    values = {property_name: ";".join(sorted(segments))}
    if push_scores:
        for name in score_names:
            v = scores.get(name)
            values[f"segsync_score_{name}"] = "" if v is None else score_text(v)
    return values


def score_text(value: float) -> str:
    """A score as pushed: probabilities to two decimals, money to three significant figures.

    Coarse on purpose: a new day of data nudges every estimate a little, and a CRM does not need
    lifetime value to the cent - only real moves should cost a write.
    """
    if abs(value) < 100:
        return f"{value:.2f}"
    return str(int(float(f"{value:.3g}")))


def build_plan(
    tenant_id: str,
    people: Iterable[Person],
    segments_of: Mapping[str, set[str]],  # contact id -> segments (holdout already excluded)
    scores_of: Mapping[str, Mapping[str, float | None]],  # contact id -> score name -> value
    last: Mapping[str, Mapping[str, str]],  # destination -> contact id -> canonical value
    *,
    unsure: Mapping[str, set[str]] | None = None,  # destination -> contact ids in flight at a crash
    initial: set[str] | None = None,  # destinations with no confirmed state in the whole book (default: in ``last``)
    property_name: str,
    score_names: list[str],
    segment_names: list[str],
    push_scores: bool,
    esp_tags: bool,
    esp_segments: bool,
    tag_prefix: str,
    has_esp: bool,
) -> Plan:
    """Compute the diff for every destination. Consent and ESP status gate what is desired.

    A record left in flight by a crash is re-sent whatever its value: the vendor may hold either the
    old or the new state, and only sending the wanted state (idempotently) makes it certain.

    ``people`` may be one chunk of the book, with ``last`` and ``unsure`` for those people only: then
    ``initial`` must say which destinations have no state for anyone (one chunk cannot tell).
    """
    unsure = unsure or {}
    plan = Plan(tenant_id, segment_property=property_name)
    people = list(people)
    plan.total_contacts = len(people)
    dests = (
        [CRM]
        + ([TAGS] if has_esp and esp_tags else [])
        + ([SEGMENT + s for s in segment_names] if has_esp and esp_segments else [])
    )
    plan.initial = {d for d in dests if not last.get(d)} if initial is None else {d for d in dests if d in initial}
    for d in dests:
        plan.changes[d] = []

    def add(dest: str, p: Person, vendor_key: str | None, desired: Any) -> None:
        prev_text = last.get(dest, {}).get(p.contact_id)
        previous = json.loads(prev_text) if prev_text is not None else None
        in_flight = p.contact_id in unsure.get(dest, ())
        if in_flight or (None if desired in ([], {}, None) else canonical(desired)) != prev_text:
            plan.changes[dest].append(Change(dest, p.contact_id, p.email, vendor_key, desired, previous, in_flight))

    for p in people:
        segs = segments_of.get(p.contact_id, set()) if p.profiling else set()
        # --- CRM: profiling decides; a refused contact gets our properties cleared
        if p.crm_id:
            if p.profiling:
                desired = crm_desired(segs, scores_of.get(p.contact_id, {}), property_name, score_names, push_scores)
                # Nothing of ours to show (no segment, no score): same as "no state", so no write.
                add(CRM, p, p.crm_id, desired if any(desired.values()) else None)
            else:
                if p.contact_id in last.get(CRM, {}):
                    add(CRM, p, p.crm_id, None)
                plan.suppressed.append((CRM, p.contact_id, p.reason or "profiling not allowed"))
        if not has_esp:
            continue
        esp_dests = ([TAGS] if esp_tags else []) + ([SEGMENT + s for s in segment_names] if esp_segments else [])
        # --- ESP: we never touch a member without email consent, nor one the ESP has unsubscribed/cleaned.
        if not p.email_marketing or p.esp_status in ("unsubscribed", "cleaned"):
            reason = p.reason or "email_marketing not allowed"
            if p.esp_status in ("unsubscribed", "cleaned"):
                reason = f"{p.esp_status} at the ESP"
            for d in esp_dests:
                if p.contact_id in last.get(d, {}):
                    plan.forget.append((d, p.contact_id))
            if p.esp_id or p.email:
                plan.suppressed.append(("esp", p.contact_id, reason))
            continue
        if not p.esp_id:
            if segs:
                plan.suppressed.append(("esp", p.contact_id, "not in the ESP audience"))
            continue
        esp_key = p.esp_email or p.email
        if esp_tags:
            add(TAGS, p, esp_key, sorted(tag_prefix + s for s in segs))
        if esp_segments:
            for s in segment_names:
                add(SEGMENT + s, p, esp_key, True if s in segs else None)
    return plan

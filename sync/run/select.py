"""A partial push (``sync --select segment:NAME``): only the changes that concern the selected segments.

The plan is cut down, not recomputed: the static segment destinations of other segments are left out,
and in the CRM property and the ESP tags a contact's other segments stay at what the vendor last
confirmed (scores too), so the next full run still sees - and sends - the rest. Clearing for consent
(``desired`` None) is never held back by a selection: an opt-out does not wait for anyone's choice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.errors import ConfigError
from sync.run.plan import CRM, SEGMENT, TAGS, Change, Plan


def parse_select(values: Iterable[str], known: Iterable[str]) -> tuple[str, ...]:
    """``segment:NAME`` selectors -> segment names; an unknown kind or segment is a usage error naming known ones."""
    from sync.config.validate import suggest

    names = list(known)
    out: list[str] = []
    for value in values:
        kind, _, name = value.partition(":")
        if kind != "segment" or not name:
            raise ConfigError(f"--select {value}: use segment:NAME (segments: {', '.join(names) or 'none'})")
        if name not in names:
            hint = suggest(name, names) or f" (segments: {', '.join(names)})"
            raise ConfigError(f"--select {value}: no segment {name!r}{hint}")
        out.append(name)
    return tuple(out)


def _split(value: Any) -> set[str]:
    return {s for s in str(value or "").split(";") if s}


def select_plan(plan: Plan, segments: Iterable[str], tag_prefix: str) -> Plan:
    """The part of ``plan`` that moves contacts into or out of ``segments`` (see the module docstring)."""
    names = set(segments)
    out = Plan(
        plan.tenant_id,
        suppressed=plan.suppressed,
        total_contacts=plan.total_contacts,
        initial=plan.initial,
        segment_property=plan.segment_property,
    )
    out.forget = [(d, c) for d, c in plan.forget if d == TAGS or d.removeprefix(SEGMENT) in names]
    for dest, changes in plan.changes.items():
        if dest.startswith(SEGMENT):
            if dest.removeprefix(SEGMENT) in names:
                out.changes[dest] = list(changes)
            continue
        kept: list[Change] = []
        for c in changes:
            if c.desired is None:
                kept.append(c)  # consent clearing: always whole
            elif dest == CRM:
                kept += _crm_part(c, names, plan.segment_property)
            elif dest == TAGS:
                kept += _tags_part(c, {tag_prefix + n for n in names})
        out.changes[dest] = kept
    return out


def _crm_part(c: Change, names: set[str], prop: str) -> list[Change]:
    before, after = _split((c.previous or {}).get(prop)), _split(c.desired.get(prop))
    if not (before ^ after) & names:
        return []
    desired = dict(c.previous or {})
    desired[prop] = ";".join(sorted((before - names) | (after & names)))
    return [Change(c.destination, c.contact_id, c.email, c.vendor_key, desired, c.previous)]


def _tags_part(c: Change, tags: set[str]) -> list[Change]:
    before, after = set(c.previous or []), set(c.desired or [])
    if not (before ^ after) & tags:
        return []
    desired = sorted((before - tags) | (after & tags))
    return [Change(c.destination, c.contact_id, c.email, c.vendor_key, desired or None, c.previous)]

"""Plan changes as a person checks them: who (masked email, the vendor's own record id), where, and what, in words.

Used for the dry-run examples in the run report and for ``sync --plan-out FILE.csv`` (the whole plan).
A masked email keeps the first letter and the domain: enough to recognise a person in the CRM or ESP
next to the record id, not enough to leak an address from a report that gets pasted around.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sync.run.plan import CRM, SEGMENT, TAGS, Change

SCORE_PREFIX = "segsync_score_"
PLAN_COLUMNS = [
    "tenant",
    "destination",
    "action",
    "contact_id",
    "email",
    "vendor_id",
    "joined",
    "left",
    "scores",
    "from",
    "to",
]


def mask_email(email: str | None) -> str:
    """``jane.doe@example.com`` -> ``j***@example.com`` (``-`` when there is none)."""
    if not email or "@" not in email:
        return "-"
    local, domain = email.rsplit("@", 1)
    return f"{local[:1]}***@{domain}"


def _segments(value: Any, dest: str, prop: str, tag_prefix: str) -> set[str]:
    if value is None:
        return set()
    if dest == CRM:
        return {s for s in str(value.get(prop) or "").split(";") if s}
    if dest == TAGS:
        return {str(t).removeprefix(tag_prefix) for t in value}
    return {dest.removeprefix(SEGMENT)} if value is True else set()


def _scores(previous: Any, desired: Any) -> list[str]:
    before = {k.removeprefix(SCORE_PREFIX): v for k, v in (previous or {}).items() if k.startswith(SCORE_PREFIX)}
    after = {k.removeprefix(SCORE_PREFIX): v for k, v in (desired or {}).items() if k.startswith(SCORE_PREFIX)}
    words = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name) or None, after.get(name) or None
        if old == new:
            continue
        if old is None:
            words.append(f"{name} set to {new}")
        elif new is None:
            words.append(f"{name} cleared (was {old})")
        else:
            words.append(f"{name} {old} -> {new}")
    return words


def describe_change(c: Change, vendor_id: str | None, *, segment_property: str, tag_prefix: str) -> dict[str, Any]:
    """One change as words and ids (the keys of :data:`PLAN_COLUMNS` but ``tenant``)."""
    before = _segments(c.previous, c.destination, segment_property, tag_prefix)
    after = _segments(c.desired, c.destination, segment_property, tag_prefix)
    action = "add" if c.previous is None else "remove" if c.desired is None else "update"
    scores = _scores(c.previous, c.desired) if c.destination == CRM else []
    return {
        "destination": c.destination,
        "action": action,
        "contact_id": c.contact_id,
        "email": mask_email(c.email),
        "vendor_id": vendor_id or "-",
        "joined": ", ".join(sorted(after - before)),
        "left": ", ".join(sorted(before - after)),
        "scores": "; ".join(scores),
        "from": _plain(c.previous),
        "to": _plain(c.desired),
    }


def in_words(row: Mapping[str, Any]) -> str:
    """``joined churn_watch; churn_risk 0.42 -> 0.61`` - what a described change does."""
    parts = []
    if row.get("joined"):
        parts.append(f"joined {row['joined']}")
    if row.get("left"):
        parts.append(f"left {row['left']}")
    if row.get("scores"):
        parts.append(str(row["scores"]))
    if not parts:
        parts.append("cleared (consent)" if row.get("action") == "remove" else "no segment change")
    return "; ".join(parts)


def _plain(value: Any) -> str:
    """A value as a person reads it: ``a=1; b=2`` for properties, ``x, y`` for tags, ``member`` / ``-``."""
    if value is None:
        return "-"
    if value is True:
        return "member"
    if isinstance(value, dict):
        return "; ".join(f"{k}={v}" for k, v in sorted(value.items()) if v not in ("", None)) or "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def write_plan_csv(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write plan rows (with their ``tenant``) to ``path`` as CSV; returns how many were written."""
    n = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=PLAN_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            n += 1
    return n

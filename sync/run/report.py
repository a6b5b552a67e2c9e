"""The run report, typed: what one tenant's run did, section by section.

The pipeline fills a :class:`RunReport`; the store keeps ``to_dict()`` (the same JSON ``--json`` prints);
the renderer, ``/metrics`` and ``segsync runs`` read it back with :meth:`RunReport.from_dict`, so a
section that a run never reached (a dry run has no push, a refused plan no sends) is an empty value
of the right type instead of a missing key to dig around.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DrainSummary:
    """One pass over the opt-out outbox (before or after the push)."""

    done: int = 0
    retrying: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    depth: int = 0  # still queued afterwards

    @property
    def eventful(self) -> bool:
        """Whether there is anything to say about it."""
        return bool(self.done or self.failed or self.retrying or self.depth)


@dataclass
class PushSummary:
    """What the push did, per destination and in total; failures keep the vendor's message."""

    by_destination: dict[str, dict[str, int]] = field(default_factory=dict)  # destination -> outcome -> n
    totals: dict[str, int] = field(default_factory=dict)  # outcome -> n
    failures: list[dict[str, str]] = field(default_factory=list)  # the first 50: destination, contact_id, message
    failures_total: int = 0
    batches: dict[str, int] = field(default_factory=dict)
    stopped: bool = False


@dataclass
class ScoringSummary:
    """The scores of the run: models trained or reused, honest "insufficient data" verdicts, the holdout."""

    scored: int = 0
    as_of: str = ""
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    insufficient: dict[str, str] = field(default_factory=dict)
    holdout_percent: float = 0
    holdout_contacts: int = 0
    warnings: list[str] = field(default_factory=list)  # empty segments and why, contacts that cannot be scored
    fairness: dict[str, Any] = field(default_factory=dict)  # pushed segment -> attribute -> rates, ratio, verdict
    reused: str = ""  # why the last scoring's scores and segments were reused (empty: computed this run)
    changed_inputs: list[str] = field(default_factory=list)  # what made this run score in full (config, events, ...)


_SECTIONS: dict[str, Any] = {"push": PushSummary, "scoring": ScoringSummary, "outbox_before": DrainSummary,
                             "outbox_after": DrainSummary}


@dataclass
class RunReport:
    """One tenant's run. ``None`` / empty sections were not reached; ``extra`` keeps keys added by callers."""

    tenant: str
    status: str = "?"
    dry_run: bool = False
    run_id: int | None = None
    started_at: str | None = None
    duration_s: float | None = None
    error: str | None = None
    refused: str | None = None
    pull: dict[str, dict[str, int]] = field(default_factory=dict)  # stream -> pages, records, new, changed, events
    consent: dict[str, int] = field(default_factory=dict)  # signals seen, recorded, withdrawals, propagations queued
    contacts: dict[str, int] = field(default_factory=dict)  # total, in_crm, in_esp, profiling/email allowed
    scoring: ScoringSummary | None = None
    segments: dict[str, dict[str, Any]] = field(default_factory=dict)  # segment -> members, holdout, threshold
    plan: dict[str, Any] = field(default_factory=dict)  # Plan.summary() + change share, cost, examples
    push: PushSummary | None = None
    outbox_before: DrainSummary | None = None
    outbox_after: DrainSummary | None = None
    api: dict[str, dict[str, Any]] = field(default_factory=dict)  # crm/esp -> the connector's call stats
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The stored / ``--json`` form: only what the run reached, sections as plain dicts."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra":
                out.update(value)
            elif f.name in ("tenant", "dry_run", "status"):
                out[f.name] = value
            elif value is not None and not (f.name in ("pull", "consent", "contacts", "plan", "api") and not value):
                out[f.name] = (
                    dataclasses.asdict(value)
                    if dataclasses.is_dataclass(value) and not isinstance(value, type) else value
                )
        for key in ("reused", "changed_inputs"):  # only said when it happened: older reports round-trip unchanged
            if "scoring" in out and not out["scoring"].get(key):
                del out["scoring"][key]
        if "segments" in out and "scoring" not in out:
            del out["segments"]  # segments are reported with the scores they come from
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        """Read a stored or returned report back (missing sections become empty ones; unknown keys go to ``extra``)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {"tenant": str(data.get("tenant", "?"))}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key not in names:
                extra[key] = value
            elif key in _SECTIONS and isinstance(value, dict):
                known = {f.name for f in dataclasses.fields(_SECTIONS[key])}
                kwargs[key] = _SECTIONS[key](**{k: v for k, v in value.items() if k in known})
            elif key != "tenant" and value is not None:
                kwargs[key] = value
        return cls(**kwargs, extra=extra)

"""Readable run reports (rich tables) from a :class:`~sync.run.report.RunReport`. ``--json`` prints its dict form."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from sync.run.report import RunReport

STATUS_STYLE = {
    "ok": "green",
    "dry_run": "cyan",
    "failed_records": "yellow",
    "refused": "red",
    "error": "red",
    "stopped": "yellow",
}


def _table(title: str, columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, title_style="bold", pad_edge=False)
    for i, c in enumerate(columns):
        # Fold, never ellipsize: two destinations cut to "esp.segm…" would read the same.
        table.add_column(c, justify="left" if i == 0 else "right", overflow="fold")
    return table


def outcome_counts(run: RunReport) -> dict[str, int]:
    """Sent, suppressed and failed records of a run, counted the way its report lists them.

    Suppressed = what the plan left out for consent or ESP status ("Not sent, by reason") plus what the
    re-check right before a batch held back; ``runs``, the summary table and the report agree.
    """
    totals = run.push.totals if run.push else {}
    planned = sum(int(n) for n in (run.plan.get("suppressed") or {}).values())
    return {
        "sent": int(totals.get("sent", 0)),
        "suppressed": planned + int(totals.get("suppressed", 0)),
        "failed": int(totals.get("failed", 0)),
    }


def _n(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def render_run(report: RunReport | Mapping[str, Any]) -> Panel:
    """One run's report as a panel: what was pulled, consent, scores, segments, plan and push, failures, API calls."""
    run = report if isinstance(report, RunReport) else RunReport.from_dict(dict(report))
    parts: list[Any] = []
    for section in (_head, _pulled, _contacts, _scores, _plan, _failures, _outbox, _api):
        parts += section(run)
    return Panel(Group(*parts), border_style=STATUS_STYLE.get(run.status, "white"), expand=False)


def _head(run: RunReport) -> list[Any]:
    parts: list[Any] = [
        Text.assemble(
            (f"{run.tenant}", "bold"),
            f"  run #{run.run_id}  " if run.run_id is not None else "  (not started)  ",
            (run.status, STATUS_STYLE.get(run.status, "white")),
            f"  {run.duration_s or 0} s",
            "  (dry run: nothing sent)" if run.dry_run else "",
            f"  started {local_time(run.started_at, run.extra.get('timezone'))}" if run.started_at else "",
        )
    ]
    if run.error:
        parts.append(Text(f"error: {run.error}", style="red"))
    if run.refused:
        parts.append(Text(f"refused: {run.refused}", style="red"))
    return parts


def _pulled(run: RunReport) -> list[Any]:
    if not run.pull:
        return []
    t = _table("Pulled", ["stream", "pages", "records", "new", "changed", "events"])
    for stream, s in run.pull.items():
        t.add_row(stream, *(_n(s.get(k, 0)) for k in ("pages", "records", "new", "changed", "events")))
    return [t]


def _contacts(run: RunReport) -> list[Any]:
    if not run.contacts:
        return []
    t = _table("Contacts and consent", ["", "count"])
    labels = {
        "total": "contacts known",
        "in_crm": "in the CRM",
        "in_esp": "in the ESP audience",
        "profiling_allowed": "may be profiled (scored, tagged)",
        "email_marketing_allowed": "may be emailed (ESP tags, segments)",
    }
    for k, label in labels.items():
        if k in run.contacts:
            t.add_row(label, _n(run.contacts[k]))
    for k, label in (
        ("withdrawals_recorded", "opt-outs seen at vendors (new)"),
        ("propagations_queued", "opt-out propagations queued"),
        ("withdrawals_already_held", "of those opt-outs, the person had already opted out (not propagated again)"),
    ):
        if run.consent.get(k):
            t.add_row(label, _n(run.consent[k]))
    return [t]


def _scores(run: RunReport) -> list[Any]:
    parts: list[Any] = []
    scoring = run.scoring
    if scoring is not None:
        t = _table(
            f"Scores (as of {scoring.as_of or '-'}; {scoring.scored:,} contacts scored)", ["score", "model", "note"]
        )
        for name, m in scoring.models.items():
            if name in scoring.insufficient:
                continue
            metrics = m.get("metrics") or {}
            auc, base = metrics.get("backtest_roc_auc"), metrics.get("baseline_roc_auc")
            note = (
                f"out-of-sample ROC AUC {auc:.3f} (naive baseline {base:.3f})"
                if isinstance(auc, float) and isinstance(base, float)
                else ""
            )
            t.add_row(name, "reused" if m.get("reused") else "trained", note)
        for name, verdict in scoring.insufficient.items():
            t.add_row(name, "not used", verdict)
        parts.append(t)
        if scoring.reused:
            parts.append(Text(scoring.reused.capitalize()))
    if run.segments:
        held = scoring.holdout_percent if scoring else 0
        t = _table(
            f"Segments (holdout {held}%: kept out of every push)", ["segment", "members", "holdout", "threshold"]
        )
        for name, s in run.segments.items():
            t.add_row(name, _n(s.get("members")), _n(s.get("holdout")), _n(s.get("threshold")))
        parts.append(t)
    # Why a segment is empty, who could not be scored, four-fifths breaches: shown, never silent.
    parts += [Text(f"warning: {w}", style="yellow") for w in (scoring.warnings if scoring else [])]
    return parts


def _plan(run: RunReport) -> list[Any]:
    plan = run.plan
    if not plan:
        return []
    push = run.push.by_destination if run.push else {}
    planned: dict[str, dict[str, int]] = plan.get("destinations") or {}
    cost: dict[str, dict[str, Any]] = plan.get("cost") or {}
    t = _table(
        f"Plan and push (changes vs. last confirmed state; change share {plan.get('change_share', 0):.1%})",
        ["destination", "adds", "removes", "updates", "calls", "sent", "suppressed", "failed"],
    )
    for dest in sorted(set(planned) | set(push)):
        p, o = planned.get(dest, {}), push.get(dest, {})
        t.add_row(
            dest,
            _n(p.get("adds", 0)),
            _n(p.get("removes", 0)),
            _n(p.get("updates", 0)),
            _n(cost.get(dest, {}).get("calls", 0)),
            _n(o.get("sent", 0)),
            _n(o.get("suppressed", 0)),
            _n(o.get("failed", 0)),
        )
    parts: list[Any] = [t]
    reasons = plan.get("suppressed") or {}
    if reasons:
        t = _table("Not sent, by reason", ["reason", "contacts"])
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:8]:
            t.add_row(reason, _n(n))
        parts.append(t)
    if run.dry_run and plan.get("examples"):
        parts.append(_examples(plan["examples"]))
    return parts


def _examples(examples: Mapping[str, list[dict[str, Any]]]) -> Table:
    """A few changes per destination, as a person would look them up: masked email, the vendor's record id, words."""
    from sync.run.plan_text import in_words

    t = _table("Examples (look them up by the vendor's record id)", ["destination", "email", "vendor id", "change"])
    t.columns[-1].justify = "left"
    for dest, rows in examples.items():
        for r in rows[:3]:
            if "email" in r:
                t.add_row(dest, r["email"], str(r.get("vendor_id", "-")), in_words(r))
            else:  # a report stored before examples were described in words
                t.add_row(dest, str(r.get("contact", "-")), "-", f"{_short(r.get('from'))} -> {_short(r.get('to'))}")
    return t


def _failures(run: RunReport) -> list[Any]:
    if run.push is None or not run.push.failures:
        return []
    t = _table(
        f"Failed records ({run.push.failures_total}; retried next run)", ["destination", "contact", "vendor's message"]
    )
    for f in run.push.failures[:10]:
        t.add_row(f["destination"], f["contact_id"], f["message"][:100])
    return [t]


def _outbox(run: RunReport) -> list[Any]:
    parts: list[Any] = []
    for o, title in (
        (run.outbox_before, "Opt-out propagation (before the run)"),
        (run.outbox_after, "Opt-out propagation (after the push)"),
    ):
        if o is not None and o.eventful:
            parts.append(
                Text(f"{title}: {o.done} confirmed, {o.retrying} retrying, {o.failed} failed, {o.depth} still queued")
            )
    return parts


def _api(run: RunReport) -> list[Any]:
    if not any(run.api.values()):
        return []
    t = _table("API calls", ["vendor", "endpoint", "calls"])
    for side, stats in run.api.items():
        calls = (stats or {}).get("calls") or {}
        for endpoint, n in sorted(calls.items()) if isinstance(calls, Mapping) else []:
            t.add_row(side, endpoint, _n(n))
        if stats:
            t.add_row(
                side,
                "[bold]total[/]",
                f"{_n(stats.get('total_calls', 0))}  "
                f"(429s {_n(stats.get('rate_limited', 0))}, retries {_n(stats.get('retries', 0))})",
            )
    return [t]


def _short(value: Any) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def print_runs(console: Console, reports: list[dict[str, Any]]) -> None:
    """Print each run's report panel, then (for more than one firm) one summary table of them all."""
    for r in reports:
        console.print(render_run(r))
    if len(reports) > 1:
        console.print(summary_table(reports))


def summary_table(reports: Sequence[Mapping[str, Any]]) -> Table:
    """One line per firm: status, changes planned, sent/suppressed/failed, duration and the error, if any."""
    runs = [RunReport.from_dict(dict(r)) for r in reports]
    bad = sum(1 for r in runs if r.status in ("error", "refused", "failed_records", "stopped", "skipped"))
    t = _table(
        f"Summary: {len(runs)} firms, {len(runs) - bad} ok" + (f", {bad} need attention" if bad else ""),
        ["firm", "status", "changes", "sent", "suppressed", "failed", "seconds", "error"],
    )
    t.columns[-1].justify = "left"
    for run in runs:
        counts = outcome_counts(run)
        changes = run.plan.get("total_changes") if run.plan else None
        t.add_row(
            run.tenant,
            Text(run.status, style=STATUS_STYLE.get(run.status, "white")),
            _n(changes),
            _n(counts["sent"]),
            _n(counts["suppressed"]),
            _n(counts["failed"]),
            _n(run.duration_s),
            Text(run.error or run.refused or ""),
        )
    return t


def local_time(value: Any, zone: str | None) -> str:
    """A stored time in the tenant's zone, with the zone named (``2026-12-01 08:00:05 America/New_York``)."""
    if value in (None, ""):
        return "-"
    try:
        when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # the store writes UTC; SQLite drops the offset
    name = zone or "UTC"
    try:
        tz: tzinfo = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        tz, name = UTC, "UTC"
    return f"{when.astimezone(tz):%Y-%m-%d %H:%M:%S} {name}"


def runs_table(rows: Sequence[Mapping[str, Any]], zones: Mapping[str, str] | None = None) -> Table:
    """The run log, one line per run (``segsync runs``), times in each tenant's own zone."""
    zones = zones or {}
    t = _table("Runs", ["run", "tenant", "started", "status", "pulled", "sent", "suppressed", "failed", "seconds"])
    for r in rows:
        rep = RunReport.from_dict(r.get("report") or {})
        pulled = sum((s or {}).get("records", 0) for s in rep.pull.values())
        totals = outcome_counts(rep)
        t.add_row(
            str(r["id"]),
            r["tenant_id"],
            local_time(r["started_at"], zones.get(r["tenant_id"])),
            r["status"] + (" (dry)" if r.get("dry_run") else ""),
            _n(pulled),
            _n(totals.get("sent", 0)),
            _n(totals.get("suppressed", 0)),
            _n(totals.get("failed", 0)),
            _n(rep.duration_s),
        )
    return t

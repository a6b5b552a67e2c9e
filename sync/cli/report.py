"""Readable run reports (rich tables) from a :class:`~sync.run.report.RunReport`. ``--json`` prints its dict form."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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
        table.add_column(c, justify="left" if i == 0 else "right")
    return table


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
    parts: list[Any] = [Text.assemble(
        (f"{run.tenant}", "bold"), f"  run #{run.run_id}  ",
        (run.status, STATUS_STYLE.get(run.status, "white")), f"  {run.duration_s or 0} s",
        "  (dry run: nothing sent)" if run.dry_run else "",
    )]
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
    if run.segments:
        held = scoring.holdout_percent if scoring else 0
        t = _table(
            f"Segments (holdout {held}%: kept out of every push)", ["segment", "members", "holdout", "threshold"]
        )
        for name, s in run.segments.items():
            t.add_row(name, _n(s.get("members")), _n(s.get("holdout")), _n(s.get("threshold")))
        parts.append(t)
    return parts


def _plan(run: RunReport) -> list[Any]:
    plan = run.plan
    if not plan:
        return []
    push = run.push.by_destination if run.push else {}
    planned: dict[str, dict[str, int]] = plan.get("destinations") or {}
    cost: dict[str, dict[str, Any]] = plan.get("cost") or {}
    t = _table(f"Plan and push (changes vs. last confirmed state; change share {plan.get('change_share', 0):.1%})",
               ["destination", "adds", "removes", "updates", "calls", "sent", "suppressed", "failed"])
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
        t = _table("Examples", ["destination", "contact", "from", "to"])
        for dest, rows in plan["examples"].items():
            for r in rows[:3]:
                t.add_row(dest, r["contact"], _short(r["from"]), _short(r["to"]))
        parts.append(t)
    return parts


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
                f"{_n(stats.get('total_calls', 0))}  (429s {_n(stats.get('rate_limited', 0))}, "
                f"retries {_n(stats.get('retries', 0))})",
            )
    return [t]


def _short(value: Any) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def print_runs(console: Console, reports: list[dict[str, Any]]) -> None:
    """Print each run's report panel."""
    for r in reports:
        console.print(render_run(r))


def runs_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """The run log, one line per run (``segsync runs``)."""
    t = _table("Runs", ["run", "tenant", "started", "status", "pulled", "sent", "suppressed", "failed", "seconds"])
    for r in rows:
        rep = RunReport.from_dict(r.get("report") or {})
        pulled = sum((s or {}).get("records", 0) for s in rep.pull.values())
        totals = rep.push.totals if rep.push else {}
        t.add_row(
            str(r["id"]),
            r["tenant_id"],
            str(r["started_at"])[:19],
            r["status"] + (" (dry)" if r.get("dry_run") else ""),
            _n(pulled),
            _n(totals.get("sent", 0)),
            _n(totals.get("suppressed", 0)),
            _n(totals.get("failed", 0)),
            _n(rep.duration_s),
        )
    return t

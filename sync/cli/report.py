"""Readable run reports (rich tables) from the report dict a run stores. ``--json`` prints the dict itself."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

STATUS_STYLE = {"ok": "green", "dry_run": "cyan", "failed_records": "yellow", "refused": "red", "error": "red", "stopped": "yellow"}


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


def render_run(report: Mapping[str, Any]) -> Panel:
    """One run's report as a panel: what was pulled, consent, scores, segments, plan and push, failures, API calls."""
    status = report.get("status", "?")
    parts: list[Any] = []
    for section in (_head, _pulled, _contacts, _scores, _plan, _failures, _outbox, _api):
        parts += section(report)
    return Panel(Group(*parts), border_style=STATUS_STYLE.get(status, "white"), expand=False)


def _head(report: Mapping[str, Any]) -> list[Any]:
    status = report.get("status", "?")
    parts: list[Any] = [Text.assemble(
        (f"{report.get('tenant')}", "bold"), f"  run #{report.get('run_id')}  ",
        (status, STATUS_STYLE.get(status, "white")), f"  {report.get('duration_s', 0)} s",
        "  (dry run: nothing sent)" if report.get("dry_run") else "",
    )]
    if report.get("error"):
        parts.append(Text(f"error: {report['error']}", style="red"))
    if report.get("refused"):
        parts.append(Text(f"refused: {report['refused']}", style="red"))
    return parts


def _pulled(report: Mapping[str, Any]) -> list[Any]:
    pull = report.get("pull") or {}
    if not pull:
        return []
    t = _table("Pulled", ["stream", "pages", "records", "new", "changed", "events"])
    for stream, s in pull.items():
        t.add_row(stream, *(_n(s.get(k, 0)) for k in ("pages", "records", "new", "changed", "events")))
    return [t]


def _contacts(report: Mapping[str, Any]) -> list[Any]:
    contacts = report.get("contacts") or {}
    consent = report.get("consent") or {}
    if not contacts:
        return []
    t = _table("Contacts and consent", ["", "count"])
    labels = {
        "total": "contacts known", "in_crm": "in the CRM", "in_esp": "in the ESP audience",
        "profiling_allowed": "may be profiled (scored, tagged)", "email_marketing_allowed": "may be emailed (ESP tags, segments)",
    }
    for k, label in labels.items():
        if k in contacts:
            t.add_row(label, _n(contacts[k]))
    for k, label in (("withdrawals_recorded", "opt-outs seen at vendors (new)"), ("propagations_queued", "opt-out propagations queued")):
        if consent.get(k):
            t.add_row(label, _n(consent[k]))
    return [t]


def _scores(report: Mapping[str, Any]) -> list[Any]:
    parts: list[Any] = []
    scoring = report.get("scoring") or {}
    if scoring:
        t = _table(f"Scores (as of {scoring.get('as_of') or '-'}; {scoring.get('scored', 0):,} contacts scored)", ["score", "model", "note"])
        for name, m in (scoring.get("models") or {}).items():
            metrics = m.get("metrics") or {}
            if name in (scoring.get("insufficient") or {}):
                continue
            auc, base = metrics.get("backtest_roc_auc"), metrics.get("baseline_roc_auc")
            note = f"out-of-sample ROC AUC {auc:.3f} (naive baseline {base:.3f})" if isinstance(auc, float) and isinstance(base, float) else ""
            t.add_row(name, "reused" if m.get("reused") else "trained", note)
        for name, verdict in (scoring.get("insufficient") or {}).items():
            t.add_row(name, "not used", verdict)
        parts.append(t)
    segments = report.get("segments") or {}
    if segments:
        t = _table(f"Segments (holdout {scoring.get('holdout_percent', 0)}%: kept out of every push)", ["segment", "members", "holdout", "threshold"])
        for name, s in segments.items():
            t.add_row(name, _n(s.get("members")), _n(s.get("holdout")), _n(s.get("threshold")))
        parts.append(t)
    return parts


def _plan(report: Mapping[str, Any]) -> list[Any]:
    plan = report.get("plan") or {}
    if not plan:
        return []
    push = (report.get("push") or {}).get("by_destination") or {}
    t = _table(f"Plan and push (changes vs. last confirmed state; change share {plan.get('change_share', 0):.1%})",
               ["destination", "adds", "removes", "updates", "calls", "sent", "suppressed", "failed"])
    dests = set(plan.get("destinations") or {}) | set(push)
    for dest in sorted(dests):
        p = (plan.get("destinations") or {}).get(dest, {})
        cost = (plan.get("cost") or {}).get(dest, {})
        o = push.get(dest, {})
        t.add_row(dest, _n(p.get("adds", 0)), _n(p.get("removes", 0)), _n(p.get("updates", 0)), _n(cost.get("calls", 0)),
                  _n(o.get("sent", 0)), _n(o.get("suppressed", 0)), _n(o.get("failed", 0)))
    parts: list[Any] = [t]
    reasons = plan.get("suppressed") or {}
    if reasons:
        t = _table("Not sent, by reason", ["reason", "contacts"])
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:8]:
            t.add_row(reason, _n(n))
        parts.append(t)
    if report.get("dry_run") and plan.get("examples"):
        t = _table("Examples", ["destination", "contact", "from", "to"])
        for dest, rows in plan["examples"].items():
            for r in rows[:3]:
                t.add_row(dest, r["contact"], _short(r["from"]), _short(r["to"]))
        parts.append(t)
    return parts


def _failures(report: Mapping[str, Any]) -> list[Any]:
    failures = (report.get("push") or {}).get("failures") or []
    if not failures:
        return []
    t = _table(f"Failed records ({(report.get('push') or {}).get('failures_total', len(failures))}; retried next run)", ["destination", "contact", "vendor's message"])
    for f in failures[:10]:
        t.add_row(f["destination"], f["contact_id"], f["message"][:100])
    return [t]


def _outbox(report: Mapping[str, Any]) -> list[Any]:
    parts: list[Any] = []
    for key, title in (("outbox_before", "Opt-out propagation (before the run)"), ("outbox_after", "Opt-out propagation (after the push)")):
        o = report.get(key) or {}
        if o and (o.get("done") or o.get("failed") or o.get("retrying") or o.get("depth")):
            parts.append(Text(f"{title}: {o.get('done', 0)} confirmed, {o.get('retrying', 0)} retrying, "
                              f"{o.get('failed', 0)} failed, {o.get('depth', 0)} still queued"))
    return parts


def _api(report: Mapping[str, Any]) -> list[Any]:
    api = report.get("api") or {}
    if not any(api.values()):
        return []
    t = _table("API calls", ["vendor", "endpoint", "calls"])
    for side, stats in api.items():
        calls = (stats or {}).get("calls") or {}
        for endpoint, n in sorted(calls.items()) if isinstance(calls, Mapping) else []:
            t.add_row(side, endpoint, _n(n))
        if stats:
            t.add_row(side, "[bold]total[/]", f"{_n(stats.get('total_calls', 0))}  (429s {_n(stats.get('rate_limited', 0))}, retries {_n(stats.get('retries', 0))})")
    return [t]


def _short(value: Any) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def print_runs(console: Console, reports: list[Mapping[str, Any]]) -> None:
    """Print each run's report panel."""
    for r in reports:
        console.print(render_run(r))


def runs_table(rows: list[Mapping[str, Any]]) -> Table:
    """The run log, one line per run (``segsync runs``)."""
    t = _table("Runs", ["run", "tenant", "started", "status", "pulled", "sent", "suppressed", "failed", "seconds"])
    for r in rows:
        rep = r.get("report") or {}
        pulled = sum((s or {}).get("records", 0) for s in (rep.get("pull") or {}).values())
        totals = (rep.get("push") or {}).get("totals") or {}
        t.add_row(str(r["id"]), r["tenant_id"], str(r["started_at"])[:19], r["status"] + (" (dry)" if r.get("dry_run") else ""),
                  _n(pulled), _n(totals.get("sent", 0)), _n(totals.get("suppressed", 0)), _n(totals.get("failed", 0)), _n(rep.get("duration_s")))
    return t

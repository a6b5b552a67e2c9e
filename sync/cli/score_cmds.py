"""``segsync score`` (backtest + model cards) and ``segsync report lift`` (segment vs holdout)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.table import Table

from sync.cli.common import CONFIG_ARG, console, emit_json, open_config, select_tenants

if TYPE_CHECKING:  # annotations only: the CLI starts without loading the store or the config models
    from sync.config.models import TenantCfg
    from sync.store.interface import Store


def _allowed(store: Store, tenant: TenantCfg) -> set[str]:
    """Profiling-allowed contact ids: the same gate the sync applies (consent is checked here too)."""
    from sync.run.gate import ConsentGate

    verdicts = ConsentGate(store, tenant, None, None).decide_people(store.addresses(tenant.id))
    return {c["contact_id"] for c in store.contacts(tenant.id) if verdicts.get(c["contact_id"], (False,))[0]}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


@click.command("score")
@CONFIG_ARG
@click.option("--tenant", "tenant_ids", multiple=True, metavar="ID", help="Only this tenant (repeatable).")
@click.option("--backtest", is_flag=True, default=True, help="Evaluate every score out of sample (the default).")
@click.option(
    "--cutoff", default=None, metavar="DATE", help="Test cutoff (default: one horizon before the newest event)."
)
@click.option(
    "--report", "write_cards", is_flag=True, help="Also write a model card (markdown, JSON and HTML) per score."
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where model cards go (default: <model_dir>/<tenant>/<score>/).")
@click.option("--json", "as_json", is_flag=True, help="Print the backtest results as JSON.")
def score_cmd(config: Path, tenant_ids: tuple[str, ...], backtest: bool, cutoff: str | None, write_cards: bool,
              out_dir: Path | None, as_json: bool) -> None:
    """Backtest each configured score on the stored data and show how good it is against a naive baseline.

    Run `segsync sync` first so the store holds contacts and events. Scores that cannot be
    evaluated honestly say "insufficient data" instead of a number.
    """
    from scoring.backtest import backtest as run_backtest
    from scoring.card import model_card, render_model_card
    from sync.pages.cards import write_card_html
    from sync.pages.status_data import stored_scores
    from sync.run.scorer import frames, score_spec

    cfg, store = open_config(config)
    results: list[dict[str, Any]] = []
    try:
        for tenant in select_tenants(cfg, tenant_ids):
            contacts, events = frames(store, tenant, _allowed(store, tenant))
            for sc in tenant.scores:
                spec = score_spec(sc, tenant)
                report = run_backtest(spec, contacts, events if not events.empty else None, cutoff=cutoff)
                card = model_card(report)
                results.append({"tenant": tenant.id, **card})
                if write_cards:
                    folder = (out_dir / tenant.id / sc.name) if out_dir else (cfg.model_dir / tenant.id / sc.name)
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / "card.json").write_text(json.dumps(card, indent=2, default=str))
                    (folder / "card.md").write_text(render_model_card(card))
                    write_card_html(folder, card, firm=tenant.name or tenant.id, colour=tenant.pages.colour,
                                    scores=stored_scores(store, tenant.id, sc.name))
                    results[-1]["card_path"] = str(folder / "card.md")
    finally:
        store.close()
    if as_json:
        emit_json(results)
        return
    table = Table(title="Backtest (out of sample) vs naive baseline", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("tenant", "score", "method", "roc_auc", "pr_auc", "lift@10%", "brier", "baseline auc", "verdict"):
        table.add_column(col, no_wrap=col in ("tenant", "score"))
    for r in results:
        m, b = r.get("model") or {}, r.get("baseline") or {}
        verdict = r.get("verdict") or {}
        note = verdict.get("reason") or verdict.get("verdict") or "ok"
        if r["kind"] == "ltv":
            table.add_row(
                r["tenant"],
                r["score"],
                r.get("method", ""),
                "-",
                "-",
                "-",
                "-",
                "-",
                f"{note}; rmse tx {_fmt(m.get('rmse_transactions'))} (baseline {_fmt(b.get('rmse_transactions'))})",
            )
            continue
        if (
            note == "ok"
            and isinstance(m.get("roc_auc"), float)
            and isinstance(b.get("roc_auc"), float)
            and m["roc_auc"] <= b["roc_auc"]
        ):
            note = "no better than the baseline: do not act on it"
        table.add_row(r["tenant"], r["score"], r.get("method", ""), _fmt(m.get("roc_auc")), _fmt(m.get("pr_auc")),
                      _fmt(m.get("lift_top_decile")), _fmt(m.get("brier")), _fmt(b.get("roc_auc")), str(note)[:60])
    console.print(table)
    for r in results:
        if r.get("card_path"):
            console.print(f"model card: {r['card_path']}")


@click.group("report")
def report_group() -> None:
    """Reports over stored runs and segments."""


@report_group.command("lift")
@CONFIG_ARG
@click.option("--tenant", "tenant_ids", multiple=True, metavar="ID", help="Only this tenant (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def lift_cmd(config: Path, tenant_ids: tuple[str, ...], as_json: bool) -> None:
    """Outcome rate of each segment's members vs. its holdout since the segments were assigned.

    The outcome is the segment's score's outcome event (propensity) or, for churn, no activity;
    rates are counted from events pulled after the assignment, so run it after the campaign window.
    """
    import pandas as pd

    from scoring.segments import lift_report, render_lift_report

    cfg, store = open_config(config)
    out: dict[str, Any] = {}
    try:
        for tenant in select_tenants(cfg, tenant_ids):
            rows = store.segment_members(tenant.id)
            if not rows:
                out[tenant.id] = {}
                continue
            assigned = min(pd.Timestamp(r["assigned_at"]) for r in rows)
            assigned = assigned.tz_localize("UTC") if assigned.tzinfo is None else assigned
            events = pd.DataFrame(
                list(store.events(tenant.id)),
                columns=["contact_id", "type", "occurred_at", "value", "url", "session_id"],
            )
            events["occurred_at"] = pd.to_datetime(events["occurred_at"], utc=True)
            after = events[events["occurred_at"] >= assigned]
            scores = {s.name: s for s in tenant.scores}
            result: dict[str, Any] = {}
            now = pd.Timestamp.now(tz="UTC")
            for seg in tenant.segments:
                sc = scores[seg.score]
                window = pd.Timedelta(days=sc.inactive_days if sc.kind == "churn" else sc.horizon_days)
                if now < assigned + window:
                    # Outcomes are only known once the window has passed; a rate now would be noise.
                    result[seg.name] = {
                        "members": sum(1 for r in rows if r["segment"] == seg.name and not r["holdout"]),
                        "holdout": sum(1 for r in rows if r["segment"] == seg.name and r["holdout"]),
                        "window_open_until": (assigned + window).date().isoformat(),
                    }
                    continue
                members = [r["contact_id"] for r in rows if r["segment"] == seg.name and not r["holdout"]]
                held = [r["contact_id"] for r in rows if r["segment"] == seg.name and r["holdout"]]
                if sc.kind == "propensity" and sc.outcome and sc.outcome.event:
                    hit = set(after.loc[after["type"] == sc.outcome.event, "contact_id"])
                elif sc.kind == "churn":
                    active = set(after["contact_id"])
                    hit = {c for c in members + held if c not in active}
                else:
                    hit = set(after.loc[after["type"] == "deposit", "contact_id"])
                result.update(lift_report({seg.name: members}, {seg.name: held}, hit))
            out[tenant.id] = {"since": assigned.isoformat(), "segments": result}
    finally:
        store.close()
    if as_json:
        emit_json(out)
        return
    for tenant_id, data in out.items():
        console.print(f"[bold]{tenant_id}[/] (segments assigned {data.get('since', '-')})")
        if not data.get("segments"):
            console.print("  no segments assigned yet: run `segsync sync` first")
            continue
        closed = {k: v for k, v in data["segments"].items() if "window_open_until" not in v}
        for name, v in data["segments"].items():
            if "window_open_until" in v:
                console.print(f"  {name}: {v['members']} members, {v['holdout']} held out; outcome window open until "
                              f"{v['window_open_until']} - no lift yet")
        if closed:
            console.print(render_lift_report(closed), markup=False)

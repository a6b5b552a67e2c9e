"""``segsync score`` (backtest + model cards) and ``segsync report lift`` (segment vs holdout)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.table import Table

from sync.cli.common import CONFIG_ARG, console, emit_json, open_config, select_tenants

if TYPE_CHECKING:
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


def _evaluate(store: Store, tenant: TenantCfg, cutoff: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Backtest and gate every score of one tenant: (model cards, warnings for the reader)."""
    from core.errors import InputError
    from scoring.backtest import backtest as run_backtest
    from scoring.card import model_card
    from scoring.gate import gate
    from sync.run.scorer import frames, no_email_warning, score_spec, wanted_properties

    if not store.contacts(tenant.id):
        raise InputError(f"tenant {tenant.id}: the store holds no contacts yet; run `segsync sync CONFIG` first "
                         "(it pulls the book; `--dry-run` pulls without pushing)")
    notes = [w for w in (no_email_warning(store, tenant),) if w]
    contacts, events = frames(store, tenant, _allowed(store, tenant))
    _, discovered = wanted_properties(tenant, [])
    cards = []
    for sc in tenant.scores:
        spec = score_spec(sc, tenant)
        report = run_backtest(spec, contacts, events if not events.empty else None, cutoff=cutoff)
        card = model_card(report, gate=gate(report))
        if discovered and report.extra.get("property_inputs") is not None:
            card["extra"]["property_inputs_discovered"] = True
        cards.append({"tenant": tenant.id, **card})
    if discovered:
        inputs = sorted({p for c in cards for p in (c.get("extra") or {}).get("property_inputs", [])})
        notes.append(f"no features declared: property inputs discovered automatically: {', '.join(inputs) or 'none'} "
                     "(declare features.numeric_properties / categorical_properties to choose)")
    return cards, notes


@click.command("score")
@CONFIG_ARG
@click.option("--tenant", "tenant_ids", multiple=True, metavar="ID", help="Only this tenant (repeatable).")
@click.option("--cutoff", default=None, metavar="DATE",
              help="Test cutoff (default: one horizon before the newest event).")
@click.option("--report", "write_cards", is_flag=True,
              help="Also write a model card (markdown, JSON and HTML) per score.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where model cards go (default: <model_dir>/<tenant>/<score>/).")
@click.option("--json", "as_json", is_flag=True, help="Print the backtest results as JSON.")
def score_cmd(config: Path, tenant_ids: tuple[str, ...], cutoff: str | None, write_cards: bool,
              out_dir: Path | None, as_json: bool) -> None:
    """Backtest each configured score on the stored data, against a naive baseline, and gate it.

    Run `segsync sync` first so the store holds contacts and events. A score is used for segments
    only if it passes the gate: better than the baseline out of sample (time-ordered where the data
    has time) with an interval that excludes zero, no suspected leakage, enough data.
    """
    from scoring.card import render_model_card
    from sync.pages.cards import write_card_html
    from sync.pages.status_data import stored_scores

    cfg, store = open_config(config)
    results: list[dict[str, Any]] = []
    notes: list[str] = []
    try:
        for tenant in select_tenants(cfg, tenant_ids):
            cards, tenant_notes = _evaluate(store, tenant, cutoff)
            notes += [f"{tenant.id}: {n}" for n in tenant_notes]
            for card in cards:
                results.append(card)
                if write_cards:
                    name = card["score"]
                    folder = (out_dir / tenant.id / name) if out_dir else (cfg.model_dir / tenant.id / name)
                    folder.mkdir(parents=True, exist_ok=True)
                    body = {k: v for k, v in card.items() if k != "tenant"}
                    (folder / "card.json").write_text(json.dumps(body, indent=2, default=str))
                    (folder / "card.md").write_text(render_model_card(body))
                    write_card_html(folder, body, firm=tenant.name or tenant.id, colour=tenant.pages.colour,
                                    scores=stored_scores(store, tenant.id, name))
                    card["card_path"] = str(folder / "card.md")
    finally:
        store.close()
    if as_json:
        emit_json({"scores": results, "notes": notes})
        return
    _print_scores(results, notes)


def _print_scores(results: list[dict[str, Any]], notes: list[str]) -> None:
    table = Table(title="Backtest (out of sample) vs naive baseline, and the gate", box=box.SIMPLE_HEAD,
                  title_justify="left")
    for col in ("tenant", "score", "method", "roc_auc", "lift@10%", "baseline auc", "gain (95% CI)", "gate"):
        table.add_column(col, no_wrap=col in ("tenant", "score"))
    for r in results:
        m, b = r.get("model") or {}, r.get("baseline") or {}
        gain = (r.get("extra") or {}).get("gain_over_baseline") or {}
        ci = (f"{gain['difference']:+.3f} ({gain['ci_low']:+.3f}, {gain['ci_high']:+.3f})" if gain else "-")
        verdict = r.get("gate") or {}
        note = "used" if verdict.get("passed") else "not used: " + "; ".join(verdict.get("reasons") or [])
        table.add_row(r["tenant"], r["score"], r.get("method", ""), _fmt(m.get("roc_auc")),
                      _fmt(m.get("lift_top_decile")), _fmt(b.get("roc_auc")), ci, note)
    console.print(table)
    for r in results:
        chk = (r.get("extra") or {}).get("later_rows_check")
        if chk:
            console.print(f"{r['score']}: cross-validated ROC AUC {_fmt((r.get('model') or {}).get('roc_auc'))}; "
                          f"time-ordered (last 20% by {chk.get('ordered_by', 'row order')}) {_fmt(chk['roc_auc'])}")
    for note in notes:
        console.print(f"[yellow]note[/]: {note}")
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
    """Outcome rate of each segment's members vs its holdout, each contact over its own window.

    The window starts when a contact was first assigned to the segment (scheduled re-runs do not
    move it) and lasts the score's horizon (churn: inactive_days); only closed windows count. The
    outcome is the score's own; the difference comes with a 95% interval and the minimum effect the
    holdout can detect.
    """
    import pandas as pd

    from scoring.lift import outcome_for, segment_lift

    cfg, store = open_config(config)
    out: dict[str, Any] = {}
    now = pd.Timestamp.now(tz="UTC")
    try:
        for tenant in select_tenants(cfg, tenant_ids):
            spells = pd.DataFrame(store.segment_history(tenant.id),
                                  columns=["segment", "contact_id", "holdout", "first_assigned", "last_assigned",
                                           "left_at"])
            if spells.empty:
                out[tenant.id] = {}
                continue
            events = pd.DataFrame(list(store.events(tenant.id)),
                                  columns=["contact_id", "type", "occurred_at", "value", "url", "session_id"])
            scores = {s.name: s for s in tenant.scores}
            result: dict[str, Any] = {}
            for seg in tenant.segments:
                sc = scores[seg.score]
                window = sc.inactive_days if sc.kind == "churn" else sc.horizon_days
                outcome = outcome_for(sc.kind, window, event=sc.outcome.event if sc.outcome else None,
                                      labelled=bool(sc.outcome and sc.outcome.property),
                                      activity_types=sc.activity_types, transaction_types=sc.transaction_types)
                result[seg.name] = segment_lift(spells, events, seg.name, outcome, now)
            out[tenant.id] = {"segments": result}
    finally:
        store.close()
    if as_json:
        emit_json(out)
        return
    _print_lift(out)


def _print_lift(out: dict[str, Any]) -> None:
    for tenant_id, data in out.items():
        console.print(f"[bold]{tenant_id}[/]")
        if not data.get("segments"):
            console.print("  no segments assigned yet: run `segsync sync` first")
            continue
        for name, v in data["segments"].items():
            status = v.get("status")
            if status == "not measurable":
                console.print(f"  {name}: not measured - {v['reason']}")
            elif status == "window open":
                console.print(f"  {name}: {v['waiting']} contact(s) still inside their {v['window_days']}-day window"
                              + (f" (first closes {v['next_window_closes']})" if v.get("next_window_closes") else "")
                              + " - no lift yet")
            else:
                console.print(f"  {name}: members {v['member_rate']:.1%} of {v['members']}, holdout "
                              f"{v['holdout_rate']:.1%} of {v['holdout']}: difference {v['difference']:+.1%} (95% CI "
                              f"{v['ci_low']:+.1%} to {v['ci_high']:+.1%}); detectable effect "
                              f"{v['minimum_detectable_effect']:.1%}"
                              + (f"; {v['waiting']} still waiting" if v["waiting"] else ""))
            if v.get("advice"):
                console.print(f"    [yellow]advice[/]: {v['advice']}")

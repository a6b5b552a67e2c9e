"""What the status pages show, read from the store, the ledger and the model cards (no writes).

Everything here is per firm and read-only. Emails are masked before they reach a template; run
reports hold counts only (no personal data), record outcomes are keyed by contact id and mapped
to masked addresses here.
"""

from __future__ import annotations

import json
import zoneinfo
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from apscheduler.triggers.cron import CronTrigger

from consent.outbox import Outbox
from consent.schema import consent_events
from sync.config.models import Config, TenantCfg
from sync.store import Store
from sync.store.schema import scores as scores_table

RUN_HISTORY = 30
CONSENT_DAYS = 30
MAX_OUTCOME_ROWS = 1000


def mask_email(email: str | None) -> str:
    """``an***@example.com``: enough to recognise, not enough to harvest."""
    if not email:
        return "-"
    name, _, domain = email.partition("@")
    return f"{name[:2]}***@{domain}" if domain else f"{name[:2]}***"


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def next_run(tenant: TenantCfg, now: datetime) -> datetime | None:
    """The next scheduled run (None: manual runs only)."""
    if not tenant.schedule:
        return None
    trigger = CronTrigger.from_crontab(tenant.schedule, timezone=zoneinfo.ZoneInfo(tenant.timezone))
    fire: datetime | None = trigger.get_next_fire_time(None, now)
    return fire


def model_dirs(cfg: Config, base_dir: Path) -> list[Path]:
    """Where ``segsync score --report`` may have written the cards: a relative model_dir is taken from
    the config's folder (as the server does) and from the working directory (as the CLI does)."""
    return [cfg.model_dir] if cfg.model_dir.is_absolute() else [base_dir / cfg.model_dir, cfg.model_dir]


def load_cards(cfg: Config, base_dir: Path, tenant: TenantCfg) -> dict[str, dict[str, Any]]:
    """``{score: card}`` for the tenant's scores that have a card.json on disk."""
    cards = {}
    for sc in tenant.scores:
        path = next(
            (p for d in model_dirs(cfg, base_dir) if (p := d / tenant.id / sc.name / "card.json").is_file()), None
        )
        if path is not None:
            try:
                cards[sc.name] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # a broken card is shown as missing, not as a crash
    return cards


def consent_per_day(engine: sa.Engine, tenant_id: str, now: datetime, days: int = CONSENT_DAYS) -> list[dict[str, Any]]:
    """Ledger events recorded per day (granted / withdrawn), oldest first, zero-filled."""
    since = now - timedelta(days=days)
    ev = consent_events.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(ev.recorded_at, ev.state).where(ev.tenant_id == tenant_id, ev.recorded_at >= since)
        ).all()
    counts: dict[str, dict[str, int]] = {}
    for recorded_at, state in rows:
        day = _aware(recorded_at).date().isoformat()  # type: ignore[union-attr]
        counts.setdefault(day, {"granted": 0, "withdrawn": 0})[state] += 1
    out = []
    for i in range(days, -1, -1):
        day = (now - timedelta(days=i)).date().isoformat()
        c = counts.get(day, {"granted": 0, "withdrawn": 0})
        out.append({"day": day, **c})
    return out


def _totals(report: dict[str, Any] | None) -> dict[str, int]:
    totals = ((report or {}).get("push") or {}).get("totals") or {}
    return {k: int(totals.get(k, 0) or 0) for k in ("sent", "suppressed", "failed")}


def firm_status(
    cfg: Config, base_dir: Path, store: Store, outbox: Outbox, tenant: TenantCfg, now: datetime
) -> dict[str, Any]:
    """The status card of one firm."""
    runs = store.runs(tenant.id, limit=RUN_HISTORY)
    real = [r for r in runs if not r.get("dry_run")]
    last = real[0] if real else (runs[0] if runs else None)
    history = []
    for r in reversed(runs):
        report = r.get("report") or {}
        history.append(
            {
                "id": r["id"],
                "started_at": _aware(r["started_at"]),
                "status": r["status"],
                "dry_run": r["dry_run"],
                "segments": report.get("segments") or {},
                **_totals(report),
            }
        )
    cards = load_cards(cfg, base_dir, tenant)
    verdicts = []
    scoring = ((last or {}).get("report") or {}).get("scoring") or {}
    insufficient = scoring.get("insufficient") or {}
    for sc in tenant.scores:
        card = cards.get(sc.name)
        if card is not None:
            verdict = (card.get("verdict") or {}).get("verdict", "ok")
            note = (card.get("verdict") or {}).get("reason") or _auc_note(card)
            verdicts.append({"score": sc.name, "kind": sc.kind, "verdict": verdict, "note": note, "card": True})
        else:
            why = insufficient.get(sc.name) if isinstance(insufficient, dict) else None
            verdicts.append(
                {
                    "score": sc.name,
                    "kind": sc.kind,
                    "verdict": "insufficient_data" if why else "no model card yet",
                    "note": (why.get("reason") if isinstance(why, dict) else why)
                    or f"run `segsync score CONFIG --tenant {tenant.id} --report` to write one",
                    "card": False,
                }
            )
    return {
        "tenant": tenant,
        "name": tenant.name or tenant.id,
        "last": last,
        "last_totals": _totals((last or {}).get("report")),
        "last_started": _aware(last["started_at"]) if last else None,
        "next_run": next_run(tenant, now),
        "outbox_depth": outbox.depth(tenant.id),
        "history": history,
        "verdicts": verdicts,
        "consent_days": consent_per_day(store.engine, tenant.id, now),
        "segments": [s.name for s in tenant.segments],
    }


def _auc_note(card: dict[str, Any]) -> str:
    model, base = card.get("model") or {}, card.get("baseline") or {}
    auc, bauc = model.get("roc_auc"), base.get("roc_auc")
    if isinstance(auc, float) and isinstance(bauc, float):
        better = "better than" if auc > bauc else "NOT better than"
        return f"ROC AUC {auc:.3f} vs naive baseline {bauc:.3f}: {better} the baseline"
    return ""


def run_detail(store: Store, tenant_id: str, run_id: int) -> dict[str, Any] | None:
    """A run's report, plan and per-record outcomes (emails masked); None if it is not this tenant's."""
    run = next((r for r in store.runs(tenant_id, limit=10_000) if r["id"] == run_id), None)
    if run is None:
        return None
    emails = {c["contact_id"]: c.get("email") for c in store.contacts(tenant_id)}
    outcomes = store.outcomes(run_id)
    rows = [
        {
            "destination": o["destination"],
            "who": mask_email(emails.get(o["key"])) if o["key"] in emails else "(erased or unknown)",
            "outcome": o["outcome"],
            "message": o["message"],
            "at": _aware(o["at"]),
        }
        for o in outcomes[:MAX_OUTCOME_ROWS]
    ]
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o["outcome"]] = counts.get(o["outcome"], 0) + 1
    report = run.get("report") or {}
    return {"run": run, "report": report, "plan": report.get("plan") or {}, "outcomes": rows, "outcome_counts": counts,
            "truncated": max(len(outcomes) - MAX_OUTCOME_ROWS, 0), "started": _aware(run["started_at"])}


def stored_scores(store: Store, tenant_id: str, score: str) -> list[float]:
    """The numeric values of one score as the last sync stored them (for the distribution chart)."""
    c = scores_table.c
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(c.value).where(c.tenant_id == tenant_id, c.score == score, c.value.is_not(None)))
        return [float(r.value) for r in rows]

"""``segsync consent record|status|history|verify|erase``: the ledger from the command line.

Registered on the ``segsync`` group in ``sync/cli/app.py`` (the CLI lives in ``sync``: ``consent``
never imports ``sync``). Every command takes the config file, opens its store (migrating it), and
prints a readable summary or, with ``--json``, one JSON document. Exit codes: 0 ok, 1 ``verify``
found a broken chain, 2 bad usage, config or input (from the ``segsync`` group's error handling).

The tenant's pseudonym key is ``consent.pseudonym_key`` if set, else a key generated at first use
in the key file (``consent.keys_file``, default ``~/.config/segsync/keys.json``): changing or losing
it makes old pseudonyms unreachable and the keyed chain uncheckable, so back it up.
``checkpoint`` writes signed chain heads to a file to keep outside the database; ``verify
--against`` checks the ledger against one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from connectors import registry
from consent.checkpoint import load_checkpoint, write_checkpoint
from consent.erasure import scrub_json_column
from consent.ledger import Ledger
from consent.outbox import Outbox
from consent.policy import GRANTED, STATES, is_allowed, normalize_subject, reason
from consent.propagate import erase_and_enqueue, record_and_enqueue
from consent.signals import ConsentSignal
from consent.webhook_events import TenantHooks
from core import times
from core.errors import InputError
from sync.config.models import TenantCfg, load_config
from sync.run.gate import key_lookup, policy_of
from sync.store import open_store
from sync.store.schema import runs

# Where a consent fact can come from: segsync itself, or a vendor that reports consent (one with a webhook).
SOURCES = ("cli", "import", "preference_center", *(h.vendor for h in registry.webhook_handlers()))


def tenant_destinations(tenant: TenantCfg) -> tuple[str, ...]:
    """The outbox destinations of a tenant (the ESP ones only when it has an ESP), as the webhook uses."""
    return TenantHooks.from_config(tenant).destinations


@click.group()
def consent() -> None:
    """The consent ledger: record, inspect, verify and erase."""


@contextmanager
def _open(config_path: Path) -> Iterator[tuple[Any, Any, Ledger, Outbox]]:
    cfg = load_config(config_path)
    store = open_store(cfg.store)
    try:
        ledger = Ledger(store.engine, key_lookup(cfg.tenants))
        yield cfg, store, ledger, Outbox(store.engine, mac_key=ledger.chain_key)
    finally:
        store.close()


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _when(value: str | None) -> datetime:
    if value is None:
        return times.now()
    try:
        return times.parse_time(value, naive_ok=False)
    except times.NaiveTimeError:
        raise InputError("--occurred-at needs a time zone (add Z or +00:00)") from None
    except ValueError:
        raise InputError(f"--occurred-at {value!r} is not an ISO 8601 time (e.g. 2026-11-25T18:00:00Z)") from None


def _evidence(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--evidence {pair!r} must look like key=value")
        out[key] = value
    return out


config_arg = click.argument("config", type=click.Path(dir_okay=False, exists=True, path_type=Path))
tenant_opt = click.option("--tenant", "tenant_id", required=True, help="Tenant id from the config.")
email_opt = click.option("--email", required=True, help="The person's email address.")
json_opt = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@consent.command()
@config_arg
@tenant_opt
@email_opt
@click.option("--purpose", required=True, help="email_marketing, profiling, or another purpose of the tenant.")
@click.option("--state", type=click.Choice(STATES), required=True)
@click.option("--basis", default=None, help="Lawful basis (default: the tenant's basis for the purpose).")
@click.option("--source", type=click.Choice(SOURCES), default="cli", show_default=True)
@click.option("--occurred-at", default=None, help="When it happened, ISO 8601 with a zone (default: now).")
@click.option("--notice-version", default=None, help="The notice the person was shown (required for a grant).")
@click.option("--evidence", multiple=True, help="key=value evidence, repeatable (request_id=..., ip=...).")
@click.option("--idempotency-key", default=None, help="Record once per key (safe to re-run an import).")
@json_opt
def record(
    config: Path, tenant_id: str, email: str, purpose: str, state: str, basis: str | None, source: str,
    occurred_at: str | None, notice_version: str | None, evidence: tuple[str, ...], idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Record one consent event; a withdrawal is queued for every vendor."""
    when = _when(occurred_at)
    with _open(config) as (cfg, _store, ledger, outbox):
        tenant = cfg.tenant(tenant_id)
        policy = policy_of(tenant)
        if basis is None:
            if purpose not in policy:
                raise InputError(f"tenant {tenant_id!r} has no purpose {purpose!r}; pass --basis or use one of "
                                 f"{', '.join(sorted(policy))}")
            basis = policy[purpose]
        if state == GRANTED and not notice_version:
            raise InputError("a grant needs --notice-version (the notice the person was shown)")
        signal = ConsentSignal(email, purpose, state, basis, source, when, notice_version,
                        _evidence(evidence) | {"operator": "cli"}, idempotency_key)
        result = record_and_enqueue(ledger, outbox, tenant_id, [signal], tenant_destinations(tenant),
                                    reason=f"{source} via CLI")
    events = [
        {"id": e.id, "seq": e.seq, "purpose": e.purpose, "state": e.state, "hash": e.hash} for e in result.recorded
    ]
    if as_json:
        _emit({"recorded": events, "duplicate": not events, "enqueued": result.enqueued})
        return
    if not events:
        click.echo(f"already recorded (idempotency key {idempotency_key!r}); nothing written")
        return
    e = result.recorded[0]
    click.echo(f"recorded {e.purpose} {e.state} for {normalize_subject(email)} (event {e.id}, seq {e.seq})")
    if result.enqueued:
        click.echo(f"queued {result.enqueued} suppression action(s) for the vendors")


@consent.command()
@config_arg
@tenant_opt
@email_opt
@json_opt
def status(config: Path, tenant_id: str, email: str, as_json: bool) -> None:
    """Current state and decision per purpose (unknown = not allowed under basis consent)."""
    with _open(config) as (cfg, _store, ledger, _outbox):
        policy = policy_of(cfg.tenant(tenant_id))
        states = ledger.status(tenant_id, email)
    rows = []
    for purpose in sorted(set(policy) | set(states)):
        current = states.get(purpose)
        basis = policy.get(purpose, "consent")
        state = current.state if current else None
        rows.append({
            "purpose": purpose, "basis": basis, "state": state or "unknown",
            "since": current.occurred_at.isoformat() if current else None,
            "source": current.source if current else None,
            "allowed": is_allowed(state, basis), "reason": reason(state, basis),
        })
    if as_json:
        _emit({"tenant": tenant_id, "email": normalize_subject(email), "purposes": rows})
        return
    click.echo(f"{normalize_subject(email)} in {tenant_id}:")
    for r in rows:
        since = f" since {r['since']} ({r['source']})" if r["since"] else ""
        verdict = "allowed" if r["allowed"] else "NOT allowed"
        click.echo(f"  {r['purpose']}: {r['state']}{since} - {verdict} under {r['basis']} ({r['reason']})")


@consent.command()
@config_arg
@tenant_opt
@email_opt
@json_opt
def history(config: Path, tenant_id: str, email: str, as_json: bool) -> None:
    """Every event for the person, oldest first, and the status of each vendor suppression."""
    with _open(config) as (cfg, _store, ledger, outbox):
        cfg.tenant(tenant_id)
        events = ledger.history(tenant_id, email)
        actions = outbox.actions_for(tenant_id, ledger.pseudonym(tenant_id, email))
    ev_rows = [
        {"id": e.id, "seq": e.seq, "purpose": e.purpose, "state": e.state, "basis": e.basis, "source": e.source,
         "occurred_at": e.occurred_at.isoformat(), "recorded_at": e.recorded_at.isoformat(),
         "notice_version": e.notice_version, "evidence": e.evidence, "erased": e.erased}
        for e in events
    ]
    ac_rows = [
        {"id": a.id, "destination": a.destination, "status": a.status, "attempts": a.attempts,
         "source_event": a.source_event, "created_at": a.created_at.isoformat(),
         "done_at": a.done_at.isoformat() if a.done_at else None, "last_error": a.last_error}
        for a in actions
    ]
    if as_json:
        _emit({"tenant": tenant_id, "email": normalize_subject(email), "events": ev_rows, "actions": ac_rows})
        return
    if not ev_rows:
        click.echo(f"no consent events for {normalize_subject(email)} in {tenant_id}")
    for r in ev_rows:
        erased = " [erased]" if r["erased"] else ""
        notice = f" notice {r['notice_version']}" if r["notice_version"] else ""
        click.echo(
            f"  {r['occurred_at']}  {r['purpose']:<16} {r['state']:<9} {r['source']} ({r['basis']}){notice}{erased}"
        )
    for a in ac_rows:
        error = f" - {a['last_error']}" if a["last_error"] else ""
        click.echo(f"  -> {a['destination']}: {a['status']} after {a['attempts']} failed attempt(s){error}"
                   if a["attempts"] else f"  -> {a['destination']}: {a['status']}{error}")


@consent.command()
@config_arg
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant (default: every tenant in the store).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="File to write the checkpoint to (keep it outside the database).")
@json_opt
def checkpoint(config: Path, tenant_id: str | None, out: Path, as_json: bool) -> None:
    """Write signed chain heads to a file, for `verify --against` to detect truncation later."""
    with _open(config) as (cfg, _store, ledger, _outbox):
        if tenant_id is not None:
            cfg.tenant(tenant_id)
        doc = ledger.checkpoint(tenant_id)
    write_checkpoint(out, doc)
    heads = {t: e["seq"] for t, e in doc["tenants"].items()}
    if as_json:
        _emit({"checkpoint": str(out), "tenants": heads})
    else:
        click.echo(f"checkpoint of {len(heads)} tenant(s) written to {out}: "
                   + ", ".join(f"{t} at seq {n}" for t, n in heads.items()))


@consent.command()
@config_arg
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant (default: every tenant in the store).")
@click.option("--against", "against", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="A checkpoint file from `segsync consent checkpoint` to check the ledger against.")
@json_opt
def verify(config: Path, tenant_id: str | None, against: Path | None, as_json: bool) -> None:
    """Check the hash chains and outbox MACs (and a checkpoint); name the first broken row (exit 1 if any)."""
    doc = load_checkpoint(against) if against is not None else None
    with _open(config) as (cfg, _store, ledger, _outbox):
        if tenant_id is not None:
            cfg.tenant(tenant_id)
        result = ledger.verify(tenant_id, against=doc)
    broken = result.first_broken
    if as_json:
        _emit({"ok": result.ok, "checked": result.checked,
               "first_broken": None if broken is None else
               {"tenant": broken.tenant_id, "id": broken.id, "reason": broken.reason}})
    elif result.ok:
        click.echo(f"ok: {result.checked} events, every chain intact")
    else:
        assert broken is not None
        click.echo(f"BROKEN in tenant {broken.tenant_id} at {broken.reason} ({result.checked} rows checked)")
    if not result.ok:
        sys.exit(1)


@consent.command()
@config_arg
@tenant_opt
@email_opt
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_opt
def erase(config: Path, tenant_id: str, email: str, yes: bool, as_json: bool) -> None:
    """Erase a person: their data leaves the store and the ledger; the withdrawal proof stays."""
    subject = normalize_subject(email)
    if not yes and not as_json:
        click.confirm(f"Erase {subject} from tenant {tenant_id}? This cannot be undone", abort=True)
    with _open(config) as (cfg, store, ledger, outbox):
        tenant = cfg.tenant(tenant_id)
        # Ledger first: the proof and the vendor suppression are committed before the data goes,
        # and running erase again after a crash redoes whatever is left.
        result = erase_and_enqueue(ledger, outbox, tenant_id, subject, tenant_destinations(tenant))
        removed = store.erase(tenant_id, subject)
        with store.engine.begin() as conn:  # old run reports may quote the address (vendor errors)
            scrub_json_column(conn, runs, "report", tenant_id, subject)
    erasure = result.erasure
    assert erasure is not None
    data = {
        "tenant": tenant_id, "pseudonym": erasure.subject_key, "store_rows_removed": removed,
        "ledger_events_scrubbed": erasure.events_scrubbed, "withdrawals_recorded": len(erasure.withdrawals),
        "suppressions_queued": result.enqueued,
    }
    if as_json:
        _emit(data)
        return
    click.echo(
        f"erased {subject}: {removed} store rows removed, {erasure.events_scrubbed} ledger events scrubbed, "
        f"{len(erasure.withdrawals)} withdrawals kept as proof (pseudonym {erasure.subject_key[:12]}...), "
        f"{result.enqueued} vendor suppressions queued"
    )


@consent.command()
@config_arg
@tenant_opt
@click.argument("email")
@click.option("--base-url", default=None, help="The address subscribers reach (default: server.public_url, else http://LISTEN).")
@json_opt
def link(config: Path, tenant_id: str, email: str, base_url: str | None, as_json: bool) -> None:
    """Print a signed, expiring link to the hosted preference page of EMAIL (the email is not in it)."""
    from sync.pages.preferences import make_link

    with _open(config) as (cfg, store, ledger, _outbox):
        tenant = cfg.tenant(tenant_id)
        url, expires = make_link(tenant, store, ledger, email, base_url or cfg.server.public_url or f"http://{cfg.server.listen}")
    if as_json:
        _emit({"tenant": tenant_id, "url": url, "expires_at": expires.isoformat()})
        return
    click.echo(url)
    click.echo(
        f"(valid until {expires:%Y-%m-%d %H:%M} UTC; anyone with the link can change this person's preferences)",
        err=True,
    )

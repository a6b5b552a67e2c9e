"""``segsync state show|reset``: what a tenant's next run resumes from, and forgetting it (like ``meltano state``).

Reset forgets pull cursors only, so the next run pulls those streams in full; what vendors last confirmed
(last-sent state) stays, so a full pull costs reads, never duplicate writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from core.errors import ConfigError
from sync.cli.common import CONFIG_ARG, console, emit_json, open_config

TENANT_OPT = click.option("--tenant", "tenant_id", required=True, metavar="ID", help="The tenant (firm) id.")


@click.group("state")
def state_group() -> None:
    """Show or reset where each stream's next pull starts (per tenant)."""


@state_group.command("show")
@CONFIG_ARG
@TENANT_OPT
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def state_show(config: Path, tenant_id: str, as_json: bool) -> None:
    """Pull cursors and last-sent state of one tenant, times in its own zone."""
    from sync.cli.report import _table, local_time

    cfg, store = open_config(config)
    try:
        tenant = cfg.tenant(tenant_id)
        state = store.stream_state(tenant.id)
    finally:
        store.close()
    if as_json:
        emit_json({"tenant": tenant.id, "timezone": tenant.timezone, **state})
        return
    streams = _table(f"{tenant.id}: pull cursors (next run starts here)", ["stream", "cursor", "updated"])
    for row in state["streams"]:
        streams.add_row(row["stream"], _short(row["value"]), local_time(row["updated_at"], tenant.timezone))
    if not state["streams"]:
        streams.add_row("(none)", "the next run pulls everything", "-")
    sent = _table(f"{tenant.id}: last confirmed by the vendors", ["destination", "records", "last sent"])
    for row in state["destinations"]:
        sent.add_row(row["destination"], f"{row['records']:,}", local_time(row["last_sent_at"], tenant.timezone))
    console.print(streams)
    console.print(sent)


@state_group.command("reset")
@CONFIG_ARG
@TENANT_OPT
@click.option(
    "--stream", "streams", multiple=True, metavar="STREAM", help="Only this stream (repeatable). Default: all."
)
@click.option("--dry-run", is_flag=True, help="Show what would be reset; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def state_reset(config: Path, tenant_id: str, streams: tuple[str, ...], dry_run: bool, yes: bool) -> None:
    """Forget pull cursors so the next run pulls in full (sent state is kept: no duplicate writes)."""
    cfg, store = open_config(config)
    try:
        tenant = cfg.tenant(tenant_id)
        known = [r["stream"] for r in store.stream_state(tenant.id)["streams"]]
        targets = _targets(streams, known)
        if not targets:
            console.print(f"{tenant.id}: no cursors to reset; the next run pulls everything already")
            return
        listing = ", ".join(targets)
        if dry_run:
            console.print(f"{tenant.id}: would reset {listing} (dry run: nothing changed)")
            return
        if not yes:
            click.confirm(f"{tenant.id}: forget the cursors of {listing}? The next run pulls them in full", abort=True)
        gone = store.reset_cursors(tenant.id, targets)
    finally:
        store.close()
    console.print(f"{tenant.id}: reset {', '.join(gone)}; the next run pulls them in full")


def _targets(streams: tuple[str, ...], known: list[str]) -> list[str]:
    from sync.config.validate import suggest

    if not streams:
        return known
    unknown = [s for s in streams if s not in known]
    if unknown:
        hint = suggest(unknown[0], known)
        listing = ", ".join(known) or "none"
        raise ConfigError(f"--stream {unknown[0]}: no cursor for that stream{hint} (streams: {listing})")
    return list(streams)


def _short(value: Any) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= 48 else text[:45] + "..."

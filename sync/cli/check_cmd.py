"""`segsync check`: print the connection findings of sync/check.py (store, credentials, audience, webhook URLs)."""

from __future__ import annotations

from pathlib import Path

import click

from sync.check import FAIL, OK, WARN, check_config, exit_code
from sync.cli.common import console, emit_json

_STYLE = {OK: "green", WARN: "yellow", FAIL: "bold red"}


@click.command("check")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tenant", "tenant_ids", multiple=True, metavar="ID", help="Only this firm (repeatable). Default: all.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def check_cmd(config: Path, tenant_ids: tuple[str, ...], as_json: bool) -> None:
    """Check the connections: the store, each credential and its scopes, the audience, the webhook URLs.

    Reads only, writes nothing. Exit 0 when all is well (warnings allowed), 2 when a check failed.
    """
    from sync.config.models import load_config

    cfg = load_config(config)
    findings = check_config(cfg, config.parent, tenant_ids)
    if as_json:
        emit_json({"ok": exit_code(findings) == 0, "findings": [f.as_dict() for f in findings]})
    else:
        current: str | None = "-"
        for f in findings:
            if f.tenant != current:
                current = f.tenant
                console.print(f"[bold]{f.tenant or 'config'}[/]")
            console.print(f"  [{_STYLE[f.status]}]{f.status:<4}[/] {f.what}: ", end="")
            console.print(f.detail, markup=False, highlight=False)
        failed = sum(f.status == FAIL for f in findings)
        console.print(f"[bold red]{failed} check(s) failed[/]" if failed else "[green]all checks passed[/]")
    raise SystemExit(exit_code(findings))

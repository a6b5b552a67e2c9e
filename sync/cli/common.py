"""What every ``segsync`` command shares: the consoles, JSON output, the CONFIG argument, opening a config.

Kept free of heavy imports (no pandas, scikit-learn, SQLAlchemy at module level) so that
``segsync --help`` and ``segsync validate`` start fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from core.errors import ConfigError, SegsyncError

if TYPE_CHECKING:
    from sync.config.models import Config, TenantCfg
    from sync.store.interface import Store

# Piped or redirected output is not squeezed to 80 columns: reports stay readable in logs and files.
console = Console(stderr=False, highlight=False, width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

CONFIG_ARG = click.argument("config", type=click.Path(dir_okay=False, path_type=Path))


def emit_json(data: Any) -> None:
    """Print ``data`` as one indented, key-sorted JSON document (``--json`` output)."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def open_config(config: Path) -> tuple[Config, Store]:
    """Load and validate the config, then open (and migrate) its store. The caller closes the store."""
    from sync.config.models import load_config

    cfg = load_config(config)
    return cfg, open_store_plainly(cfg.store)


def open_store_plainly(url: str) -> Store:
    """Open (and migrate) the store; an unreachable database is one plain sentence, never "unexpected ... report it"."""
    import sqlalchemy as sa

    from sync.store import open_store

    try:
        return open_store(url)
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        try:
            where = sa.engine.make_url(url).render_as_string(hide_password=True)
        except sa.exc.ArgumentError:
            where = "the configured store"
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise SegsyncError(f"store: cannot open {where}: {reason} (is the database running and reachable?)") from None


def select_tenants(cfg: Config, wanted: tuple[str, ...]) -> list[TenantCfg]:
    """The tenants named by ``--tenant`` (all when none); an unknown id is a config error naming the known ones."""
    if not wanted:
        return list(cfg.tenants)
    known = {t.id: t for t in cfg.tenants}
    missing = [w for w in wanted if w not in known]
    if missing:
        from sync.config.validate import suggest

        hint = suggest(missing[0], list(known))
        raise ConfigError(f"unknown tenant(s): {', '.join(missing)}{hint} (known: {', '.join(known)})")
    return [known[w] for w in wanted]

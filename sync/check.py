"""``segsync check CONFIG``: are the connections right? (like ``dbt debug``)

For each firm: every credential with a cheap authenticated read (a 401/403 names the credential's
config path and the scope it lacks) and the resources the config names (an ESP's audience, a CSV's
files) - each vendor's checks are its plugin's (:mod:`connectors.registry`) - and the webhook URLs as
the vendors will call them. Once: the store answers. Nothing is written anywhere. Any failure -> exit 2.

Checks fail fast: one retry at most, so a wrong host or a firewall shows up in seconds, not after
the sync's three-minute retry budget.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from connectors import registry
from connectors.kit.http import RetrySettings, redact
from core.errors import ConfigError, SegsyncError
from sync.config.models import Config, TenantCfg

OK, WARN, FAIL = "ok", "warn", "fail"
QUICK = RetrySettings(max_attempts=2, initial_wait=0.5, max_wait=2.0, total_budget=20.0)
CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class Finding:
    """One line of the check: what was checked, for which firm (None = the whole config), and how it went."""

    tenant: str | None
    what: str
    status: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_store(url: str) -> Finding:
    """Connect and ``select 1``; a plain message (host, reason) on failure, the password never shown."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return Finding(None, "store", FAIL, f"store: {redact(url)!r} is not a database URL "
                                            "(e.g. sqlite:///segsync.db or postgresql+psycopg://user@host/db)")
    shown = parsed.render_as_string(hide_password=True)
    args = {"connect_timeout": CONNECT_TIMEOUT_S} if parsed.get_backend_name() == "postgresql" else {}
    try:
        engine = sa.create_engine(parsed, connect_args=args)
    except Exception as exc:
        return Finding(None, "store", FAIL, f"{shown}: cannot use it ({redact(exc)})")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
        return Finding(None, "store", FAIL, f"{shown}: cannot connect ({redact(reason)})")
    except Exception as exc:
        return Finding(None, "store", FAIL, f"{shown}: cannot connect ({type(exc).__name__}: {redact(exc)})")
    finally:
        engine.dispose()
    return Finding(None, "store", OK, f"{shown} answers")


def webhook_urls(cfg: Config, tenant: TenantCfg) -> list[Finding]:
    """The URLs to give each vendor, as they will call them (the secret shown as a placeholder, never its value)."""
    base = cfg.server.public_url or f"http://{cfg.server.listen}"
    findings = []
    if cfg.server.public_url is None and _local(cfg.server.host):
        findings.append(
            Finding(
                tenant.id,
                "webhooks",
                WARN,
                f"server.listen is {cfg.server.listen} and server.public_url "
                "is not set: vendors cannot reach this; set public_url to your proxy's https address",
            )
        )
    elif base.startswith("http://"):
        carriers = [p.title for p in registry.plugins() if p.webhook is not None and p.webhook.secret_in_url]
        what = f"the {' and '.join(carriers)} URL carries" if carriers else "the webhook URLs carry"
        findings.append(Finding(tenant.id, "webhooks", WARN, f"{base} is plain http: {what} the "
                                "webhook secret; serve it over https (see deploy/Caddyfile)"))
    urls = {}
    for block in (tenant.esp, tenant.crm):  # the ESP's first: it is the one every firm registers
        plugin = registry.plugin_for(block) if block is not None else None
        if plugin is not None and plugin.webhook is not None:
            urls[plugin.name] = f"{base}/hooks/{tenant.id}/{plugin.name}{plugin.webhook.url_hint}"
    urls["preferences"] = f"{base}/hooks/{tenant.id}/preferences"
    findings += [Finding(tenant.id, f"webhook {kind}", OK, url) for kind, url in urls.items()]
    return findings


def _local(host: str) -> bool:
    host = host.strip("[]")
    if host in ("localhost", ""):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def check_tenant(cfg: Config, tenant: TenantCfg, base_dir: Path) -> list[Finding]:
    """Every check of one firm; a connector that cannot even be built is one failure, not a crash."""
    from sync.config.wiring import build_context

    findings: list[Finding] = []
    context = build_context(tenant, base_dir)
    try:
        for block in (tenant.crm, tenant.esp):
            plugin = registry.plugin_for(block) if block is not None else None
            if plugin is None or plugin.check is None:
                continue

            def connect(p: registry.VendorPlugin = plugin, b: object = block) -> object:
                return p.factory(b, context)  # built only when the check needs a connector

            checks = plugin.check(block, connect, context, QUICK)
            findings += [Finding(tenant.id, c.what, c.status, c.detail) for c in checks]
    except (ConfigError, SegsyncError) as exc:
        findings.append(Finding(tenant.id, "connectors", FAIL, redact(exc)))
    return findings + webhook_urls(cfg, tenant)


def check_config(cfg: Config, base_dir: Path, tenant_ids: tuple[str, ...] = ()) -> list[Finding]:
    """The store once, then each firm (all, or those named)."""
    tenants = [cfg.tenant(t) for t in tenant_ids] if tenant_ids else list(cfg.tenants)
    findings = [check_store(cfg.store)]
    for tenant in tenants:
        findings += check_tenant(cfg, tenant, base_dir)
    return findings


def exit_code(findings: list[Finding]) -> int:
    """2 when any check failed (a config or credential problem to fix), else 0."""
    return 2 if any(f.status == FAIL for f in findings) else 0

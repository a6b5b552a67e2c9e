"""``segsync check CONFIG``: are the connections right? (like ``dbt debug``)

For each firm: every credential with a cheap authenticated read (a 401/403 names the credential's
config path and the scope it lacks), the Mailchimp audience, and the webhook URLs as the vendors will
call them. Once: the store answers. Nothing is written anywhere. Any failure -> exit 2.

Checks fail fast: one retry at most, so a wrong host or a firewall shows up in seconds, not after
the sync's three-minute retry budget.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from connectors.kit.http import RetrySettings, redact
from core.errors import ApiError, ConfigError, SegsyncError
from sync.config.models import Config, CsvCrm, HubSpotCrm, MailchimpEsp, TenantCfg

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


def _api_failure(tenant: str, what: str, credential: str, exc: ApiError) -> Finding:
    if exc.status in (401, 403):
        why = "refused the credential" if exc.status == 401 else "lacks a permission (scope)"
        return Finding(tenant, what, FAIL, f"{credential} {why}: {redact(exc)}")
    if exc.status == 0:
        return Finding(tenant, what, FAIL, f"no answer - check base_url and the network: {redact(exc)}")
    return Finding(tenant, what, FAIL, redact(exc))


def check_hubspot(tenant: TenantCfg, connector: Any) -> list[Finding]:
    """One read per scope class; stop at the first 401 (every further call would say the same)."""
    client = connector.client
    client.policy.retry = QUICK
    reads: list[tuple[str, Callable[[], Any]]] = [
        ("crm.objects.contacts.read", lambda: client.list_contacts(["email"], None)),
        ("crm.schemas.contacts.read", client.contact_properties),
        ("crm.objects.deals.read", lambda: client.list_deals(None)),
        ("communication_preferences.read_write", client.subscription_definitions),
    ]
    passed, findings = [], []
    for scope, read in reads:
        try:
            read()
        except ApiError as exc:
            findings.append(_api_failure(tenant.id, f"crm hubspot ({scope})", "crm.access_token", exc))
            if exc.status != 403:
                return findings
            continue
        passed.append(scope)
    if passed:
        findings.insert(0, Finding(tenant.id, "crm hubspot", OK if not findings else WARN,
                                   f"token accepted; read with scopes {', '.join(passed)} (write scopes cannot be "
                                   "checked without writing: a sync names any it lacks)"))
    return findings


def check_csv(tenant: TenantCfg, crm: CsvCrm, base_dir: Path) -> list[Finding]:
    """The export files exist and can be read."""
    findings = []
    for name, path in (("contacts", crm.contacts), ("events", crm.events)):
        if path is None:
            continue
        full = path if path.is_absolute() else base_dir / path
        try:
            with full.open("rb") as fh:
                fh.read(1)
        except OSError as exc:
            findings.append(Finding(tenant.id, f"crm csv {name}", FAIL, f"crm.{name}: {full}: {exc.strerror}"))
        else:
            findings.append(Finding(tenant.id, f"crm csv {name}", OK, f"{full} is readable"))
    return findings


def check_mailchimp(tenant: TenantCfg, esp: MailchimpEsp, connector: Any) -> list[Finding]:
    """The key is accepted and the audience (list id) exists for it."""
    connector.client.policy.retry = QUICK
    try:
        body = connector.client.get_list(esp.list_id) or {}
    except ApiError as exc:
        if exc.status == 404:
            return [Finding(tenant.id, "esp mailchimp audience", FAIL,
                            f"esp.list_id {esp.list_id!r}: no such audience for this API key ({exc.detail})")]
        return [_api_failure(tenant.id, "esp mailchimp", "esp.api_key", exc)]
    name = body.get("name") if isinstance(body, dict) else None
    return [
        Finding(tenant.id, "esp mailchimp", OK, "API key accepted"),
        Finding(
            tenant.id, "esp mailchimp audience", OK, f"{esp.list_id}" + (f" ({name!r})" if name else "") + " exists"
        ),
    ]


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
        findings.append(Finding(tenant.id, "webhooks", WARN, f"{base} is plain http: the Mailchimp URL carries the "
                                "webhook secret; serve it over https (see deploy/Caddyfile)"))
    urls = {"mailchimp": f"{base}/hooks/{tenant.id}/mailchimp/<consent.webhook_secret>"} if tenant.esp else {}
    if isinstance(tenant.crm, HubSpotCrm):
        urls["hubspot"] = f"{base}/hooks/{tenant.id}/hubspot"
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
    from sync.config.wiring import build_crm, build_esp

    findings: list[Finding] = []
    try:
        if isinstance(tenant.crm, HubSpotCrm):
            findings += check_hubspot(tenant, build_crm(tenant, base_dir))
        elif isinstance(tenant.crm, CsvCrm):
            findings += check_csv(tenant, tenant.crm, base_dir)
        if isinstance(tenant.esp, MailchimpEsp):
            findings += check_mailchimp(tenant, tenant.esp, build_esp(tenant))
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

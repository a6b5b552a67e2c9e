"""Build a tenant's connectors from its config, through the vendor registry (no vendor is named here)."""

from __future__ import annotations

from pathlib import Path
from typing import overload

from connectors import registry
from connectors.base import CrmConnector, EspConnector
from sync.config.models import TenantCfg


@overload
def resolve(base: Path, p: Path) -> Path: ...
@overload
def resolve(base: Path, p: Path | None) -> Path | None: ...
def resolve(base: Path, p: Path | None) -> Path | None:
    """Paths in a config are relative to the config file's folder."""
    return registry.BuildContext(base).path(p)


def build_context(tenant: TenantCfg, base_dir: Path = Path(".")) -> registry.BuildContext:
    """What a vendor factory may use besides its own block: the config's folder, the properties features read."""
    features = tenant.features
    extra = [*features.numeric_properties, *features.categorical_properties, *features.sensitive_attributes]
    return registry.BuildContext(base_dir, tuple(dict.fromkeys(extra)))


def build_crm(tenant: TenantCfg, base_dir: Path = Path(".")) -> CrmConnector:
    """The tenant's CRM connector, built by its vendor's plugin."""
    connector: CrmConnector = registry.plugin_for(tenant.crm).factory(tenant.crm, build_context(tenant, base_dir))
    return connector


def build_esp(tenant: TenantCfg, base_dir: Path = Path(".")) -> EspConnector | None:
    """The tenant's ESP connector (None without an ``esp:`` block), built by its vendor's plugin."""
    if tenant.esp is None:
        return None
    connector: EspConnector = registry.plugin_for(tenant.esp).factory(tenant.esp, build_context(tenant, base_dir))
    return connector

"""``type:`` -> the vendor package: the one place that lists vendors.

Each vendor folder has a ``plugin.py`` whose ``PLUGIN`` (a :class:`VendorPlugin`) says everything
segsync needs to know about the vendor outside its folder: its config model (the ``crm:``/``esp:``
block, registered into the config schema), how to build its connector, its webhook handler, any
consent evidence it carries (an ESP's own opt-in record), its limits and what `segsync check` reads.

Adding a vendor = a new folder with a ``plugin.py`` + one line in :data:`VENDOR_MODULES` (+ a contract
subject in ``tests/contract/subjects.py``). Plugin modules are imported on first use and import only
light modules (pydantic models, data); the connector itself (and its SDK) is imported by ``factory``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from connectors.base import Contact, Limits
from connectors.hooks import WebhookHandler
from connectors.kit.http import RetrySettings
from connectors.kit.redact import redact
from consent.signals import ConsentSignal
from core.errors import ApiError

#: One line per vendor: the module holding its ``PLUGIN``.
VENDOR_MODULES: tuple[str, ...] = (
    "connectors.hubspot.plugin",
    "connectors.csvfile.plugin",
    "connectors.mailchimp.plugin",
    "connectors.wealthbox.plugin",
    "connectors.redtail.plugin",
)
#: Types users ask for that are not supported yet: refused with "not supported yet" and the list of those that are.
PLANNED: Mapping[str, tuple[str, ...]] = {"crm": ("salesforce",), "esp": ()}

Role = Literal["crm", "esp"]
OK, WARN, FAIL = "ok", "warn", "fail"


class VendorConfig(BaseModel):
    """Base of every vendor's config block: unknown keys are errors, secrets are ``SecretStr``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str  # each vendor narrows it to its Literal name: the discriminator of the crm:/esp: union

    def secrets(self) -> list[str]:
        """The secret values in this block, registered with the redactor when the config loads."""
        return []

    def webhook_settings(self) -> dict[str, str]:
        """What the vendor's webhook handler needs from this block (secrets included: never logged)."""
        return {}


@dataclass(frozen=True)
class BuildContext:
    """What a factory may use besides the vendor's own block."""

    base_dir: Path = Path(".")  # the config file's folder: relative paths are relative to it
    extra_properties: tuple[str, ...] = ()  # CRM properties the tenant's features read

    def path(self, p: Path | None) -> Path | None:
        """A config path, relative to the config file's folder."""
        if p is None:
            return None
        return p if p.is_absolute() else self.base_dir / p


@dataclass(frozen=True)
class Check:
    """One line of ``segsync check`` for a vendor: what was checked, ok|warn|fail, and what was found."""

    what: str
    status: str
    detail: str


Evidence = Callable[[Sequence[Contact], Sequence[ConsentSignal]], list[ConsentSignal]]
Checker = Callable[[Any, Callable[[], Any], BuildContext, RetrySettings], list[Check]]


@dataclass(frozen=True)
class VendorPlugin:
    """Everything about one vendor that the rest of segsync needs (see the module docstring)."""

    name: str  # the config's ``type:``
    role: Role
    title: str  # how people write the vendor's name
    config_model: type[VendorConfig]
    factory: Callable[[Any, BuildContext], Any]  # (its config block, context) -> CrmConnector | EspConnector
    limits: Mapping[str, Limits]  # by plan ("default" when the vendor has one)
    webhook: WebhookHandler | None = None
    evidence: Evidence | None = None  # consent facts the vendor's pulled records carry (an opt-in record)
    check: Checker | None = None  # read-only checks of credentials and resources


@cache
def plugins() -> tuple[VendorPlugin, ...]:
    """Every registered vendor, in :data:`VENDOR_MODULES` order (imported on first call)."""
    found = []
    for module in VENDOR_MODULES:
        plugin = importlib.import_module(module).PLUGIN
        if not isinstance(plugin, VendorPlugin):
            raise TypeError(f"{module}.PLUGIN is not a VendorPlugin")
        found.append(plugin)
    names = [p.name for p in found]
    if len(set(names)) != len(names):
        raise TypeError(f"two plugins share a type name: {names}")
    return tuple(found)


def for_role(role: Role) -> tuple[VendorPlugin, ...]:
    """The vendors that can fill ``role``."""
    return tuple(p for p in plugins() if p.role == role)


def plugin(name: str) -> VendorPlugin:
    """The plugin of config type ``name``; KeyError for an unknown one (the config schema rules those out)."""
    for p in plugins():
        if p.name == name:
            return p
    raise KeyError(name)


def plugin_for(block: Any) -> VendorPlugin:
    """The plugin of a validated ``crm:``/``esp:`` block."""
    return plugin(block.type)


def names() -> tuple[str, ...]:
    """Every registered type name."""
    return tuple(p.name for p in plugins())


def webhook_handlers() -> tuple[WebhookHandler, ...]:
    """The webhook handlers to mount, one per vendor that has webhooks."""
    return tuple(p.webhook for p in plugins() if p.webhook is not None)


def api_failure(what: str, credential: str, exc: ApiError) -> Check:
    """A failed check read, in words: which credential was refused, or that nothing answered."""
    if exc.status in (401, 403):
        why = "refused the credential" if exc.status == 401 else "lacks a permission (scope)"
        return Check(what, FAIL, f"{credential} {why}: {redact(exc)}")
    if exc.status == 0:
        return Check(what, FAIL, f"no answer - check base_url and the network: {redact(exc)}")
    return Check(what, FAIL, redact(exc))


__all__ = [
    "FAIL", "OK", "PLANNED", "VENDOR_MODULES", "WARN", "BuildContext", "Check", "VendorConfig", "VendorPlugin",
    "api_failure", "for_role", "names", "plugin", "plugin_for", "plugins", "webhook_handlers",
]

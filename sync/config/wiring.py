"""Build a tenant's connectors from its config. The only place that knows every connector class."""

from __future__ import annotations

from pathlib import Path
from typing import overload

from connectors.base import CrmConnector, EspConnector
from sync.config.models import CsvCrm, HubSpotCrm, MailchimpEsp, TenantCfg


@overload
def resolve(base: Path, p: Path) -> Path: ...
@overload
def resolve(base: Path, p: Path | None) -> Path | None: ...
def resolve(base: Path, p: Path | None) -> Path | None:
    """Paths in a config are relative to the config file's folder."""
    if p is None:
        return None
    return p if p.is_absolute() else (base / p)


def build_crm(tenant: TenantCfg, base_dir: Path = Path(".")) -> CrmConnector:
    crm = tenant.crm
    if isinstance(crm, HubSpotCrm):
        from connectors.hubspot import HubSpotConnector

        return HubSpotConnector(
            crm.access_token.get_secret_value(),
            crm.base_url,
            plan=crm.plan,
            extra_properties=tuple(
                dict.fromkeys(
                    [
                        *crm.extra_properties,
                        *tenant.features.numeric_properties,
                        *tenant.features.categorical_properties,
                        *tenant.features.sensitive_attributes,
                    ]
                )
            ),
            event_deal_types=tuple(crm.deal_event_types),
            web_lookback_days=crm.web_events_lookback_days,
        )
    if isinstance(crm, CsvCrm):
        from connectors.csvfile import CsvConnector

        return CsvConnector(
            resolve(base_dir, crm.contacts),
            resolve(base_dir, crm.events),
            delimiter=crm.delimiter,
            id_column=crm.id_column,
            email_column=crm.email_column,
            created_column=crm.created_column,
            event_columns=dict(crm.event_columns),
            output=resolve(base_dir, crm.output),
        )
    raise AssertionError(f"unhandled crm type {crm.type}")  # config validation rules this out


def build_esp(tenant: TenantCfg) -> EspConnector | None:
    esp = tenant.esp
    if esp is None:
        return None
    if isinstance(esp, MailchimpEsp):
        from connectors.mailchimp import MailchimpConnector

        return MailchimpConnector(
            esp.api_key.get_secret_value(),
            esp.list_id,
            esp.base_url,
            add_missing_as_pending=esp.add_missing_as_pending,
        )
    raise AssertionError(f"unhandled esp type {esp.type}")

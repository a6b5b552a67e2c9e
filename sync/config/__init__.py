"""The config: pydantic models, the YAML source (line numbers, ``${VAR}``), and wiring config to connectors."""

from sync.config.models import (
    Config,
    CsvCrm,
    HubSpotCrm,
    MailchimpEsp,
    ScoreCfg,
    ServerCfg,
    TenantCfg,
    load_config,
    load_config_text,
)

__all__ = [
    "Config",
    "CsvCrm",
    "HubSpotCrm",
    "MailchimpEsp",
    "ScoreCfg",
    "ServerCfg",
    "TenantCfg",
    "load_config",
    "load_config_text",
]

"""The config: pydantic models, the YAML source (line numbers, ``${VAR}``), and wiring config to connectors.

Each vendor's block (``crm:``/``esp:``) is its own model, in its folder under ``connectors/``; the
registry (:mod:`connectors.registry`) puts them into the schema.
"""

from sync.config.models import Config, ScoreCfg, ServerCfg, TenantCfg, load_config, load_config_text

__all__ = ["Config", "ScoreCfg", "ServerCfg", "TenantCfg", "load_config", "load_config_text"]

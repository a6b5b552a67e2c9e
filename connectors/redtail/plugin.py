"""Redtail as segsync sees it from outside this folder: config, factory, limits, checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connectors.kit.http import RetrySettings
from connectors.redtail import settings as S
from connectors.redtail.config import RedtailCrm
from connectors.registry import OK, BuildContext, Check, VendorPlugin, api_failure
from core.errors import ApiError


def build(cfg: RedtailCrm, context: BuildContext) -> Any:
    """The connector for one tenant's block."""
    from connectors.redtail.connector import RedtailConnector

    return RedtailConnector(
        cfg.api_key.get_secret_value(), cfg.username.get_secret_value(), cfg.password.get_secret_value(),
        cfg.base_url, tag_group=cfg.tag_group, optout_tag_group=cfg.optout_tag_group, page_size=cfg.page_size,
        requests_per_second=cfg.requests_per_second, pull_accounts=cfg.pull_accounts, pull_notes=cfg.pull_notes,
        event_types=cfg.event_types,
    )


def check(cfg: RedtailCrm, connect: Callable[[], Any], context: BuildContext, retry: RetrySettings) -> list[Check]:
    """The user-key exchange, one page of contacts and the tag groups (reads only)."""
    conn = connect()
    conn.client.policy.retry = retry
    try:
        conn.client.login()
        conn.client.contacts(1, None)
        groups = conn.groups()
    except ApiError as exc:
        return [api_failure("crm redtail", "crm.api_key/crm.username/crm.password", exc)]
    ours = len(conn.owned())
    optout = "found" if cfg.optout_tag_group.lower() in groups else "missing (segsync creates it on the first opt-out)"
    return [Check("crm redtail", OK, f"user key obtained; contacts readable; {len(groups)} tag groups "
                  f"({ours} segsync's); opt-out tag group {cfg.optout_tag_group!r} {optout} (write permission "
                  "cannot be checked without writing: a sync names it if missing)")]


PLUGIN = VendorPlugin(
    name="redtail",
    role="crm",
    title="Redtail",
    config_model=RedtailCrm,
    factory=build,
    limits={"default": S.limits()},
    check=check,
)

"""Wealthbox as segsync sees it from outside this folder: config, factory, limits, checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connectors.kit.http import RetrySettings
from connectors.registry import OK, BuildContext, Check, VendorPlugin, api_failure
from connectors.wealthbox import settings as S
from connectors.wealthbox.config import WealthboxCrm
from core.errors import ApiError


def build(cfg: WealthboxCrm, context: BuildContext) -> Any:
    """The connector for one tenant's block."""
    from connectors.wealthbox.connector import WealthboxConnector

    return WealthboxConnector(cfg.access_token.get_secret_value(), cfg.base_url, auth=cfg.auth,
                              tag_prefix=cfg.tag_prefix, per_page=cfg.per_page, rate_limit=cfg.rate_limit or None)


def check(cfg: WealthboxCrm, connect: Callable[[], Any], context: BuildContext, retry: RetrySettings) -> list[Check]:
    """Reads only: the token (``/me``), one page of contacts, the contact custom fields."""
    conn = connect()
    conn.client.policy.retry = retry
    try:
        me = conn.client.me()
        conn.client.contacts(1, 1)
        fields = conn.custom_fields()
    except ApiError as exc:
        return [api_failure("crm wealthbox", "crm.access_token", exc)]
    who = me.get("name") if isinstance(me, dict) else None
    return [Check("crm wealthbox", OK, f"token accepted ({cfg.auth}{', user ' + str(who) if who else ''}); "
                  f"contacts readable; {len(fields)} contact custom fields "
                  f"({sum(1 for f in fields if f.startswith(S.SCORE_FIELD_PREFIX))} for segsync scores)")]


PLUGIN = VendorPlugin(
    name="wealthbox",
    role="crm",
    title="Wealthbox",
    config_model=WealthboxCrm,
    factory=build,
    limits={"default": S.LIMITS},
    check=check,
)

"""HubSpot as segsync sees it from outside this folder: config, factory, webhook, limits, checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connectors.hubspot import settings as S
from connectors.hubspot.config import HubSpotCrm
from connectors.hubspot.webhook import HubSpotWebhook
from connectors.kit.http import RetrySettings
from connectors.registry import OK, WARN, BuildContext, Check, VendorPlugin, api_failure
from core.errors import ApiError


def build(cfg: HubSpotCrm, context: BuildContext) -> Any:
    """The connector for one tenant's block (the SDK is imported here, not at config time)."""
    from connectors.hubspot.connector import HubSpotConnector

    return HubSpotConnector(
        cfg.access_token.get_secret_value(),
        cfg.base_url,
        plan=cfg.plan,
        extra_properties=tuple(dict.fromkeys([*cfg.extra_properties, *context.extra_properties])),
        event_deal_types=tuple(cfg.deal_event_types),
        web_lookback_days=cfg.web_events_lookback_days,
        adopt_properties=tuple(cfg.adopt_properties),
        settle_seconds=cfg.search_settle_seconds,
    )


def check(cfg: HubSpotCrm, connect: Callable[[], Any], context: BuildContext, retry: RetrySettings) -> list[Check]:
    """One read per scope class; stop at the first 401 (every further call would say the same)."""
    client = connect().client
    client.policy.retry = retry
    reads: list[tuple[str, Callable[[], Any]]] = [
        ("crm.objects.contacts.read", lambda: client.list_contacts(["email"], None)),
        ("crm.schemas.contacts.read", client.contact_properties),
        ("crm.objects.deals.read", lambda: client.list_deals(None)),
        ("communication_preferences.read_write", client.subscription_definitions),
    ]
    passed: list[str] = []
    found: list[Check] = []
    for scope, read in reads:
        try:
            read()
        except ApiError as exc:
            found.append(api_failure(f"crm hubspot ({scope})", "crm.access_token", exc))
            if exc.status != 403:
                return found
            continue
        passed.append(scope)
    if passed:
        found.insert(0, Check("crm hubspot", OK if not found else WARN,
                              f"token accepted; read with scopes {', '.join(passed)} (write scopes cannot be "
                              "checked without writing: a sync names any it lacks)"))
    return found


PLUGIN = VendorPlugin(
    name="hubspot",
    role="crm",
    title="HubSpot",
    config_model=HubSpotCrm,
    factory=build,
    limits={plan: S.plan_limits(plan) for plan in S.PLAN_RATES},
    webhook=HubSpotWebhook(),
    check=check,
)

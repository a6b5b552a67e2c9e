"""Mailchimp as segsync sees it from outside this folder: config, factory, webhook, opt-in evidence, checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from connectors.base import Contact
from connectors.kit.http import RetrySettings
from connectors.mailchimp import settings as S
from connectors.mailchimp.config import MailchimpEsp
from connectors.mailchimp.webhook import MailchimpWebhook
from connectors.registry import FAIL, OK, BuildContext, Check, VendorPlugin, api_failure
from consent.signals import BASIS_FROM_POLICY, ConsentSignal
from core.errors import ApiError
from core.times import parse_time_or_none

EMAIL_MARKETING = "email_marketing"


def build(cfg: MailchimpEsp, context: BuildContext) -> Any:
    """The connector for one tenant's block (the SDK is imported here, not at config time)."""
    from connectors.mailchimp.connector import MailchimpConnector

    return MailchimpConnector(
        cfg.api_key.get_secret_value(), cfg.list_id, cfg.base_url, add_missing_as_pending=cfg.add_missing_as_pending,
        adopt=tuple(cfg.adopt),
    )


def optin_grants(contacts: Sequence[Contact], seen: Sequence[ConsentSignal]) -> list[ConsentSignal]:
    """Evidence of opt-in from Mailchimp itself: a subscribed member with its opt-in time (and IP).

    Only a member Mailchimp reports as ``subscribed`` with its own opt-in record (``timestamp_opt``) counts;
    nothing else is ever taken as a grant: a member an admin or an import added has no opt-in time, and
    a sign-up time alone does not say the person confirmed.
    """
    have = {(s.email, s.purpose, s.state) for s in seen}
    out = []
    for c in contacts:
        if c.status != "subscribed" or not c.email or (c.email, EMAIL_MARKETING, "granted") in have:
            continue
        when = parse_time_or_none(c.properties.get("timestamp_opt"))
        if when is None:
            continue
        evidence = {"status": "subscribed", "timestamp_opt": when.isoformat()}
        if c.properties.get("ip_opt"):
            evidence["ip_opt"] = str(c.properties["ip_opt"])
        event_id = f"{c.source}:optin:{c.vendor_id}:{when.isoformat()}"
        out.append(ConsentSignal(c.email, EMAIL_MARKETING, "granted", BASIS_FROM_POLICY, c.source, when,
                                 evidence=evidence, vendor_event_id=event_id))
    return out


def check(cfg: MailchimpEsp, connect: Callable[[], Any], context: BuildContext, retry: RetrySettings) -> list[Check]:
    """The key is accepted and the audience (list id) exists for it."""
    connector = connect()
    connector.client.policy.retry = retry
    try:
        body = connector.client.get_list(cfg.list_id) or {}
    except ApiError as exc:
        if exc.status == 404:
            return [Check("esp mailchimp audience", FAIL,
                          f"esp.list_id {cfg.list_id!r}: no such audience for this API key ({exc.detail})")]
        return [api_failure("esp mailchimp", "esp.api_key", exc)]
    name = body.get("name") if isinstance(body, dict) else None
    return [Check("esp mailchimp", OK, "API key accepted"),
            Check("esp mailchimp audience", OK, f"{cfg.list_id}" + (f" ({name!r})" if name else "") + " exists")]


PLUGIN = VendorPlugin(
    name="mailchimp",
    role="esp",
    title="Mailchimp",
    config_model=MailchimpEsp,
    factory=build,
    limits={"default": S.LIMITS},
    webhook=MailchimpWebhook(),
    evidence=optin_grants,
    check=check,
)

"""The ``crm: {type: hubspot, ...}`` block of a tenant."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from connectors.hubspot.settings import SEARCH_SETTLE_SECONDS
from connectors.registry import VendorConfig


class HubSpotCrm(VendorConfig):
    """HubSpot CRM v3 with a private-app token (or an OAuth access token)."""

    type: Literal["hubspot"]
    access_token: SecretStr
    base_url: str = "https://api.hubapi.com"
    plan: Literal["free", "starter", "professional", "enterprise", "unlimited"] = "starter"
    client_secret: SecretStr | None = None  # the app's secret, to check v3 webhook signatures
    portal_id: int | None = Field(default=None, gt=0)  # the account (portalId); webhooks for another are refused
    extra_properties: list[str] = Field(default_factory=list)
    deal_event_types: list[str] = Field(default_factory=lambda: ["deposit", "upgrade"])
    # How far back the first read of web analytics events reaches (Enterprise portals); later reads are incremental.
    web_events_lookback_days: int = Field(365, ge=1, le=3650)
    # Existing contact properties segsync may write to although it did not create them (by exact name); any
    # other existing property under one of segsync's names is refused, never overwritten.
    adopt_properties: list[str] = Field(default_factory=list)
    # How far behind a run's start an incremental search reads (HubSpot indexes writes with a lag of seconds).
    # The default is safe for HubSpot; a portal whose search has no lag (the sandbox) may shorten it.
    search_settle_seconds: float = Field(SEARCH_SETTLE_SECONDS, ge=0, le=3600)
    # The email subscription type ids that are marketing (an opt-out of one withdraws email_marketing). Unset:
    # read from the portal's subscription definitions, as opt-out propagation does (never One-to-One/transactional).
    marketing_subscriptions: list[int] | None = None

    def secrets(self) -> list[str]:
        return [s.get_secret_value() for s in (self.access_token, self.client_secret) if s is not None]

    def webhook_settings(self) -> dict[str, str]:
        settings = {"client_secret": self.client_secret.get_secret_value()} if self.client_secret is not None else {}
        if self.portal_id is not None:
            settings["portal_id"] = str(self.portal_id)
        if self.marketing_subscriptions is not None:
            settings["marketing_subscriptions"] = ",".join(str(i) for i in self.marketing_subscriptions)
        else:  # the handler reads which types are marketing from the portal (cached), as the connector does
            settings.update(access_token=self.access_token.get_secret_value(), base_url=self.base_url, plan=self.plan)
        return settings

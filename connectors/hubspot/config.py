"""The ``crm: {type: hubspot, ...}`` block of a tenant."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

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

    def secrets(self) -> list[str]:
        return [s.get_secret_value() for s in (self.access_token, self.client_secret) if s is not None]

    def webhook_settings(self) -> dict[str, str]:
        settings = {"client_secret": self.client_secret.get_secret_value()} if self.client_secret is not None else {}
        if self.portal_id is not None:
            settings["portal_id"] = str(self.portal_id)
        return settings

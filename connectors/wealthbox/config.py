"""The ``crm: {type: wealthbox, ...}`` block of a tenant."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from connectors.registry import VendorConfig
from connectors.wealthbox import settings as S


class WealthboxCrm(VendorConfig):
    """Wealthbox CRM API v1 with an API access token (or an OAuth access token: ``auth: oauth``)."""

    type: Literal["wealthbox"]
    access_token: SecretStr  # Settings > API Access, or an OAuth access token with scopes login and data
    auth: Literal["api_token", "oauth"] = "api_token"  # api_token: ACCESS_TOKEN header; oauth: Bearer
    base_url: str = S.DEFAULT_BASE_URL
    per_page: int = Field(S.DEFAULT_PER_PAGE, ge=1, le=S.MAX_PER_PAGE)  # Wealthbox's documented maximum is 100
    tag_prefix: str = Field("segsync:", min_length=1, max_length=40)  # segsync's tags; only these are ever removed
    # Requests per 5 minutes the client paces itself to (INFERRED 300; 0 = unpaced, for the sandbox only).
    rate_limit: int = Field(S.RATE_LIMIT, ge=0)

    def secrets(self) -> list[str]:
        return [self.access_token.get_secret_value()]

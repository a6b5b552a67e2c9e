"""The ``crm: {type: redtail, ...}`` block of a tenant."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from connectors.redtail import settings as S
from connectors.registry import VendorConfig


class RedtailCrm(VendorConfig):
    """Redtail's public API v1: an API key plus one Redtail user's credentials (exchanged once for a user key)."""

    type: Literal["redtail"]
    api_key: SecretStr  # issued by Redtail to the integration
    username: SecretStr  # the Redtail user segsync acts as (its role sets what segsync may read and write)
    password: SecretStr
    base_url: str = S.DEFAULT_BASE_URL
    # Records per page of /contacts: Redtail's default is 50; above the (INFERRED) cap of 200 is refused.
    page_size: int = Field(S.PAGE_SIZE, ge=1, le=S.PAGE_SIZE)
    # Redtail documents no rate limit: segsync paces itself (0 = no pacing, for a local sandbox only).
    requests_per_second: float = Field(S.REQUESTS_PER_SECOND, ge=0)
    tag_group: str = Field(S.DEFAULT_TAG_GROUP, min_length=1, max_length=60)  # prefix of segsync's tag groups
    optout_tag_group: str = Field(S.DEFAULT_OPTOUT_TAG_GROUP, min_length=1, max_length=100)  # the firm's "no email"
    pull_accounts: bool = True  # account balances: one read per changed contact
    pull_notes: bool = True  # notes as engagement events: one read per changed contact
    # note category / activity subject (any case) -> segsync event type; others become "note"/"activity"
    event_types: dict[str, str] = Field(default_factory=lambda: {"deposit": "deposit", "account upgrade": "upgrade"})

    @field_validator("tag_group", "optout_tag_group")
    @classmethod
    def _no_separator(cls, value: str) -> str:
        if ";" in value or not value.strip():
            raise ValueError("must be a non-blank name without ';'")
        return value.strip()

    def secrets(self) -> list[str]:
        return [s.get_secret_value() for s in (self.api_key, self.username, self.password)]

"""The ``esp: {type: mailchimp, ...}`` block of a tenant."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from connectors.registry import VendorConfig


class MailchimpEsp(VendorConfig):
    """Mailchimp Marketing API 3.0; the data center is taken from the key's suffix unless base_url is set."""

    type: Literal["mailchimp"]
    api_key: SecretStr
    list_id: str = Field(min_length=1)
    base_url: str | None = None
    add_missing_as_pending: bool = False  # only then are absent contacts invited by double opt-in
    # Existing tags/static segments segsync may add members to although it did not create them (by exact name,
    # e.g. "segsync:churn_watch" made by hand); any other existing tag under one of segsync's names is refused.
    adopt: list[str] = Field(default_factory=list)

    @field_validator("api_key")
    @classmethod
    def _has_dc(cls, v: SecretStr) -> SecretStr:
        if "-" not in v.get_secret_value():
            raise ValueError("a Mailchimp API key ends with -<data center>, e.g. ...-us6")
        return v

    def secrets(self) -> list[str]:
        return [self.api_key.get_secret_value()]

    def webhook_settings(self) -> dict[str, str]:
        return {"list_id": self.list_id}

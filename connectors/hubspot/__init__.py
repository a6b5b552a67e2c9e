"""HubSpot CRM connector (hubspot-api-client + the shared HTTP policy).

Scopes a private app needs: see :data:`connectors.hubspot.settings.REQUIRED_SCOPES`.
The connector (and so the SDK) is imported on first use: the config schema reads only ``config``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.hubspot.client import OAuthRefresh
    from connectors.hubspot.connector import HubSpotConnector

__all__ = ["HubSpotConnector", "OAuthRefresh"]


def __getattr__(name: str) -> Any:
    if name == "HubSpotConnector":
        from connectors.hubspot.connector import HubSpotConnector

        return HubSpotConnector
    if name == "OAuthRefresh":
        from connectors.hubspot.client import OAuthRefresh

        return OAuthRefresh
    raise AttributeError(f"module 'connectors.hubspot' has no attribute {name!r}")

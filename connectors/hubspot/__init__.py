"""HubSpot CRM connector (hubspot-api-client + the shared HTTP policy).

Scopes a private app needs: see :data:`connectors.hubspot.settings.REQUIRED_SCOPES`.
"""

from connectors.hubspot.client import OAuthRefresh
from connectors.hubspot.connector import HubSpotConnector

__all__ = ["HubSpotConnector", "OAuthRefresh"]

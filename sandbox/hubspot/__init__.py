"""A HubSpot CRM v3 simulator: contacts, deals, properties, lists, subscriptions, web events."""

from sandbox.hubspot.sim import HubSpotSim

__all__ = ["HubSpotSim"]

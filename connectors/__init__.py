"""Vendor connectors behind small shared interfaces (see connectors.base), and the one HTTP layer."""

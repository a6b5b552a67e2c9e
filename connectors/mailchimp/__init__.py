"""Mailchimp Marketing API 3.0: pull members and engagement, push tags and static segments, never resubscribe.

Roles: ``settings`` (facts as data), ``client`` (the SDK and raw HTTP under one policy),
``mapping`` (vendor records <-> segsync records), ``push`` (tag and segment writes), ``connector``.
The connector (and so the SDK) is imported on first use: the config schema reads only ``config``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.mailchimp.client import MailchimpClient
    from connectors.mailchimp.connector import MailchimpConnector
    from connectors.mailchimp.mapping import subscriber_hash

__all__ = ["MailchimpClient", "MailchimpConnector", "subscriber_hash"]
_HOME = {"MailchimpClient": "client", "MailchimpConnector": "connector", "subscriber_hash": "mapping"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"connectors.mailchimp.{_HOME[name]}"), name)
    raise AttributeError(f"module 'connectors.mailchimp' has no attribute {name!r}")

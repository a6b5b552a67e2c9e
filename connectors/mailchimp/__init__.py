"""Mailchimp Marketing API 3.0: pull members and engagement, push tags and static segments, never resubscribe.

Roles: ``settings`` (facts as data), ``client`` (the SDK and raw HTTP under one policy),
``mapping`` (vendor records <-> segsync records), ``push`` (tag and segment writes), ``connector``.
"""

from connectors.mailchimp.client import MailchimpClient
from connectors.mailchimp.connector import MailchimpConnector
from connectors.mailchimp.mapping import subscriber_hash

__all__ = ["MailchimpClient", "MailchimpConnector", "subscriber_hash"]

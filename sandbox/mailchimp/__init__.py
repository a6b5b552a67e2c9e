"""A Mailchimp Marketing API 3.0 simulator for the sandbox (see :class:`MailchimpSim`)."""

from sandbox.mailchimp.app import MailchimpSim
from sandbox.mailchimp.state import subscriber_hash

__all__ = ["MailchimpSim", "subscriber_hash"]

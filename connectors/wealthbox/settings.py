"""Wealthbox's endpoints, endpoint classes, limits and marks: data, no I/O (sources in the package docstring)."""

from __future__ import annotations

from connectors.base import Limits

SOURCE = "wealthbox"
DEFAULT_BASE_URL = "https://api.crmworkspace.com/v1"

# Endpoint classes: the keys of the call stats.
EP_ME = "me"
EP_CONTACTS = "contacts.list"
EP_CONTACT = "contacts.get"
EP_UPDATE = "contacts.update"
EP_CATEGORIES = "categories"
EP_EVENTS = "events.list"
EP_OPPORTUNITIES = "opportunities.list"
WRITE_ENDPOINTS = (EP_UPDATE,)

MAX_PER_PAGE = 100  # documented maximum of ``per_page`` (default 25)
DEFAULT_PER_PAGE = 100
RATE_LIMIT = 300  # requests per window: INFERRED (what wealthbox-cli paces itself to)
RATE_WINDOW_SECONDS = 300.0
CLOCK_SKEW_SECONDS = 120  # ``updated_since`` reads start this far before the last run started

CONTACT_TYPES = ("Person", "Household", "Organization", "Trust")
#: The firm's own "do not email" mark (INFERRED: a tag, as the simulator models it; Wealthbox documents no
#: email opt-out field in the contact API). Pulled as a withdrawal of email_marketing; added on an opt-out.
DO_NOT_EMAIL_TAG = "Do Not Email"
SCORE_FIELD_PREFIX = "segsync_score_"  # custom field names segsync writes scores to (created by an admin)
WON_STAGE = "won"  # an opportunity counts as money only when its stage is (named) Won

LIMITS = Limits(batch_size=1, requests_per_window=RATE_LIMIT, window_seconds=RATE_WINDOW_SECONDS,
                page_size=DEFAULT_PER_PAGE)

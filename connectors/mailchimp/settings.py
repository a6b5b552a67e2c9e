"""Mailchimp facts as data: endpoints, limits, statuses and the fields segsync reads.

Nothing here does I/O. Numbers come from VENDORS.md (Mailchimp's published limits).
"""

from __future__ import annotations

from datetime import timedelta

from connectors.base import Limits

VENDOR = "mailchimp"
SOURCE = "mailchimp"
DEFAULT_BASE_URL = "https://{dc}.api.mailchimp.com/3.0"

# Mailchimp allows a request up to 120 s; a shorter read timeout makes slow 1,000-row pages fail and retry.
TIMEOUT = (5.0, 120.0)  # (connect, read) seconds
MAX_CONNECTIONS = 10  # simultaneous connections per API key; one more gets a 429
PAGE_SIZE = 1000  # members / email activity per read page (Mailchimp's maximum)
BATCH_MEMBERS = 500  # POST /lists/{id} members, segment members_to_add / members_to_remove
BATCH_OPERATIONS = 5000  # operations per POST /batches job (segsync's own cap; Mailchimp caps payload size)
SPLIT_CALLS = 48  # calls one segment update may spend isolating a refused record (bounds a global refusal's cost)
BATCH_CALLS = 4  # what one /batches job costs at best: submit, two status polls, the results download

# Polling a /batches job: first wait, growth factor, cap, and a total budget before giving up.
POLL_FIRST = 0.2
POLL_FACTOR = 2.0
POLL_MAX = 15.0
POLL_BUDGET = 900.0

# On an incremental engagement pull, re-read the activity of campaigns sent this long before the
# cursor: opens and clicks keep arriving for weeks after a send.
ENGAGEMENT_LOOKBACK_DAYS = 45
SENDING_GRACE = timedelta(days=1)  # activity re-read behind the cursor (campaigns still sending last run)
ACTIVITY_WORKERS = 4  # campaigns whose activity is read at once (of the key's 10 connections)

# Cursors step back this much: Mailchimp does not document whether ``since_last_changed`` and
# ``since`` are inclusive, so the boundary second is read twice rather than risk never.
CURSOR_OVERLAP = timedelta(seconds=1)

# How long a list of unsubscribed/cleaned members stays trusted inside one connector.
STATUS_INDEX_TTL = 600.0

# Statuses that put a member in "compliance state": segsync never tags, segments or resubscribes them.
BLOCKED_STATUSES = ("unsubscribed", "cleaned")
WITHDRAWN_STATUSES = BLOCKED_STATUSES
PENDING = "pending"  # the only status segsync ever gives a new member (double opt-in)
UNSUBSCRIBED = "unsubscribed"  # the only status segsync ever gives an existing member (suppress)

COMPLIANCE_TITLE = "Member In Compliance State"
NOT_IN_AUDIENCE = "not in the audience"

# Endpoint classes: the keys of CallStats.calls.
EP_LIST = "list"
EP_MEMBERS = "members.list"
EP_MEMBER = "members.get"
EP_MEMBER_WRITE = "members.update"
EP_TAGS = "members.tags"
EP_BATCH_SUBSCRIBE = "lists.batch"
EP_SEGMENTS = "segments.list"
EP_SEGMENT_WRITE = "segments.update"
EP_BATCHES = "batches.submit"
EP_BATCH_STATUS = "batches.status"
EP_BATCH_RESULTS = "batches.results"
EP_CAMPAIGNS = "campaigns.list"
EP_ACTIVITY = "reports.email_activity"
WRITE_ENDPOINTS = frozenset({EP_MEMBER_WRITE, EP_TAGS, EP_BATCH_SUBSCRIBE, EP_SEGMENT_WRITE, EP_BATCHES})

MEMBER_FIELDS: tuple[str, ...] = (
    "members.id",
    "members.email_address",
    "members.unique_email_id",
    "members.status",
    "members.merge_fields",
    "members.tags",
    "members.member_rating",
    "members.last_changed",
    "members.timestamp_opt",
    "members.timestamp_signup",
    "members.ip_opt",
    "members.unsubscribe_reason",
    "members.language",
    "members.vip",
    "total_items",
)

LIMITS = Limits(
    batch_size=BATCH_MEMBERS,
    requests_per_window=MAX_CONNECTIONS,  # Mailchimp limits concurrency, not a rate; see max_connections
    window_seconds=1.0,
    page_size=PAGE_SIZE,
    max_connections=MAX_CONNECTIONS,
    job_size=BATCH_OPERATIONS,
)


def base_url_for(api_key: str) -> str:
    """``https://<dc>.api.mailchimp.com/3.0`` from the key's ``-<dc>`` suffix (ValueError if it has none)."""
    _, sep, dc = api_key.rpartition("-")
    if not sep or not dc.isalnum():
        raise ValueError("a Mailchimp API key ends with -<data center>, e.g. ...-us6")
    return DEFAULT_BASE_URL.format(dc=dc)

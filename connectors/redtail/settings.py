"""Redtail facts as data: endpoints, endpoint classes, limits, what segsync names its objects. No I/O."""

from __future__ import annotations

from connectors.base import Limits

VENDOR = "redtail"
SOURCE = "redtail"
DEFAULT_BASE_URL = "https://crm.redtailtechnology.com/api/public/v1"

PAGE_SIZE = 200  # INFERRED cap of ``pagesize`` (the documented default is 50)
DEFAULT_PAGE_SIZE = 50
# Redtail documents no rate limit; segsync paces itself at this many requests per second by default.
REQUESTS_PER_SECOND = 10.0
# Redtail has no batch write: every tag membership and UDF value is its own call.
BATCH_SIZE = 1

# What /contacts returns with each contact (as the ``include`` header): no extra call per contact.
INCLUDES = "emails,family,tag_memberships,activities"

# Endpoint classes: the keys of the call stats.
EP_AUTH = "authentication"
EP_CONTACTS = "contacts.list"
EP_ACCOUNTS = "accounts.list"
EP_NOTES = "notes.list"
EP_TAG_GROUPS = "tag_groups"
EP_TAG_GROUPS_CREATE = "tag_groups.create"
EP_MEMBERSHIPS = "tag_memberships"
EP_MEMBERSHIP_ADD = "tag_memberships.add"
EP_MEMBERSHIP_REMOVE = "tag_memberships.remove"
EP_UDF_FIELDS = "udf_fields"
EP_UDF_FIELDS_CREATE = "udf_fields.create"
EP_UDFS = "udfs"
EP_UDF_CREATE = "udfs.create"
EP_UDF_UPDATE = "udfs.update"
WRITE_ENDPOINTS = (EP_TAG_GROUPS_CREATE, EP_MEMBERSHIP_ADD, EP_MEMBERSHIP_REMOVE, EP_UDF_FIELDS_CREATE,
                   EP_UDF_CREATE, EP_UDF_UPDATE)

# What segsync writes. Its tag groups carry this description: the only ones it ever adds to or removes from.
OWNED_MARK = "Created by segsync (predictive segments); segsync manages its memberships."
# The opt-out group, when the firm had none and segsync created it: members must never be emailed.
OPTOUT_MARK = "Do not email: people who opted out (created by segsync; segsync only ever adds members)."
SCORE_PREFIX = "segsync_score_"
DEFAULT_TAG_GROUP = "segsync"
DEFAULT_OPTOUT_TAG_GROUP = "Do Not Email"  # INFERRED: the firm convention the simulator models

# Contact properties segsync sets from Redtail (household id: connectors.base.HOUSEHOLD_PROPERTY).
PROP_AGE = "age"
PROP_BIRTH_DATE = "birth_date"
PROP_BALANCE = "account_balance_total"
PROP_ACCOUNTS = "account_count"
PROP_STATUS = "status_id"
PROP_CATEGORY = "category_id"
PROP_TAGS = "redtail_tags"
FAMILY_PREFIX = "family:"  # household id = "family:<Redtail family id>"

# A 403 names the permission: the Redtail user behind the key needs these rights.
PERMISSIONS = "the Redtail user's role must allow reading contacts and updating contacts (tags, user-defined fields)"

CLOCK_SKEW_SECONDS = 5.0  # the first incremental window starts this long before the full pull began


def limits(requests_per_second: float = REQUESTS_PER_SECOND, page_size: int = PAGE_SIZE) -> Limits:
    """Redtail's :class:`Limits`: one record per write call, ``page_size`` per read page."""
    per_minute = int(requests_per_second * 60) if requests_per_second > 0 else 1_000_000  # 0: no pacing
    return Limits(batch_size=BATCH_SIZE, requests_per_window=max(1, per_minute), window_seconds=60.0,
                  page_size=page_size)

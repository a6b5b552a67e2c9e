"""HubSpot facts as data: endpoints, plan limits, the properties segsync reads, the scopes it needs.

Nothing here does I/O. Numbers come from VENDORS.md (HubSpot's published limits); where a
client-side rate is lower than the vendor's, the comment says why.
"""

from __future__ import annotations

from connectors.base import Limits

VENDOR = "hubspot"
SOURCE = "hubspot"
DEFAULT_BASE_URL = "https://api.hubapi.com"
TOKEN_URL = "https://api.hubapi.com/oauth/v1/token"

# Requests per 10-second rolling window, by plan. "unlimited" is the sandbox's convenience plan:
# no client-side throttling at all (tests and demos against a local simulator).
PLAN_RATES: dict[str, int | None] = {
    "free": 100,
    "starter": 100,
    "professional": 190,
    "enterprise": 190,
    "unlimited": None,
}
WINDOW_SECONDS = 10.0
OAUTH_APP_RATE = 100  # a public OAuth app's own limit per account, on any tier (private apps: by plan)
SEARCH_PER_SECOND = 4  # search has its own, per-second bucket (about 4-5 requests/s)

BATCH_SIZE = 100  # inputs per batch write call
# Calls one refused batch may cost to isolate its bad inputs: bisecting 100 inputs down to single
# records costs at most 198 more calls, so this never stops the search within one batch of 100.
SPLIT_CALLS = 2 * BATCH_SIZE
PAGE_SIZE = 100  # list endpoint maximum
SEARCH_PAGE_SIZE = 200  # search endpoint maximum
SEARCH_MAX_RESULTS = 10_000  # a search query stops here; our keyset paging never relies on `after`
EVENTS_PAGE_SIZE = 100

# Endpoint classes: the keys of CallStats.calls and of the rate-limit buckets.
EP_LIST = "contacts.list"
EP_SEARCH = "contacts.search"
EP_BATCH_UPDATE = "contacts.batch_update"
EP_UPDATE = "contacts.update"
EP_PROPERTIES = "properties"
EP_EVENTS = "events"
EP_DEALS = "deals.list"
EP_DEALS_SEARCH = "deals.search"
EP_PIPELINES = "pipelines"
EP_COMM_PREFS = "communication_preferences"
EP_COMM_PREFS_WRITE = "communication_preferences.batch_write"
EP_OAUTH = "oauth"

# The contact properties every pull asks for (never "all properties": a long list makes a 414).
CONTACT_PROPERTIES: tuple[str, ...] = (
    "email",
    "firstname",
    "lastname",
    "lifecyclestage",
    "createdate",
    "lastmodifieddate",
    "hs_object_id",
    "hs_email_optout",
    "hs_additional_emails",
    "hs_merged_object_ids",
    "hs_email_last_open_date",
    "hs_email_last_click_date",
    "hs_email_last_send_date",
    # Counts of marketing emails delivered, opened and clicked (HubSpot's "Email information" properties):
    # the last dates alone give at most one event of each kind per run.
    "hs_email_delivered",
    "hs_email_open",
    "hs_email_click",
    "hs_analytics_num_page_views",
    "hs_analytics_num_visits",
    "hs_analytics_last_visit_timestamp",
)
# HubSpot stamps the date a contact entered each lifecycle stage; these become "lifecycle_stage" events.
LIFECYCLE_STAGES: tuple[str, ...] = ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead",
                                     "opportunity", "customer", "evangelist", "other")
LIFECYCLE_DATE_PROPERTIES: tuple[str, ...] = tuple(f"hs_lifecyclestage_{s}_date" for s in LIFECYCLE_STAGES)
MODIFIED_PROPERTY = "lastmodifieddate"
DEAL_PROPERTIES: tuple[str, ...] = ("dealtype", "amount", "closedate", "dealstage", "hs_lastmodifieddate")
# Deals changed since the last run are searched; past this many, re-listing them all (100 per page, with
# their contact associations) is cheaper than reading each changed deal's associations one call at a time.
DEAL_CHANGES_PER_RUN = 100
# A count property at most this high becomes that many events (a guard against a corrupt value).
MAX_COUNT_EVENTS = 1000
PAGE_VIEW_EVENT = "e_visited_page"
# The first web-events window reaches this far back (HubSpot keeps analytics events for a limited time, and
# asking since 1970 pages through everything); later windows start where the last one ended.
WEB_EVENTS_LOOKBACK_DAYS = 365
# A portal that refused the events API (below Enterprise) is asked again only after this long (an upgrade).
WEB_EVENTS_RECHECK_DAYS = 30

# What segsync writes: a group, a multi-select segment property, one number property per score.
PROPERTY_GROUP = "segsync"
PROPERTY_GROUP_LABEL = "segsync"
SCORE_PREFIX = "segsync_score_"
# How segsync's record of what it created (connectors.base.ObjectLedger) names a contact property.
PROPERTY_KIND, PROPERTY_SCOPE = "property", "contacts"

# Opting a person out is recorded with this legal basis and explanation (GDPR portals require both).
UNSUBSCRIBE_LEGAL_BASIS = "LEGITIMATE_INTEREST_OTHER"
UNSUBSCRIBE_EXPLANATION = "Opted out via segsync preference center"

# Search results lag writes by a few seconds (HubSpot indexes asynchronously): an incremental pull
# only reads contacts modified at least this long before the run started; the next run takes the rest.
SEARCH_SETTLE_SECONDS = 30.0
# Our clock and HubSpot's may differ a little: the first incremental window starts this long before
# the full pull began, so a contact edited during the full pull is never lost (at worst read twice).
CLOCK_SKEW_SECONDS = 5.0

# A periodic sweep (archived + merged contacts, which search never shows) every N incremental runs.
SWEEP_EVERY_RUNS = 24

# Refresh an OAuth access token this many seconds before it expires (HubSpot's last ~30 min).
REFRESH_AHEAD_SECONDS = 300.0

# The scopes segsync needs, for the README and for error messages.
REQUIRED_SCOPES: tuple[str, ...] = (
    "crm.objects.contacts.read",  # pull contacts
    "crm.objects.contacts.write",  # push segment/score properties, clear them on opt-out
    "crm.schemas.contacts.read",  # read property definitions (ensure_schema)
    "crm.schemas.contacts.write",  # create the segsync group and properties
    "crm.objects.deals.read",  # won deposits and upgrades as engagement; deal pipelines (which stages are won)
    "communication_preferences.read_write",  # read the subscription types (which are marketing)
    "communication_preferences.statuses.batch.write",  # unsubscribe opted-out people, 100 per v4 batch write
    # Web analytics events (GET /events/v3/events) need an Enterprise hub, not an extra scope.
)


# The scope each endpoint class needs, so a 403 can say which one is missing.
ENDPOINT_SCOPES: dict[str, str] = {
    EP_LIST: "crm.objects.contacts.read",
    EP_SEARCH: "crm.objects.contacts.read",
    EP_BATCH_UPDATE: "crm.objects.contacts.write",
    EP_UPDATE: "crm.objects.contacts.write",
    EP_PROPERTIES: "crm.schemas.contacts.write",
    EP_DEALS: "crm.objects.deals.read",
    EP_DEALS_SEARCH: "crm.objects.deals.read",
    EP_PIPELINES: "crm.objects.deals.read",
    EP_COMM_PREFS: "communication_preferences.read_write",
    EP_COMM_PREFS_WRITE: "communication_preferences.statuses.batch.write",
}


def plan_limits(plan: str) -> Limits:
    """The :class:`Limits` for a HubSpot plan (unknown plans are a caller error)."""
    if plan not in PLAN_RATES:
        raise KeyError(plan)
    rate = PLAN_RATES[plan] or 1_000_000
    return Limits(
        batch_size=BATCH_SIZE,
        requests_per_window=rate,
        window_seconds=WINDOW_SECONDS,
        page_size=PAGE_SIZE,
        search_per_second=SEARCH_PER_SECOND,
    )

"""Local simulators of the HubSpot CRM v3 and Mailchimp Marketing 3.0 APIs, seeded with a synthetic book.

    with start_sandbox(contacts=300, seed=11) as sb:
        sb.hubspot_url, sb.hubspot_token        # http://127.0.0.1:P1, "pat-na1-..."
        sb.mailchimp_url, sb.mailchimp_key      # http://127.0.0.1:P2/3.0, "<32 hex>-us6"
        sb.faults["hubspot"].set(storm=3)       # the next three HubSpot calls get 429
        sb.calls.writes("hubspot")              # every non-GET call so far
        sb.calls.by_endpoint("hubspot")         # Counter of "METHOD path"
        sb.hubspot.fail_batch_inputs(rate=0.1, seed=1)   # 207s with seeded per-record failures
        sb.hubspot.merge_contacts(a, b); sb.hubspot.archive_contacts([c]); sb.hubspot.touch_contacts(ids, at)
        sb.book.truth                           # hidden outcomes: for tests and benchmarks only
        load_config_text(sb.config_yaml())      # a config ``segsync validate`` accepts
        sb.wealthbox.url, sb.wealthbox.access_token   # Wealthbox on the same book, started on first use
        sb.config_yaml(crm="wealthbox")         # the same tenant with Wealthbox as its CRM
        sb.redtail.url, sb.redtail.api_key      # Redtail on the same book, started on first use
        sb.config_yaml(crm="redtail")           # the same tenant with Redtail as its CRM

``run_sandbox_forever(contacts, seed)`` is what ``segsync sandbox`` calls. Only tests, benchmarks and
the CLI's ``sandbox``/``demo`` commands import this package.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from sandbox._book_people import Person
from sandbox.book import Book, BookEvent, Campaign, Truth, generate_book, paused_gc
from sandbox.common import Call, CallLog, Faults, ServerThread, instrument
from sandbox.hubspot import HubSpotSim

if TYPE_CHECKING:
    from sandbox.mailchimp import MailchimpSim
    from sandbox.redtail import RunningRedtail
    from sandbox.wealthbox import RunningWealthbox

# The scores of :meth:`Sandbox.config_yaml`, HubSpot's and Wealthbox's (custom fields exist for them).
SANDBOX_SCORES = ("upgrade_propensity", "review_propensity", "churn_risk", "ltv_12m")

__all__ = ["Book", "BookEvent", "Call", "CallLog", "Campaign", "Faults", "HubSpotSim", "Person", "Sandbox", "Truth",
           "generate_book", "run_sandbox_forever", "start_sandbox"]

_HUBSPOT_OPTIONS = {"window_seconds", "search_per_second", "daily_limit", "batch_errors", "portal_id", "clock",
                    "scopes", "search_lag_seconds"}


def _secret(seed: int, label: str, length: int) -> str:
    """Deterministic fake credentials, so a seed always gives the same config."""
    return hashlib.sha256(f"segsync-sandbox:{seed}:{label}".encode()).hexdigest()[:length]


class Sandbox:
    """Both simulators running over real HTTP on loopback. Also a context manager."""

    def __init__(self, book: Book, seed: int, hubspot_plan: str, options: dict[str, Any]) -> None:
        try:
            from sandbox.mailchimp import MailchimpSim
        except ImportError as exc:  # the Mailchimp simulator is developed separately
            raise RuntimeError(f"the Mailchimp simulator (sandbox.mailchimp) is not available: {exc}") from exc
        hub_opts = {k.removeprefix("hubspot_"): v for k, v in options.items()
                    if k.startswith("hubspot_") or k in _HUBSPOT_OPTIONS}
        mc_opts = {k.removeprefix("mailchimp_"): v for k, v in options.items() if k.startswith("mailchimp_")}
        unknown = set(options) - {k for k in options if k.startswith(("hubspot_", "mailchimp_"))} - _HUBSPOT_OPTIONS
        if unknown:
            raise TypeError(f"unknown sandbox options: {sorted(unknown)} (prefix with hubspot_ or mailchimp_)")
        self.book = book
        self.seed = seed
        self.calls = CallLog()
        self.faults: dict[str, Faults] = {"hubspot": Faults(seed=seed), "mailchimp": Faults(seed=seed + 1)}
        self.hubspot_token = f"pat-na1-{_secret(seed, 'hubspot', 8)}-{_secret(seed, 'hubspot2', 12)}"
        self.mailchimp_key = f"{_secret(seed, 'mailchimp', 32)}-us6"
        self.mailchimp_list_id = _secret(seed, "list", 10)
        self.hubspot_plan = hubspot_plan
        self.hubspot = HubSpotSim(self.hubspot_token, plan=hubspot_plan, **hub_opts)
        self.hubspot_client_secret = self.hubspot.oauth_client_secret  # signs the simulated v3 webhooks
        self.webhook_secret = _secret(seed, "webhook", 24)
        self.mailchimp: MailchimpSim = MailchimpSim(self.mailchimp_key, self.mailchimp_list_id, **mc_opts)
        with paused_gc():  # loading a big book creates millions of objects and no cycles
            self.hubspot.load(book)
            self.mailchimp.load(book)
        self._servers: list[ServerThread] = []
        self._wealthbox: RunningWealthbox | None = None
        self._redtail: RunningRedtail | None = None
        try:
            hs = ServerThread(instrument(self.hubspot.app(), "hubspot", self.calls, self.faults["hubspot"],
                                         self.hubspot.rate_limited_response, self.hubspot.server_error_response))
            self._servers.append(hs)
            mc = ServerThread(instrument(self.mailchimp.app(), "mailchimp", self.calls, self.faults["mailchimp"],
                                         self.mailchimp.rate_limited_response,
                                         getattr(self.mailchimp, "server_error_response", None)))
            self._servers.append(mc)
        except BaseException:
            self.stop()
            raise
        self.hubspot_url = hs.url
        self.mailchimp_url = mc.url + "/3.0"

    @property
    def wealthbox(self) -> RunningWealthbox:
        """The Wealthbox simulator on the same book, sharing the call log (started on first use: most tests
        never need it). Its contact custom fields for the config's scores exist, as an admin would make them."""
        if self._wealthbox is None:
            from sandbox.wealthbox import start_wealthbox

            self.faults["wealthbox"] = Faults(seed=self.seed + 2)
            self._wealthbox = start_wealthbox(book=self.book, seed=self.seed, calls=self.calls,
                                              faults=self.faults["wealthbox"])
            for score in SANDBOX_SCORES:
                self._wealthbox.sim.define_custom_field(f"segsync_score_{score}")
        return self._wealthbox

    @property
    def redtail(self) -> RunningRedtail:
        """The Redtail simulator on the same book, sharing the call log (started on first use)."""
        if self._redtail is None:
            from sandbox.redtail import start_redtail

            self.faults["redtail"] = Faults(seed=self.seed + 3)
            self._redtail = start_redtail(book=self.book, seed=self.seed, calls=self.calls,
                                          faults=self.faults["redtail"])
        return self._redtail

    def request_stop(self) -> None:
        """Ask every server to exit without waiting; :meth:`stop` then waits. Stopping many sandboxes, ask them
        all first: their shutdowns (0.1 s or more each, in uvicorn) overlap instead of adding up."""
        for server in [*self._servers, *(x for x in (self._wealthbox, self._redtail) if x is not None)]:
            server.request_stop()

    def stop(self) -> None:
        """Stop every server (idempotent)."""
        self.request_stop()
        extra = [x for x in (self._wealthbox, self._redtail) if x is not None]
        while self._servers:
            self._servers.pop().stop()
        for x in extra:
            x.stop()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def crm_yaml(self, crm: str = "hubspot") -> str:
        """The tenant's ``crm:`` block for the sandbox HubSpot, Wealthbox or Redtail (indented for a tenant)."""
        if crm == "redtail":
            rt = self.redtail
            return f"""    crm:
      type: redtail
      api_key: {rt.api_key}
      username: {rt.username}
      password: {rt.password}
      base_url: {rt.url}
      requests_per_second: 0           # the sandbox does not limit; leave it out for a real database
"""
        if crm == "wealthbox":
            wb = self.wealthbox
            return f"""    crm:
      type: wealthbox
      access_token: {wb.access_token}
      base_url: {wb.url}
      rate_limit: 0                    # the sandbox does not limit; leave it out for a real workspace
"""
        return f"""    crm:
      type: hubspot
      access_token: {self.hubspot_token}
      base_url: {self.hubspot_url}
      plan: {self.hubspot_plan}
      client_secret: {self.hubspot_client_secret}
      web_events_lookback_days: 3650   # the sandbox book is historical (it ends at its as-of date)
"""

    @staticmethod
    def scores_yaml(crm: str = "hubspot") -> str:
        """The tenant's scores, segments (and, for Wealthbox, features): what each CRM's data supports.

        Wealthbox keeps reviews as events (``meeting``) and won upgrades as opportunities (``opportunity_won``),
        both activity; its tags, record types and household titles move with the outcome (the scoring gate
        blocks them as suspected leakage), so only assets under management is an input. On the sandbox books
        (seeds 7 and 9, 1,250 and 5,000 contacts) ``review_propensity`` passes the gate, ``churn_risk`` at 5,000.
        """
        if crm == "wealthbox":
            return """    scores:
      - {name: review_propensity, kind: propensity, outcome: {event: meeting}, horizon_days: 90}
      - {name: churn_risk, kind: churn, inactive_days: 90,
         activity_types: [email_open, email_click, meeting, opportunity_won]}
      - {name: ltv_12m, kind: ltv, horizon_days: 365, transaction_types: [opportunity_won]}
    segments:
      - {name: review_soon, score: review_propensity, top_percent: 10}
      - {name: churn_watch, score: churn_risk, top_percent: 15}
    features: {numeric_properties: [assets_under_management], sensitive_attributes: [age]}
"""
        return """    scores:
      - {name: upgrade_propensity, kind: propensity, outcome: {event: upgrade}, horizon_days: 90}
      - {name: churn_risk, kind: churn, inactive_days: 90}
      - {name: ltv_12m, kind: ltv, horizon_days: 365}
    segments:
      - {name: high_upgrade_intent, score: upgrade_propensity, top_percent: 10}
      - {name: churn_watch, score: churn_risk, min: 0.6}
"""

    def config_yaml(self, store: str = "sqlite:///segsync.db", schedule: str | None = None,
                    crm: str = "hubspot") -> str:
        """A ready-to-use segsync config for one tenant wired to this sandbox (literal URLs and secrets).

        ``schedule`` (cron, in the tenant's time zone) makes ``segsync serve`` on it run the sync; ``crm``
        is "hubspot", "wealthbox" or "redtail" (see :meth:`scores_yaml`; Redtail takes HubSpot's scores).
        """
        cron = f'\n    schedule: "{schedule}"' if schedule else ""
        return f"""version: 1
store: {store}
server: {{listen: 127.0.0.1:8080}}
tenants:
  - id: sandbox-advisors
    timezone: America/New_York{cron}
{self.crm_yaml(crm)}    esp:
      type: mailchimp
      api_key: {self.mailchimp_key}
      list_id: {self.mailchimp_list_id}
      base_url: {self.mailchimp_url}
    consent:
      webhook_secret: {self.webhook_secret}
      purposes:
        email_marketing: {{basis: consent}}
        profiling: {{basis: legitimate_interest}}
{self.scores_yaml(crm)}    holdout_percent: 10
    push:
      crm_property: segsync_segments
      crm_scores: true
      esp_tags: true
      esp_static_segments: true
"""


def start_sandbox(contacts: int = 2000, seed: int = 7, book: Book | None = None, hubspot_plan: str = "unlimited",
                  signal: float = 0.0, **options: Any) -> Sandbox:
    """Generate (or take) a book, load both simulators and serve them on free loopback ports.

    ``hubspot_plan``: "starter"/"free" (100 per 10 s), "professional"/"enterprise" (190), "unlimited".
    Options: ``window_seconds``, ``search_per_second``, ``daily_limit``, ``batch_errors``, ``scopes``,
    ``search_lag_seconds``, ``portal_id``, ``clock`` (or any ``hubspot_*`` key) go to :class:`HubSpotSim`;
    ``mailchimp_*`` keys go to ``MailchimpSim``. Vendor-reality switches: ``hubspot_tier`` (below
    "enterprise" the events API answers 403), ``hubspot_app_type`` ("oauth": a public app's own limit),
    ``hubspot_deal_noise`` (on by default: open and lost deals besides the won ones),
    ``hubspot_merge_new_id`` (on by default: merges make a new record, as HubSpot does now),
    ``hubspot_subscription_types`` ("legacy": no purpose on any type), ``mailchimp_customer_tags`` (the
    advisor's own tags, e.g. one named like a segsync segment).
    ``signal`` plants the book's learnable churn pattern (:func:`sandbox.book.generate_book`), so a small
    book's churn score can pass the scoring gate.
    """
    return Sandbox(book or generate_book(contacts=contacts, seed=seed, signal=signal), seed, hubspot_plan, options)


def describe(sb: Sandbox) -> str:
    """What a person needs to use a running sandbox: base URLs, credentials and a config."""
    return (f"HubSpot   {sb.hubspot_url}  (Bearer {sb.hubspot_token}, plan {sb.hubspot_plan}, "
            f"{sb.hubspot.tier} tier)\n"
            f"Mailchimp {sb.mailchimp_url}  (key {sb.mailchimp_key}, list {sb.mailchimp_list_id})\n"
            f"Wealthbox {sb.wealthbox.url}  (ACCESS_TOKEN {sb.wealthbox.access_token}; "
            "config_yaml(crm='wealthbox'))\n"
            f"Redtail   {sb.redtail.url}  (API key {sb.redtail.api_key}, user {sb.redtail.username}; "
            "config_yaml(crm='redtail'))\n"
            f"Book      {len(sb.book.people)} people, seed {sb.seed}, as of {sb.book.as_of:%Y-%m-%d}\n\n"
            f"# segsync config (save it and run `segsync validate FILE`):\n{sb.config_yaml()}"
            f"# a firm on Redtail: this crm: block instead\n{sb.crm_yaml('redtail')}")


def run_sandbox_forever(contacts: int = 2000, seed: int = 7, hubspot_plan: str = "unlimited",
                        out: TextIO | None = None, stop: threading.Event | None = None,
                        on_ready: Callable[[Sandbox], None] | None = None, **options: Any) -> int:
    """Start the simulators (HubSpot, Mailchimp; Wealthbox and Redtail on the same book), print their URLs and a
    ready config (and the Redtail ``crm:`` block), and serve until Ctrl-C (or ``stop``).

    For the ``segsync sandbox`` command. ``on_ready`` gets the running :class:`Sandbox` (tests use it).
    Returns 0.
    """
    out = out or sys.stdout
    started = time.perf_counter()
    with start_sandbox(contacts=contacts, seed=seed, hubspot_plan=hubspot_plan, **options) as sb:
        print(describe(sb), file=out)
        print(f"Ready in {time.perf_counter() - started:.1f} s. Ctrl-C to stop.", file=out, flush=True)
        if on_ready is not None:
            on_ready(sb)
        try:
            while stop is None or not stop.wait(0.5):
                if stop is None:
                    time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0

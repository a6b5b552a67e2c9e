"""A Wealthbox CRM API (v1) simulator, served over real HTTP on loopback.

    with start_wealthbox(contacts=300, seed=11) as wb:
        wb.url, wb.access_token                 # http://127.0.0.1:P/v1, header ACCESS_TOKEN
        wb.sim.issue_oauth_token()              # or Authorization: Bearer <token> (scopes login, data)
        wb.calls.writes("wealthbox"); wb.faults.set(storm=2)
        wb.sim.tags_of("p000001"); wb.sim.custom_values("p000001"); wb.sim.household_of("p000001")

What Wealthbox's API does, and where it is written down. The vendor's reference is
https://dev.wealthbox.com (not reachable from here), so every fact below was read in public material
that cites it: the community client ``massive-value/wealthbox-cli`` (``src/wealthbox_tools/client/base.py``,
``client/*.py``, ``models/common.py``, ``models/contacts.py``, ``models/enums.py``,
``resources/api_examples/contact_person_create.jsonc``, ``skills/.../references/*.md``, its tests),
Pipedream's "List Households" action (https://pipedream.com/apps/wealthbox/actions/list-households: households
are ``GET /contacts`` rows of type Household) and VENDORS.md:

- Base ``https://api.crmworkspace.com/v1``; auth by an API access token in the ``ACCESS_TOKEN`` header
  (Settings > API Access) or an OAuth bearer token with scopes ``login`` and ``data``.
- ``GET /contacts`` pages with ``page`` (from 1) and ``per_page`` (default 25, maximum 100) and answers
  ``{"contacts": [...], "meta": {"current_page", "total_pages", "total_count"}}`` (the shape the
  client's tests replay); filters ``type`` (Person, Household,
  Organization, Trust), ``contact_type``, ``tags``, ``email``, ``updated_since``, ``updated_before``,
  ``deleted`` (deleted contacts only), ``deleted_since``, ``order`` (asc, desc, recent, created, updated).
- Contacts carry ``email_addresses[{address, principal, kind}]``, ``birth_date``, ``tags``,
  ``custom_fields[{id, name, value}]`` and, for a Person, ``household{name, title, id, members}``.
  ``PUT /contacts/{id}`` with ``tags`` replaces the whole tag list (keep the ones you did not add);
  tags that do not exist are created. ``custom_fields`` are written as ``[{id, value}]``; an entry keyed
  by ``name`` instead of ``id`` answers 200 and is silently dropped (recorded as live behaviour in
  ``wealthbox-cli``'s custom-field flag tests; the simulator does the same).
  Field types seen: ``text_field``, ``single_select``.
- Households: ``POST /households/{id}/members {id, title}``, ``DELETE /households/{id}/members/{id}``;
  titles Head, Spouse, Partner, Child, Grandchild, Grandparent, Parent, Sibling, Other Dependent.
- Lookups: ``GET /categories/tags`` -> ``{tags}``, ``GET /categories/custom_fields?document_type=Contact``
  -> ``{custom_fields}``. ``GET /events`` and ``GET /opportunities`` with ``resource_id``/``linked_to``.
- Errors carry an ``error`` member (what the clients read); 429 answers carry ``Retry-After``.

INFERRED: the rate limit's size (``RATE_LIMIT`` = 300 requests per 5 minutes is what
``wealthbox-cli`` paces itself to; it is off by default here so a big sandbox book loads quickly);
whether ``per_page`` above 100 is capped or refused (``per_page_over_max``, default "cap"; the client
refuses it before sending); the error texts; that custom fields cannot be created through the API
(no create endpoint is documented, so :meth:`WealthboxSim.define_custom_field` stands in for an admin
creating one in the settings); that deleted contacts leave the default listing and ``GET /contacts/{id}``
answers 404 for them; the ``deleted_at`` member; the "Do Not Email" tag as the firm's opt-out mark.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sandbox.book import Book, generate_book, paused_gc
from sandbox.common import CallLog, Faults
from sandbox.redtail.crmkit import Running
from sandbox.wealthbox.app import MAX_PER_PAGE, PREFIX, RATE_LIMIT, RATE_WINDOW, WealthboxSim

__all__ = ["MAX_PER_PAGE", "PREFIX", "RATE_LIMIT", "RATE_WINDOW", "RunningWealthbox", "WealthboxSim",
           "start_wealthbox"]

DO_NOT_EMAIL = "Do Not Email"


class RunningWealthbox(Running):
    """A served :class:`WealthboxSim` plus its access token."""

    sim: WealthboxSim

    def __init__(self, sim: WealthboxSim, seed: int, calls: CallLog | None = None,
                 faults: Faults | None = None) -> None:
        super().__init__(sim, "wealthbox", sim.app(), PREFIX, sim.rate_limited_response, sim.server_error_response,
                         seed=seed, calls=calls, faults=faults)
        self.access_token = sim.access_token

    def crm_config(self) -> dict[str, str]:
        """A proposed ``crm:`` block for a segsync tenant on this sandbox (literal secret: sandbox only)."""
        return {"type": "wealthbox", "base_url": self.url, "access_token": self.access_token}


def start_wealthbox(contacts: int = 300, seed: int = 7, book: Book | None = None, calls: CallLog | None = None,
                    faults: Faults | None = None, **options: Any) -> RunningWealthbox:
    """Seed a Wealthbox workspace from a (generated) book and serve it on a free loopback port.

    People whose CRM record says "no email" carry the "Do Not Email" tag. ``calls``/``faults`` share a call
    log and fault switches with other simulators (calls are logged as vendor "wealthbox"). ``options`` go to
    :class:`WealthboxSim` (``rate_limit``, ``rate_window``, ``per_page_over_max``, ``clock``).
    """
    book = book or generate_book(contacts=contacts, seed=seed)
    token = hashlib.sha256(f"segsync-sandbox:wealthbox:{seed}".encode()).hexdigest()[:32]
    sim = WealthboxSim(token, **options)
    with paused_gc():  # seeding creates many small acyclic objects
        sim.load(book)
    with sim.ws.lock:
        for p in book.people:
            cid = sim.ws.by_person.get(p.key)
            if cid is not None and p.crm_email_optout:
                sim.ws.contacts[cid].tags.append(DO_NOT_EMAIL)
                sim.ws.tag_id(DO_NOT_EMAIL)
    return RunningWealthbox(sim, seed, calls, faults)

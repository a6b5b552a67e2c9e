"""Wealthbox CRM (API v1): every contact type, households, tags, custom fields, events, opportunities.

What Wealthbox documents, and where. The reference is https://dev.wealthbox.com (not reachable from
here); each fact below was read in public material citing it - the community client
``massive-value/wealthbox-cli`` (``src/wealthbox_tools/client/base.py``, ``models/contacts.py``,
``models/enums.py``, its tests), Pipedream's "List Households" action
(https://pipedream.com/apps/wealthbox/actions/list-households) - and in /work/shared/VENDORS.md:

- Base ``https://api.crmworkspace.com/v1``. Auth: an API access token in the ``ACCESS_TOKEN`` header
  (Settings > API Access), or an OAuth 2 access token as ``Authorization: Bearer`` with scopes
  ``login`` and ``data``. A refused token is 401; a token without the needed scope is 403.
- ``GET /contacts`` pages with ``page`` (from 1) and ``per_page`` (default 25, maximum 100) and answers
  ``{"contacts": [...], "meta": {"current_page", "total_pages", "total_count"}}``; filters ``type``
  (Person, Household, Organization, Trust), ``updated_since``, ``updated_before``, ``deleted``,
  ``deleted_since``, ``email``, ``order`` (``updated``).
- A Person carries ``household {id, name, title, members}``; a Household lists ``members``. Contacts carry
  ``email_addresses[{address, principal, kind}]``, ``birth_date``, ``contact_type``, ``tags[{id, name}]``
  and ``custom_fields[{id, name, value}]``.
- ``PUT /contacts/{id}``: ``tags`` replaces the whole list (unknown tags are created), so segsync reads the
  contact right before and keeps every tag without its prefix; ``custom_fields`` are written as
  ``[{id, value}]`` (an entry keyed by name is silently dropped), looked up through
  ``GET /categories/custom_fields?document_type=Contact``.
- ``GET /events`` and ``GET /opportunities`` page the same way; rows link contacts in ``linked_to``.
  Opportunities carry a ``stage`` (a workspace's stage; the won stage is named "Won"), ``probability``
  and ``amounts[{amount, currency, kind}]``.
- Errors carry an ``error`` member; 429 answers carry ``Retry-After`` (honoured by the kit's policy).

INFERRED (not found written down): the rate limit's size (300 requests per 5 minutes, what wealthbox-cli
paces itself to; ``rate_limit`` in the config); that ``updated_since`` is inclusive and ``order=updated``
sorts by (updated_at, id) ascending; the stage given by id resolving through
``GET /categories/opportunity_stages`` (without it, numeric stages are not money: never guessed); that
custom fields cannot be created through the API (no create endpoint is documented: an admin creates
``segsync_score_<name>``, type text; until then the score is skipped and named in ``stats()``); and the
"Do Not Email" tag as the firm's email opt-out mark (Wealthbox's contact API documents no opt-out
field): a tagged contact is pulled as a withdrawal of ``email_marketing``, and an opt-out seen elsewhere
adds the tag. Only Persons (and a Household with an email of its own) become contacts; Organizations and
Trusts are counted in ``stats()["skipped_records"]``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["WealthboxConnector"]


def __getattr__(name: str) -> Any:
    """The connector on first use, so the plugin (imported with the config) stays light."""
    if name == "WealthboxConnector":
        from connectors.wealthbox.connector import WealthboxConnector

        return WealthboxConnector
    raise AttributeError(f"module 'connectors.wealthbox' has no attribute {name!r}")

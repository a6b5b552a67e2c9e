"""A Redtail CRM public API (v1) simulator, served over real HTTP on loopback.

    with start_redtail(contacts=300, seed=11) as rt:
        rt.url                                  # http://127.0.0.1:P/api/public/v1
        rt.api_key, rt.username, rt.password    # exchanged for rt.sim.user_key by GET /authentication
        rt.calls.writes("redtail"); rt.faults.set(storm=2)
        rt.sim.tags_of("p000001"); rt.sim.udfs_of("p000001"); rt.sim.household_of("p000001")

What Redtail documents, and where it was read (the collection itself is not reachable from here):

- Base URL ``https://crm.redtailtechnology.com/api/public/v1`` (review/dev host
  ``https://review.crm.redtailtechnology.com/api/public/v1``). Redtail's own API documentation is its
  Postman collection "TWAPI Documentation", https://documenter.getpostman.com/view/7873823/SVzxXyzn
  (folders Contacts, Notes, Activities, Accounts, Families, Tag Groups, UDFs, Lists, ...), read through
  a public integration README that quotes its captured examples, public sync clients (which read
  ``authenticated_user.user_key``, ``meta.total_pages``, ``families[].members[].contact_id``/``hoh``,
  ``accounts[].balance``) and https://help.surgetk.com/en/articles/14728980-redtail-integration-technical-reference.
- Auth: ``GET /authentication`` with ``Authorization: Basic base64(APIKey:Username:Password)`` returns
  the user key (``{"authenticated_user": {"user_key": ...}}``, the path public clients read); every
  other call sends ``Authorization: Userkeyauth base64(APIKey:UserKey)`` (the scheme name is matched
  case-insensitively; the collection writes ``UserKeyAuth``). User keys do not expire. SurgeTK reports
  sending the 3-part Basic credential on every call, so the simulator accepts that too.
- Errors are ``{"message": "..."}``: ``401 {"message": "Authorization header missing"}`` without a
  header (captured live), ``403 {"message": "User Forbidden from Updating ..."}`` for a write the user's
  role forbids (``read_only=True`` here).
- Paging: ``?page=N`` from 1; list bodies carry ``meta: {total_records, total_pages}``; no Link header.
  ``/contacts`` takes ``pagesize`` (default 50) and ``include`` (addresses, phones, emails, urls, family,
  tag_memberships, important_information, social_medias, photos, activities, sam) as request headers;
  public clients also send ``page_size``/``include`` as query parameters, which the simulator accepts.
- Incremental pulls: ``updated_since`` is a documented search parameter of ``/contacts/search``; a
  public sync client sends it to ``/contacts`` as well (accepted on both).
- Families (households): ``GET /families?family_members=true`` -> ``{families: [{id, name, members:
  [{contact_id, hoh, ...}]}]}``. Accounts: ``GET /contacts/{id}/accounts`` -> ``{accounts: [{id, number,
  balance, account_type, company}]}``. Notes: ``GET /contacts/{id}/notes`` -> ``{notes: [{id, category_id,
  note_type, body, created_at, updated_at}]}``. Contact fields ``dob``, ``emails[].is_primary``.
- Writes answer ``204 No Content`` except creates, which return the created object.
- Rate limits: none documented - the collection has no "rate limit"/"throttle" text and responses carry
  no rate headers.

INFERRED (no public text found; shaped like the documented parts): the exact paths and bodies of tag
groups (``GET/POST /tag_groups``, ``GET/POST /contacts/{id}/tag_memberships`` with ``{tag_id}``,
``DELETE /contacts/{id}/tag_memberships/{membership_id}``), of user-defined fields
(``GET/POST /lists/contact_udf_fields``, ``GET/POST /contacts/{id}/udfs`` with
``{contact_udf_field_id, field_value}``, ``PUT /contacts/{id}/udfs/{udf_id}``) and of
``GET /contacts/{id}/activities``; ``GET /tag_groups/{id}/contacts`` (a tag group's members, paged and
rendered like ``/contacts``; shaped from the legacy API's ``taggroups/{id}/contacts`` as the ruby-redtail gem
calls it, https://www.rubydoc.info/gems/ruby-redtail/0.3.8/RubyRedtail/TagGroup); that adding or removing a
tag membership does not change the contact's ``updated_at`` (the safe assumption); that a write to a deleted
contact answers 404 ``Contact not found``; that a deleted contact leaves ``/contacts`` and ``/contacts/search``
while ``GET /contacts/{id}`` still shows it with ``deleted: true``; the 401 text for a wrong key
("Invalid credentials"); the 400/404/422 texts; the page-size cap (200); the 429 (``{"message": "Rate
limit exceeded"}`` + ``Retry-After``), which only happens when a test switches ``rate_limit`` on or
injects a storm; the ``email_optout`` convention (a "Do Not Email" tag group, as firms keep it) - see
:func:`start_redtail`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sandbox.book import Book, generate_book, paused_gc
from sandbox.common import CallLog, Faults
from sandbox.redtail.app import PREFIX, RedtailSim
from sandbox.redtail.crmkit import Running

__all__ = ["PREFIX", "RedtailSim", "RunningRedtail", "start_redtail"]

DO_NOT_EMAIL = "Do Not Email"


def _secret(seed: int, label: str) -> str:
    digest = hashlib.sha256(f"segsync-sandbox:redtail:{seed}:{label}".encode()).hexdigest().upper()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"  # Redtail keys are GUIDs


class RunningRedtail(Running):
    """A served :class:`RedtailSim` plus the credentials a connector needs."""

    sim: RedtailSim

    def __init__(self, sim: RedtailSim, seed: int, calls: CallLog | None = None, faults: Faults | None = None) -> None:
        super().__init__(sim, "redtail", sim.app(), PREFIX, sim.rate_limited_response, sim.server_error_response,
                         seed=seed, calls=calls, faults=faults)
        self.api_key, self.username, self.password = sim.api_key, sim.username, sim.password

    def crm_config(self) -> dict[str, str]:
        """A proposed ``crm:`` block for a segsync tenant on this sandbox (literal secrets: sandbox only)."""
        return {"type": "redtail", "base_url": self.url, "api_key": self.api_key, "username": self.username,
                "password": self.password}


def start_redtail(contacts: int = 300, seed: int = 7, book: Book | None = None, calls: CallLog | None = None,
                  faults: Faults | None = None, **options: Any) -> RunningRedtail:
    """Seed a Redtail database from a (generated) book and serve it on a free loopback port.

    People whose CRM record says "no email" (``crm_email_optout``) are members of the "Do Not Email" tag
    group, the way firms mark it in Redtail. ``calls``/``faults`` share a call log and fault switches with
    other simulators (each call is logged as vendor "redtail"). ``options`` go to :class:`RedtailSim` (``page_size``,
    ``max_page_size``, ``rate_limit``, ``rate_window``, ``read_only``, ``clock``).
    """
    book = book or generate_book(contacts=contacts, seed=seed)
    sim = RedtailSim(_secret(seed, "api"), f"advisor{seed}", _secret(seed, "password")[:18],
                     _secret(seed, "userkey"), **options)
    with paused_gc():  # seeding creates many small acyclic objects
        sim.load(book)
        _mark_do_not_email(sim, book)
    return RunningRedtail(sim, seed, calls, faults)


def _mark_do_not_email(sim: RedtailSim, book: Book) -> None:
    db = sim.db
    with db.lock:
        tid = db.next_id("tag")
        db.tags[tid] = {"id": tid, "name": DO_NOT_EMAIL, "description": "Firm convention: never email",
                        "created_at": "2020-01-01T00:00:00.000Z"}
        for p in book.people:
            cid = db.by_person.get(p.key)
            if cid is not None and p.crm_email_optout:
                db.contacts[cid].tag_memberships[db.next_id("membership")] = tid

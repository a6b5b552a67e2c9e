"""Redtail CRM public API (v1): contacts with families, accounts, notes and activities in; tags and UDFs out.

What Redtail documents, and where (Redtail's own documentation is its Postman collection "TWAPI
Documentation", https://documenter.getpostman.com/view/7873823/SVzxXyzn; read through public integration
clients and https://help.surgetk.com/en/articles/14728980-redtail-integration-technical-reference - see
:mod:`sandbox.redtail` for what each part was read from):

- Base URL ``https://crm.redtailtechnology.com/api/public/v1``.
- Auth: ``GET /authentication`` with ``Authorization: Basic base64(APIKey:Username:Password)`` answers
  ``{"authenticated_user": {"user_key": ...}}``; every other call sends ``Authorization: Userkeyauth
  base64(APIKey:UserKey)``. User keys do not expire, so segsync exchanges once per connector and keeps the
  key in memory only (never logged, never stored: registered with the redactor).
- Errors are ``{"message": "..."}``: 401 "Authorization header missing" (captured), 403 "User Forbidden from
  Updating ..." when the user's role may not write (captured). A 401 is the API key / username / password
  (on ``/authentication``) or the user key (elsewhere); a 403 is the Redtail user's role.
- Paging: ``page`` from 1, ``meta: {total_records, total_pages}``; ``/contacts`` takes ``pagesize``
  (default 50) and ``include`` (emails, family, tag_memberships, activities, ...) as headers.
- Incremental: ``updated_since``, a documented parameter of ``/contacts/search`` (segsync pages it there).
- Families (households) in ``include=family``; accounts (``balance``) at ``/contacts/{id}/accounts``; notes
  at ``/contacts/{id}/notes`` (dated ``created_at``); activities (``start_date``) in ``include=activities``.
- Rate limits: none documented (no rate text in the collection, no rate headers). segsync paces itself
  (``requests_per_second``, a courtesy default) and honours a 429's ``Retry-After`` like any other vendor.

INFERRED (no public text found): the page-size cap (200; a larger ``pagesize`` is refused by our config);
the tag-group and UDF paths and bodies (``/tag_groups``, ``/contacts/{id}/tag_memberships``,
``/lists/contact_udf_fields``, ``/contacts/{id}/udfs``); that a deleted contact just leaves the listings;
that adding a note bumps the contact's ``updated_at`` (a balance change
alone might not: segsync then sees the new balance only when the contact next changes); the 429 body; the
email opt-out convention, a firm's "Do Not Email" tag group; the ``email`` parameter of ``/contacts/search``
(used only to find an opt-out's contact when its id is unknown; every answer is checked against the
address, so a server that ignored the parameter would find nobody).

What segsync writes: one tag group per segment, named ``"<tag_group>: <segment>"`` and described as
segsync's (:data:`settings.OWNED_MARK`); memberships only in those groups and in the opt-out group; one
UDF ``segsync_score_<name>`` per score. A configured name that collides with a tag group segsync did not
create is refused, never adopted.

The connector is imported on first use: the config schema reads only ``config``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.redtail.connector import RedtailConnector

__all__ = ["RedtailConnector"]


def __getattr__(name: str) -> Any:
    if name == "RedtailConnector":
        from connectors.redtail.connector import RedtailConnector

        return RedtailConnector
    raise AttributeError(f"module 'connectors.redtail' has no attribute {name!r}")

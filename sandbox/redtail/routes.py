"""Redtail's contact-centred routes: contacts (paged), their emails/accounts/notes/activities, families,
tag groups and memberships, and user-defined fields. The credential gate runs before every handler here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.redtail.state import Contact, Database, iso


class RedtailSim(Protocol):
    """What the routes need of :class:`sandbox.redtail.app.RedtailSim` (a protocol: routes never import app)."""

    db: Database
    page_size: int
    max_page_size: int
    clock: Callable[[], datetime]

Handler = Callable[[Request], Awaitable[Response]]
KNOWN_INCLUDES = {"addresses", "phones", "emails", "urls", "family", "tag_memberships", "important_information",
                  "social_medias", "photos", "activities", "sam"}


class BadRequest(Exception):
    """A request Redtail refuses with 400/404/422 and a ``message`` body."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text


def _int(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(400, f"{name} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise BadRequest(400, f"{name} must be a positive integer, got {value!r}")
    return number


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(400, f"updated_since must be an ISO 8601 time, got {value!r}") from None
    if stamp.tzinfo is None:
        raise BadRequest(400, f"updated_since needs a UTC offset, got {value!r}")
    return stamp


def paged(sim: RedtailSim, request: Request, key: str, items: list[Any], size: int | None = None,
          render: Callable[[Any], Any] = lambda row: row) -> JSONResponse:
    """One page of ``items`` as ``{key: [...], meta: {total_records, total_pages}}`` (pages count from 1).

    ``render`` turns a row into JSON; only the rows on the page are rendered.
    """
    page = _int(request.query_params.get("page"), "page", 1)
    size = size or sim.page_size
    total_pages = (len(items) + size - 1) // size
    chunk = [render(row) for row in items[(page - 1) * size: page * size]]
    return JSONResponse({key: chunk, "meta": {"total_records": len(items), "total_pages": total_pages}})


def _page_size(sim: RedtailSim, request: Request) -> int:
    # The collection documents a ``pagesize`` header for /contacts; integrations also send ``page_size``.
    raw = request.headers.get("pagesize") or request.query_params.get("page_size")
    return min(_int(raw, "pagesize", sim.page_size), sim.max_page_size)


def _includes(request: Request) -> set[str]:
    raw = request.headers.get("include") or request.query_params.get("include") or ""
    return {part.strip() for part in raw.split(",") if part.strip() in KNOWN_INCLUDES}


class _Routes:
    """Handlers over one simulator's database; each returns a Response or raises :class:`BadRequest`."""

    def __init__(self, sim: RedtailSim) -> None:
        self.sim, self.db = sim, sim.db

    def contact(self, request: Request) -> Contact:
        try:
            c = self.db.contacts.get(int(request.path_params["cid"]))
        except ValueError:
            c = None
        if c is None:
            raise BadRequest(404, "Contact not found")
        return c

    def touch(self, c: Contact) -> None:
        c.updated_at = self.sim.clock()

    def live(self, request: Request) -> Contact:
        """The contact a write addresses: a deleted one is not found (INFERRED: Redtail answers a write to a
        deleted contact 404, as for an unknown id; a read still shows it with ``deleted: true``)."""
        c = self.contact(request)
        if c.deleted:
            raise BadRequest(404, "Contact not found")
        return c

    def list_contacts(self, request: Request) -> Response:
        since = _since(request.query_params.get("updated_since"))
        email = (request.query_params.get("email") or "").strip().lower()
        rows = [c for c in self.db.contacts.values() if not c.deleted and (since is None or c.updated_at > since)
                and (not email or any(e["address"].lower() == email for e in c.emails))]
        inc = _includes(request)
        return paged(self.sim, request, "contacts", rows, _page_size(self.sim, request),
                     lambda c: self.db.contact_json(c, inc))

    def get_contact(self, request: Request) -> Response:
        return JSONResponse({"contact": self.db.contact_json(self.contact(request), _includes(request))})

    def sub_list(self, key: str) -> Callable[[Request], Response]:
        def handler(request: Request) -> Response:
            return paged(self.sim, request, key, [dict(r) for r in getattr(self.contact(request), key)])
        return handler

    def families(self, request: Request) -> Response:
        with_members = request.query_params.get("family_members", "").lower() == "true"
        fams = self.db.families
        rows = [self.db.family_json(f) if with_members else {k: v for k, v in fams[f].items() if k != "members"}
                for f in sorted(fams)]
        return paged(self.sim, request, "families", rows)

    def tag_groups(self, request: Request) -> Response:
        if request.method == "GET":
            return paged(self.sim, request, "tag_groups", [dict(t) for t in self.db.tags.values()])
        body = request.state.body
        name = str(body.get("name") or "").strip()
        if not name:
            raise BadRequest(422, "name can't be blank")
        if any(t["name"].lower() == name.lower() for t in self.db.tags.values()):
            raise BadRequest(422, f"Tag group {name!r} already exists")
        tid = self.db.next_id("tag")
        self.db.tags[tid] = {"id": tid, "name": name, "description": str(body.get("description") or ""),
                             "created_at": iso(self.sim.clock())}
        return JSONResponse({"tag_group": dict(self.db.tags[tid])}, status_code=201)

    def tag_group_contacts(self, request: Request) -> Response:
        """The (not deleted) members of one tag group, rendered like ``/contacts`` (``include`` honoured)."""
        tid = _int(request.path_params["tid"], "id", 0)
        if tid not in self.db.tags:
            raise BadRequest(404, "Tag group not found")
        rows = [c for c in self.db.contacts.values() if not c.deleted and tid in c.tag_memberships.values()]
        inc = _includes(request)
        return paged(self.sim, request, "contacts", rows, _page_size(self.sim, request),
                     lambda c: self.db.contact_json(c, inc))

    def memberships(self, request: Request) -> Response:
        if request.method == "GET":
            c = self.contact(request)
            return paged(self.sim, request, "tag_memberships", self.db.memberships_json(c))
        c = self.live(request)
        tid = request.state.body.get("tag_id")
        if not isinstance(tid, int) or tid not in self.db.tags:
            raise BadRequest(422, f"tag_id {tid!r} is not a tag group of this database")
        if tid in c.tag_memberships.values():
            raise BadRequest(422, f"Contact {c.id} is already a member of tag group {tid}")
        mid = self.db.next_id("membership")
        c.tag_memberships[mid] = tid  # INFERRED: a membership change is not an edit of the contact (no touch)
        made = next(m for m in self.db.memberships_json(c) if m["id"] == mid)
        return JSONResponse({"tag_membership": made}, status_code=201)

    def delete_membership(self, request: Request) -> Response:
        c = self.live(request)
        if c.tag_memberships.pop(_int(request.path_params["mid"], "id", 0), None) is None:
            raise BadRequest(404, "Tag membership not found")
        return Response(status_code=204)

    def udf_fields(self, request: Request) -> Response:
        fields = self.db.udf_fields
        if request.method == "GET":
            return paged(self.sim, request, "contact_udf_fields", [dict(f) for f in fields.values()])
        name = str(request.state.body.get("name") or "").strip()
        if not name:
            raise BadRequest(422, "name can't be blank")
        if any(f["name"].lower() == name.lower() for f in fields.values()):
            raise BadRequest(422, f"User defined field {name!r} already exists")
        fid = self.db.next_id("udf_field")
        fields[fid] = {"id": fid, "name": name}
        return JSONResponse({"contact_udf_field": dict(fields[fid])}, status_code=201)

    def udfs(self, request: Request) -> Response:
        if request.method == "GET":
            return paged(self.sim, request, "contact_udfs", self.db.udfs_json(self.contact(request)))
        c = self.live(request)
        fid, value = request.state.body.get("contact_udf_field_id"), request.state.body.get("field_value")
        if not isinstance(fid, int) or fid not in self.db.udf_fields:
            raise BadRequest(422, f"contact_udf_field_id {fid!r} is not a user defined field of this database")
        if any(u["field_id"] == fid for u in c.udfs.values()):
            raise BadRequest(422, f"Contact {c.id} already has a value for field {fid}; update it with PUT")
        uid = self.db.next_id("udf")
        c.udfs[uid] = {"field_id": fid, "value": "" if value is None else str(value)}
        self.touch(c)
        made = next(u for u in self.db.udfs_json(c) if u["id"] == uid)
        return JSONResponse({"contact_udf": made}, status_code=201)

    def update_udf(self, request: Request) -> Response:
        c = self.live(request)
        udf = c.udfs.get(_int(request.path_params["uid"], "id", 0))
        if udf is None:
            raise BadRequest(404, "User defined field value not found")
        if "field_value" not in request.state.body:
            raise BadRequest(422, "field_value is required")
        value = request.state.body["field_value"]
        udf["value"] = "" if value is None else str(value)
        self.touch(c)
        return Response(status_code=204)  # Redtail answers most updates with 204 No Content


def _wrap(fn: Callable[[Request], Response]) -> Handler:
    async def handler(request: Request) -> Response:
        try:
            return fn(request)
        except BadRequest as exc:
            return JSONResponse({"message": exc.text}, status_code=exc.status)
    return handler


def contact_routes(sim: RedtailSim) -> list[tuple[str, Handler, list[str]]]:
    """``(path, handler, methods)`` for every gated route."""
    r = _Routes(sim)
    table: list[tuple[str, Callable[[Request], Response], list[str]]] = [
        ("/contacts", r.list_contacts, ["GET"]),
        ("/contacts/search", r.list_contacts, ["GET"]),
        ("/contacts/{cid}", r.get_contact, ["GET"]),
        ("/contacts/{cid}/emails", r.sub_list("emails"), ["GET"]),
        ("/contacts/{cid}/accounts", r.sub_list("accounts"), ["GET"]),
        ("/contacts/{cid}/notes", r.sub_list("notes"), ["GET"]),
        ("/contacts/{cid}/activities", r.sub_list("activities"), ["GET"]),
        ("/families", r.families, ["GET"]),
        ("/tag_groups", r.tag_groups, ["GET", "POST"]),
        ("/tag_groups/{tid}/contacts", r.tag_group_contacts, ["GET"]),
        ("/contacts/{cid}/tag_memberships", r.memberships, ["GET", "POST"]),
        ("/contacts/{cid}/tag_memberships/{mid}", r.delete_membership, ["DELETE"]),
        ("/lists/contact_udf_fields", r.udf_fields, ["GET", "POST"]),
        ("/contacts/{cid}/udfs", r.udfs, ["GET", "POST"]),
        ("/contacts/{cid}/udfs/{uid}", r.update_udf, ["PUT"]),
    ]
    return [(path, _wrap(fn), methods) for path, fn, methods in table]

"""Wealthbox's routes: me, contacts (list/get/update), household members, categories, events, opportunities.

Handlers run behind the gate in :mod:`sandbox.wealthbox.app` (token checked, body parsed, lock held)
and raise :class:`BadRequest` for a request Wealthbox refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.wealthbox.state import CONTACT_TYPES, HOUSEHOLD_TITLES, Record, Workspace


class WealthboxSim(Protocol):
    """What the routes need of :class:`sandbox.wealthbox.app.WealthboxSim` (a protocol: routes never import app)."""

    ws: Workspace
    clock: Callable[[], datetime]

    def per_page(self, raw: str | None) -> int: ...

UPDATABLE = {"first_name", "last_name", "name", "contact_type", "birth_date", "status"}


class BadRequest(Exception):
    """A request Wealthbox refuses, with its status and ``error`` text."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text


def _time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(400, f"{name} must be an ISO 8601 time, got {value!r}") from None
    if stamp.tzinfo is None:
        raise BadRequest(400, f"{name} needs a UTC offset, got {value!r}")
    return stamp


class _Routes:
    def __init__(self, sim: WealthboxSim) -> None:
        self.sim, self.ws = sim, sim.ws

    def paged(self, request: Request, key: str, rows: list[Any],
              render: Callable[[Any], Any] = lambda row: row) -> JSONResponse:
        """``{key: [...], meta: {current_page, total_pages, total_count}}``; pages count from 1.

        ``render`` turns a row into JSON; only the rows on the page are rendered.
        """
        size = self.sim.per_page(request.query_params.get("per_page"))
        raw = request.query_params.get("page") or "1"
        if not raw.isdigit() or int(raw) < 1:
            raise BadRequest(400, f"page must be a positive integer, got {raw!r}")
        page = int(raw)
        total_pages = (len(rows) + size - 1) // size
        return JSONResponse({key: [render(row) for row in rows[(page - 1) * size: page * size]],
                             "meta": {"current_page": page, "total_pages": total_pages, "total_count": len(rows)}})

    def record(self, request: Request, key: str = "cid") -> Record:
        raw = request.path_params[key]
        rec = self.ws.contacts.get(int(raw)) if raw.isdigit() else None
        if rec is None or rec.deleted_at is not None:
            raise BadRequest(404, f"Contact {raw} not found")
        return rec

    def me(self, request: Request) -> Response:
        return JSONResponse({"id": 1, "name": "Sandbox Advisor", "email": "advisor@sandbox.example",
                             "accounts": [{"id": 1, "name": "Sandbox Advisors"}]})

    def list_contacts(self, request: Request) -> Response:
        q = request.query_params
        kind = q.get("type")
        if kind and kind not in CONTACT_TYPES:
            raise BadRequest(400, f"type must be one of {', '.join(CONTACT_TYPES)}, got {kind!r}")
        since, before = _time(q.get("updated_since"), "updated_since"), _time(q.get("updated_before"), "updated_before")
        deleted_since = _time(q.get("deleted_since"), "deleted_since")
        deleted = q.get("deleted", "").lower() == "true" or deleted_since is not None
        tags = {t.strip() for t in q.getlist("tags[]") + (q.get("tags") or "").split(",") if t.strip()}
        email = (q.get("email") or "").strip().lower()
        rows = [r for r in self.ws.contacts.values()
                if (r.deleted_at is not None) == deleted
                and (deleted_since is None or (r.deleted_at is not None and r.deleted_at >= deleted_since))
                and (not kind or r.type == kind) and (since is None or r.updated_at >= since)
                and (before is None or r.updated_at < before) and tags <= set(r.tags)
                and (not email or any(e["address"].lower() == email for e in r.fields.get("email_addresses", [])))]
        if q.get("order") == "updated":
            rows.sort(key=lambda r: (r.updated_at, r.id))
        return self.paged(request, "contacts", rows, self.ws.contact_json)

    def get_contact(self, request: Request) -> Response:
        return JSONResponse(self.ws.contact_json(self.record(request)))

    def update_contact(self, request: Request) -> Response:
        rec, body = self.record(request), request.state.body
        tags = body.get("tags")
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags)):
            raise BadRequest(422, "tags must be a list of non-blank tag names")
        custom = body.get("custom_fields") or []
        if not isinstance(custom, list) or not all(isinstance(c, dict) for c in custom):
            raise BadRequest(422, "custom_fields must be a list of {id, value} objects")
        # Wealthbox honours only entries keyed by numeric id; one keyed by name answers 200 and is dropped.
        custom = [c for c in custom if "id" in c]
        for c in custom:
            field = self.ws.custom_fields.get(c["id"])
            if field is None or field["document_type"] != "Contact":
                raise BadRequest(422, f"custom field {c['id']!r} is not a contact custom field of this workspace")
        if tags is not None:  # the list replaces every tag; unknown tags are created
            rec.tags = list(dict.fromkeys(t.strip() for t in tags))
            for t in rec.tags:
                self.ws.tag_id(t)
        for c in custom:
            rec.custom[c["id"]] = c.get("value")
        rec.fields.update({k: v for k, v in body.items() if k in UPDATABLE})
        rec.updated_at = self.sim.clock()
        return JSONResponse(self.ws.contact_json(rec))

    def add_member(self, request: Request) -> Response:
        hh, body = self.record(request, "hid"), request.state.body
        if hh.type != "Household":
            raise BadRequest(422, f"Contact {hh.id} is not a household")
        person = self.ws.contacts.get(body.get("id"))
        if person is None or person.type != "Person":
            raise BadRequest(422, f"id {body.get('id')!r} is not a person contact")
        title = body.get("title")
        if title not in HOUSEHOLD_TITLES:
            raise BadRequest(422, f"title must be one of {', '.join(HOUSEHOLD_TITLES)}, got {title!r}")
        if person.household_id not in (None, hh.id):
            raise BadRequest(422, f"Contact {person.id} already belongs to household {person.household_id}")
        hh.members = [m for m in hh.members if m["id"] != person.id] + [{"id": person.id, "title": title}]
        person.household_id = hh.id
        hh.updated_at = person.updated_at = self.sim.clock()
        return JSONResponse(self.ws.contact_json(hh))

    def remove_member(self, request: Request) -> Response:
        hh = self.record(request, "hid")
        mid = request.path_params["mid"]
        if not any(str(m["id"]) == mid for m in hh.members):
            raise BadRequest(404, f"Contact {mid} is not a member of household {hh.id}")
        hh.members = [m for m in hh.members if str(m["id"]) != mid]
        person = self.ws.contacts[int(mid)]
        person.household_id = None
        hh.updated_at = person.updated_at = self.sim.clock()
        return JSONResponse(self.ws.contact_json(hh))

    def tags(self, request: Request) -> Response:
        return self.paged(request, "tags", [{"id": i, "name": n} for n, i in sorted(self.ws.tags.items())])

    def custom_fields(self, request: Request) -> Response:
        doc = request.query_params.get("document_type")
        rows = [dict(f) for f in self.ws.custom_fields.values() if not doc or f["document_type"] == doc]
        return self.paged(request, "custom_fields", rows)

    def linked(self, key: str, rows: list[dict[str, Any]], stamp: str) -> Callable[[Request], Response]:
        def handler(request: Request) -> Response:
            q = request.query_params
            rid, since = q.get("resource_id"), _time(q.get("updated_since"), "updated_since")
            out = [r for r in rows if (not rid or any(str(link["id"]) == rid for link in r["linked_to"]))
                   and (since is None or datetime.fromisoformat(r["updated_at"].replace("Z", "+00:00")) >= since)]
            return self.paged(request, key, sorted(out, key=lambda r: (r[stamp], r["id"])))
        return handler


def routes(sim: WealthboxSim) -> list[tuple[str, Callable[[Request], Response], list[str]]]:
    """``(path, handler, methods)`` for every route under ``/v1``."""
    r = _Routes(sim)
    return [
        ("/me", r.me, ["GET"]),
        ("/contacts", r.list_contacts, ["GET"]),
        ("/contacts/{cid}", r.get_contact, ["GET"]),
        ("/contacts/{cid}", r.update_contact, ["PUT"]),
        ("/households/{hid}/members", r.add_member, ["POST"]),
        ("/households/{hid}/members/{mid}", r.remove_member, ["DELETE"]),
        ("/categories/tags", r.tags, ["GET"]),
        ("/categories/custom_fields", r.custom_fields, ["GET"]),
        ("/events", r.linked("events", sim.ws.events, "starts_at"), ["GET"]),
        ("/opportunities", r.linked("opportunities", sim.ws.opportunities, "target_close"), ["GET"]),
    ]

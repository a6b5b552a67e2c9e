"""Records of one CRM object type (contacts, deals), their serialisation, and the search engine."""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox.hubspot.errors import int_param, validation
from sandbox.hubspot.schema import iso, to_millis

SEARCH_MAX_RESULTS = 10_000  # HubSpot refuses to page past this many results of one query

# Searches compare timestamps as milliseconds; parsing the same ISO strings again on every query
# made a search over 25k contacts cost ~170 ms.
_millis = functools.lru_cache(maxsize=1_000_000)(to_millis)


@dataclass
class Record:
    """One CRM object. Property values are stored as strings, like HubSpot returns them."""

    id: str
    properties: dict[str, str]
    created_at: datetime
    updated_at: datetime
    archived: bool = False
    archived_at: datetime | None = None
    merged_into: str | None = None
    associations: dict[str, list[str]] = field(default_factory=dict)


class ObjectStore:
    """All records of one object type, keyed by id (ids are increasing integers, as strings)."""

    def __init__(self, object_type: str, schema: dict[str, dict[str, Any]], modified_property: str,
                 default_properties: tuple[str, ...], first_id: int = 101) -> None:
        self.object_type = object_type
        self.schema = schema
        self.modified_property = modified_property
        self.default_properties = default_properties
        self.records: dict[str, Record] = {}
        self._order: list[int] = []  # every id ever added, ascending (ids only grow)
        self._next_id = first_id
        # HubSpot's search is an index, not a scan: answering a page of a modified-since query by scanning every
        # record made one search cost ~0.75 s at 100,000 contacts here. Range filters on the modified property
        # look candidates up in (modified ms, id) order; the full filter check still runs on each candidate.
        self._version = 0  # raised by every add and touch (the only writers of the modified property)
        self._modified: tuple[int, list[float], list[int]] = (-1, [], [])

    def new_id(self) -> str:
        """Allocate the next record id."""
        value = str(self._next_id)
        self._next_id += 1
        return value

    def add(self, properties: dict[str, str], created_at: datetime, updated_at: datetime | None = None,
            record_id: str | None = None) -> Record:
        """Insert a record, filling the system properties."""
        rid = record_id or self.new_id()
        if self._order and int(rid) <= self._order[-1]:
            raise ValueError(f"record ids must increase ({rid} after {self._order[-1]})")
        self._next_id = max(self._next_id, int(rid) + 1)
        updated = updated_at or created_at
        rec = Record(rid, dict(properties), created_at, updated)
        rec.properties.update({"hs_object_id": rid, "createdate": iso(created_at),
                               self.modified_property: iso(updated)})
        self.records[rid] = rec
        self._order.append(int(rid))
        self._version += 1
        return rec

    def touch(self, rec: Record, at: datetime) -> None:
        """Bump the record's modification timestamp (every write does; archiving does not)."""
        rec.updated_at = at
        rec.properties[self.modified_property] = iso(at)
        self._version += 1

    def live(self, archived: bool = False) -> list[Record]:
        """Records in id order; archived ones only when ``archived`` is true (merged-away ones never)."""
        return [r for r in self.records.values() if r.archived == archived and r.merged_into is None]

    def page(self, after: int, limit: int, archived: bool = False) -> tuple[list[Record], bool]:
        """Up to ``limit`` records with id > ``after`` in id order, and whether more follow."""
        out: list[Record] = []
        for rid in self._order[bisect.bisect_right(self._order, after):]:
            rec = self.records.get(str(rid))  # None after a GDPR delete
            if rec is not None and rec.archived == archived and rec.merged_into is None:
                if len(out) == limit:
                    return out, True
                out.append(rec)
        return out, False

    def serialise(self, rec: Record, wanted: list[str] | None, associations: list[str] | None = None) -> dict[str, Any]:
        """The SimplePublicObject JSON: requested properties (null when empty) plus the system ones."""
        names = list(wanted) if wanted else list(self.default_properties)
        for always in ("createdate", self.modified_property, "hs_object_id"):
            if always not in names:
                names.append(always)
        props = {n: (rec.properties.get(n) or None) for n in names if n in self.schema or n in rec.properties}
        out: dict[str, Any] = {"id": rec.id, "properties": props, "createdAt": iso(rec.created_at),
                               "updatedAt": iso(rec.updated_at), "archived": rec.archived}
        if rec.archived and rec.archived_at:
            out["archivedAt"] = iso(rec.archived_at)
        if associations:
            assoc = {}
            for other in associations:
                ids = rec.associations.get(other, [])
                if ids:
                    kind = f"{self.object_type[:-1]}_to_{other[:-1]}"
                    assoc[other] = {"results": [{"id": i, "type": kind} for i in ids]}
            if assoc:
                out["associations"] = assoc
        return out

    # -- search -----------------------------------------------------------------

    def _typed(self, name: str, value: Any) -> Any:
        kind = self.schema.get(name, {}).get("type", "string")
        if name == "hs_object_id" or kind == "number":
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
        if kind in ("date", "datetime"):
            return _millis(value)
        return None if value is None else str(value).lower()

    def _matches(self, rec: Record, flt: dict[str, Any]) -> bool:
        name, op = flt.get("propertyName"), flt.get("operator", "EQ")
        if not name:
            raise validation("Filter is missing propertyName")
        raw = rec.properties.get(name) or None
        if op == "HAS_PROPERTY":
            return raw is not None
        if op == "NOT_HAS_PROPERTY":
            return raw is None
        have = self._typed(name, raw)
        if op in ("IN", "NOT_IN"):
            values = {self._typed(name, v) for v in flt.get("values") or []}
            return (have in values) if op == "IN" else (have not in values)
        if op == "CONTAINS_TOKEN":
            token = str(flt.get("value", "")).lower().strip("*")
            return raw is not None and token in raw.lower()
        if op == "NOT_CONTAINS_TOKEN":
            token = str(flt.get("value", "")).lower().strip("*")
            return raw is None or token not in raw.lower()
        if op == "BETWEEN":
            low, high = self._typed(name, flt.get("value")), self._typed(name, flt.get("highValue"))
            return have is not None and low is not None and high is not None and low <= have <= high
        want = self._typed(name, flt.get("value"))
        if op == "NEQ":
            return bool(have != want)
        if have is None or want is None:
            return False
        ops = {"EQ": have == want, "LT": have < want, "LTE": have <= want, "GT": have > want, "GTE": have >= want}
        if op not in ops:
            raise validation(f"Unknown filter operator {op}")
        return bool(ops[op])

    def _bounds(self, group: dict[str, Any]) -> tuple[float, float] | None:
        """The modified-property range a filter group confines its hits to (inclusive), or None (no range)."""
        low, high, bounded = float("-inf"), float("inf"), False
        for flt in group.get("filters") or []:
            if flt.get("propertyName") != self.modified_property:
                continue
            op = flt.get("operator", "EQ")
            value = self._typed(self.modified_property, flt.get("value"))
            if op == "BETWEEN":
                top = self._typed(self.modified_property, flt.get("highValue"))
                if value is None or top is None:
                    return (0.0, -1.0)  # matches nothing
                low, high, bounded = max(low, value), min(high, top), True
            elif op in ("GT", "GTE", "EQ", "LT", "LTE"):
                if value is None:
                    return (0.0, -1.0)
                if op in ("GT", "GTE", "EQ"):
                    low, bounded = max(low, value), True
                if op in ("LT", "LTE", "EQ"):
                    high, bounded = min(high, value), True
        return (low, high) if bounded else None

    def _candidates(self, groups: list[dict[str, Any]]) -> list[Record]:
        """Live records that may match ``groups``, in id order: every live record unless each group bounds the
        modified property, then only those in one of the ranges (looked up in the modified-time index)."""
        ranges = [self._bounds(g) for g in groups]
        if not groups or any(r is None for r in ranges):
            return self.live()
        if self._modified[0] != self._version:
            pairs = sorted((self._typed(self.modified_property, r.properties.get(self.modified_property)) or 0.0,
                            int(r.id)) for r in self.records.values())
            self._modified = (self._version, [m for m, _ in pairs], [i for _, i in pairs])
        _, stamps, ids = self._modified
        picked: set[int] = set()
        for low, high in (r for r in ranges if r is not None):
            picked.update(ids[bisect.bisect_left(stamps, low):bisect.bisect_right(stamps, high)])
        found = (self.records.get(str(i)) for i in sorted(picked))
        return [r for r in found if r is not None and not r.archived and r.merged_into is None]

    def search(self, body: dict[str, Any], indexed_before: datetime | None = None) -> dict[str, Any]:
        """POST .../search: filterGroups (OR of ANDs), sorts, limit<=200, after (an offset, as HubSpot's is)."""
        groups = body.get("filterGroups") or []
        if len(groups) > 5 or any(len(g.get("filters") or []) > 6 for g in groups):
            raise validation("Too many filterGroups or filters (max 5 groups, 6 filters each)")
        limit = int_param(body.get("limit"), "limit", 10)
        if limit > 200:
            raise validation(f"limit must be at most 200 (got {limit})")
        after = int_param(body.get("after"), "after", 0)
        if after >= SEARCH_MAX_RESULTS:
            raise validation("There was a problem with the request.",
                             errors=[{"message": f"Paging past {SEARCH_MAX_RESULTS} results is not supported "
                                      f"(after={after}, limit={limit}). Narrow the query instead.",
                                      "code": "INVALID_PAGING"}])
        hits = [r for r in self._candidates(groups) if indexed_before is None or r.updated_at <= indexed_before]
        hits = [r for r in hits
                if not groups or any(all(self._matches(r, f) for f in g.get("filters") or []) for g in groups)]
        for sort in reversed(body.get("sorts") or []):
            if isinstance(sort, str):
                name, desc = sort.lstrip("-"), sort.startswith("-")
            else:
                name, desc = sort.get("propertyName", "hs_object_id"), sort.get("direction") == "DESCENDING"
            present = [r for r in hits if self._typed(name, r.properties.get(name) or None) is not None]
            absent = [r for r in hits if self._typed(name, r.properties.get(name) or None) is None]
            present.sort(key=lambda r: self._typed(name, r.properties[name]), reverse=desc)
            hits = present + absent
        page = hits[after:min(after + limit, SEARCH_MAX_RESULTS)]
        out: dict[str, Any] = {"total": len(hits), "results": [self.serialise(r, body.get("properties")) for r in page]}
        if after + limit < len(hits):
            out["paging"] = {"next": {"after": str(after + limit)}}
        return out

"""What segsync writes to Redtail: its tag groups and UDF fields, memberships and values, and opt-outs.

Kept apart from the pulls so each file stays small; :class:`WriteMixin` needs ``self.client`` and the
per-contact knowledge the pull fills in (``_memberships``; see :class:`~connectors.redtail.RedtailConnector`).
Redtail has no batch write: each membership added or removed and each value changed is one call, and a
contact is read first only when nothing is known of it (see :meth:`WriteMixin.push_properties`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from connectors.base import PropertyUpdate, RecordResult
from connectors.kit.paging import PageNumberPaginator, paginate
from connectors.redtail import mapping as M
from connectors.redtail import settings as S
from connectors.redtail.client import RedtailClient
from core.emails import normalize_email
from core.errors import ConfigError, InputError, RejectedRecordError, RetriableApiError


def _contact_gone(exc: RejectedRecordError) -> bool:
    """Redtail's 404 for the contact itself (deleted), not for a membership or value someone removed meanwhile."""
    return exc.status == 404 and "contact not found" in (exc.detail or str(exc)).lower()


class WriteMixin:
    """Schema, push and opt-out for :class:`~connectors.redtail.RedtailConnector`."""

    client: RedtailClient
    tag_group: str
    optout_tag_group: str
    _groups: dict[str, Mapping[str, Any]] | None
    _fields: dict[str, int] | None
    _segment_groups: dict[str, int]
    _memberships: dict[str, dict[int, int]]
    _udfs: dict[str, dict[int, tuple[int, str]]]
    _fresh_fields: set[int]
    _scores_wanted: tuple[int, ...]
    _gone: set[str]

    # ----------------------------------------------------------------- schema

    def all_rows(self, fetch: Callable[[int], Any], key: str, what: str) -> list[Mapping[str, Any]]:
        """Every row of a paged list: ``fetch(page)`` until an empty page or ``meta.total_pages``."""
        pager = PageNumberPaginator(f"redtail: {what}", lambda b: (M.rows_of(b, key, what), M.total_pages(b)),
                                    per_page=1)
        rows: list[Mapping[str, Any]] = []
        for _ in paginate(lambda: fetch(pager.page), pager):
            rows.extend(pager.items)
        return rows

    def groups(self) -> dict[str, Mapping[str, Any]]:
        """Every tag group by lower-case name (one listing, remembered)."""
        if self._groups is None:
            rows = self.all_rows(self.client.tag_groups, "tag_groups", "GET /tag_groups")
            self._groups = {str(g.get("name") or "").lower(): g for g in rows if isinstance(g.get("id"), int)}
        return self._groups

    def fields(self) -> dict[str, int]:
        """Every contact UDF field id by lower-case name (one listing, remembered)."""
        if self._fields is None:
            rows = self.all_rows(self.client.udf_fields, "contact_udf_fields", "GET /lists/contact_udf_fields")
            self._fields = {str(f.get("name") or "").lower(): f["id"] for f in rows if isinstance(f.get("id"), int)}
        return self._fields

    def owned(self) -> dict[int, str]:
        """Segment tag groups segsync created (by its description mark): id -> name. The only ones whose
        memberships it ever removes (never the opt-out group, even one segsync created)."""
        optout, prefix = self.optout_tag_group.lower(), self.group_name("").lower()
        # The name prefix too: two firms' configs (different crm.tag_group) may share one Redtail database.
        return {int(g["id"]): str(g.get("name")) for name, g in self.groups().items()
                if str(g.get("description") or "") == S.OWNED_MARK and name != optout and name.startswith(prefix)}

    def group_name(self, segment: str) -> str:
        """The name of segsync's tag group for ``segment``."""
        return f"{self.tag_group}: {segment}"

    def _segment_group(self, segment: str, create: bool) -> int | None:
        if segment in self._segment_groups:
            return self._segment_groups[segment]
        name = self.group_name(segment)
        group = self.groups().get(name.lower())
        if group is not None and str(group.get("description") or "") != S.OWNED_MARK:
            raise ConfigError(f"redtail: a tag group named {group.get('name')!r} already exists and segsync did not "
                              "create it; segsync never edits it - rename the segment or set crm.tag_group to "
                              "another prefix")
        if group is None:
            if not create:
                return None
            made = self.client.create_tag_group(name)
            group = made.get("tag_group") if isinstance(made, Mapping) else None
            if not isinstance(group, Mapping) or not isinstance(group.get("id"), int):
                raise InputError(f"redtail: POST /tag_groups for {name!r} answered without tag_group.id")
            self.groups()[name.lower()] = group
        self._segment_groups[segment] = int(group["id"])
        return int(group["id"])

    def _field(self, prop: str, create: bool) -> int | None:
        fid = self.fields().get(prop.lower())
        if fid is None and create:
            made = self.client.create_udf_field(prop)
            field = made.get("contact_udf_field") if isinstance(made, Mapping) else None
            if not isinstance(field, Mapping) or not isinstance(field.get("id"), int):
                raise InputError(f"redtail: POST /lists/contact_udf_fields for {prop!r} answered without an id")
            fid = self.fields()[prop.lower()] = int(field["id"])
            self._fresh_fields.add(fid)
        return fid

    def ensure_schema(self, property_name: str, segment_names: Sequence[str], score_names: Sequence[str]) -> None:
        """A tag group per segment (``"<tag_group>: <segment>"``) and a UDF per score (``segsync_score_<name>``),
        created once; when all exist, two reads. A tag group segsync did not create is refused, by name."""
        bad = [n for n in segment_names if not n or ";" in n]
        if bad:
            raise ConfigError(f"redtail: segment names cannot be empty or contain ';': {bad}")
        for segment in dict.fromkeys(segment_names):
            self._segment_group(segment, create=True)
        for score in dict.fromkeys(score_names):
            self._field(f"{S.SCORE_PREFIX}{score}", create=True)

    # ----------------------------------------------------------------- push

    def push_properties(self, updates: Sequence[PropertyUpdate]) -> list[RecordResult]:
        """Per contact: tag memberships to match the segment value, UDFs to match the scores; one result each.

        The segment property (``a;b``) is the set of segsync tag groups the contact should be in; memberships
        of other segsync groups are removed, memberships of groups segsync did not create are never touched.
        If Redtail stops answering (retries exhausted), the unsent records fail with that reason.
        """
        merged: dict[str, dict[str, str]] = {}
        for update in updates:
            merged.setdefault(str(update.key), {}).update(update.properties)
        results: dict[str, RecordResult] = {}
        keys = list(merged)
        for n, key in enumerate(keys):
            try:
                results[key] = self._push_one(key, merged[key])
            except RejectedRecordError as exc:
                results[key] = self._refused(key, exc)
            except ConfigError as exc:
                results[key] = RecordResult(key, "failed", getattr(exc, "detail", None) or str(exc))
            except RetriableApiError as exc:
                for k in keys[n:]:
                    results[k] = RecordResult(k, "failed", str(exc))
                break
        return [results[str(u.key)] for u in updates]

    def _refused(self, vid: str, exc: RejectedRecordError) -> RecordResult:
        """A 404 on a contact write means the contact was deleted in Redtail (listings omit deleted contacts):
        it is skipped (not a failure), not written again, and this connector's next pull reports it archived;
        anything else fails."""
        if _contact_gone(exc):
            self._gone.add(vid)
            self._memberships.pop(vid, None)
            self._udfs.pop(vid, None)
            return RecordResult(vid, "skipped", f"archived: Redtail contact {vid} was deleted (404 Contact not found)")
        return RecordResult(vid, "failed", exc.detail or str(exc))

    def _push_one(self, vid: str, props: Mapping[str, str]) -> RecordResult:
        if not props:
            return RecordResult(vid, "skipped", "no properties to write")
        if vid in self._gone:
            return RecordResult(vid, "skipped", f"archived: Redtail contact {vid} was deleted")
        # segsync writes only its segment property and its scores: every other key is the segment value.
        segment_values = [v for k, v in props.items() if not k.startswith(S.SCORE_PREFIX)]
        if segment_values:
            self._push_tags(vid, sorted({s for v in segment_values for s in v.split(";") if s}))
        scores = {k: v for k, v in props.items() if k.startswith(S.SCORE_PREFIX)}
        if scores:
            self._push_scores(vid, scores)
        return RecordResult(vid, "sent")

    def _retrying_once(self, vid: str, write: Callable[[bool], None]) -> None:
        """Write from what is known of the contact; if Redtail refuses (someone changed it since we read it),
        forget it, read it again and write once more."""
        known = vid in self._memberships or vid in self._udfs or bool(self._fresh_fields)
        try:
            write(False)
        except RejectedRecordError as exc:
            if not known or _contact_gone(exc):  # read just now, or the contact is gone: again would say the same
                raise
            self._memberships.pop(vid, None)
            self._udfs.pop(vid, None)
            write(True)

    def _membership_ids(self, vid: str) -> dict[int, int]:
        """tag group id -> membership id for the contact: as pulled this run (or written since), else read."""
        have = self._memberships.get(vid)
        if have is None:
            what = f"GET /contacts/{vid}/tag_memberships"
            have = M.membership_ids(M.rows_of(self.client.memberships(vid), "tag_memberships", what))
            self._memberships[vid] = have
        return have

    def _push_tags(self, vid: str, segments: list[str]) -> None:
        want: dict[int, str] = {}
        for segment in segments:
            gid = self._segment_group(segment, create=False)
            if gid is None:
                raise RejectedRecordError(f"redtail: no tag group {self.group_name(segment)!r} yet (ensure_schema "
                                          "creates it)", vendor=S.VENDOR)
            want[gid] = segment
        owned = self.owned()

        def write(_again: bool) -> None:
            have = self._membership_ids(vid)
            for gid in want:
                if gid not in have:
                    self._add_membership(vid, gid, have)
            for gid, mid in list(have.items()):
                if gid in owned and gid not in want:
                    self.client.remove_membership(vid, mid)
                    del have[gid]

        self._retrying_once(vid, write)

    def _add_membership(self, vid: str, gid: int, have: dict[int, int]) -> None:
        made = self.client.add_membership(vid, gid)
        row = made.get("tag_membership") if isinstance(made, Mapping) else None
        if isinstance(row, Mapping) and isinstance(row.get("id"), int):
            have[gid] = int(row["id"])
        else:  # created, but we do not know its id: read the contact again when it is next needed
            self._memberships.pop(vid, None)

    def _udf_values(self, vid: str, again: bool) -> dict[int, tuple[int, str]]:
        """UDF field id -> (value id, value) for the contact: known from our own writes, none for a field this
        connector created, else read (one call)."""
        have = self._udfs.get(vid)
        if have is None:
            what = f"GET /contacts/{vid}/udfs"
            if not again and set(self._scores_wanted) <= self._fresh_fields:
                have = {}  # every field we write was created by us just now: no contact has a value yet
            else:
                have = M.udf_values(M.rows_of(self.client.udfs(vid), "contact_udfs", what))
            self._udfs[vid] = have
        return have

    def _push_scores(self, vid: str, scores: Mapping[str, str]) -> None:
        fields: dict[int, str] = {}
        for prop, value in scores.items():
            fid = self._field(prop, create=False)
            if fid is None:
                if value == "":
                    continue  # nothing to clear
                raise RejectedRecordError(f"redtail: no user-defined field {prop!r} yet (ensure_schema creates it)",
                                          vendor=S.VENDOR)
            fields[fid] = value
        if not fields:
            return
        self._scores_wanted = tuple(fields)

        def write(again: bool) -> None:
            have = self._udf_values(vid, again)
            for fid, value in fields.items():
                current = have.get(fid)
                if current is None:
                    if value != "":
                        made = self.client.create_udf(vid, fid, value)
                        row = made.get("contact_udf") if isinstance(made, Mapping) else None
                        if isinstance(row, Mapping) and isinstance(row.get("id"), int):
                            have[fid] = (int(row["id"]), value)
                        else:
                            self._udfs.pop(vid, None)
                elif current[1] != value:
                    self.client.update_udf(vid, current[0], value)
                    have[fid] = (current[0], value)

        self._retrying_once(vid, write)

    # ----------------------------------------------------------------- opt-out

    def suppress(self, email: str, vendor_id: str | None, property_name: str) -> RecordResult:
        """Add every contact whose emails include the address (spouses may share one; ``vendor_id`` too) to the
        firm's opt-out tag group (Redtail's "do not email" convention) and clear segsync's tags, each read
        fresh (a long-lived connector's memory may be stale). Already a member: no write. No contact: nothing."""
        address = normalize_email(email)
        key = vendor_id or address or ""
        try:
            vids = list(dict.fromkeys(([vendor_id] if vendor_id else []) + self._find_all(address)))
            if not vids:
                return RecordResult(key, "sent", "no Redtail contact has this address")
            gid = self._optout_group()
        except (RejectedRecordError, InputError, ConfigError) as exc:
            return RecordResult(key, "failed", getattr(exc, "detail", None) or str(exc))
        failed: list[str] = []
        for vid in vids:
            problem = self._suppress_one(vid, gid, property_name)
            if problem:
                failed.append(f"contact {vid}: {problem}")
        if failed:
            return RecordResult(key, "failed", "; ".join(failed))
        return RecordResult(key, "sent", f"{len(vids)} contact(s) in tag group {self.optout_tag_group!r}")

    def _suppress_one(self, vid: str, gid: int, property_name: str) -> str:
        """Opt one contact out; "" when done (or deleted in Redtail), else what went wrong."""
        self._memberships.pop(vid, None)  # always read fresh: never clear from an earlier call's memory
        self._udfs.pop(vid, None)

        def write(_again: bool) -> None:
            have = self._membership_ids(vid)
            if gid not in have:
                self._add_membership(vid, gid, have)

        try:
            self._retrying_once(vid, write)
        except RejectedRecordError as exc:
            refused = self._refused(vid, exc)
            return "" if refused.outcome == "skipped" else refused.message
        except (InputError, ConfigError) as exc:
            return getattr(exc, "detail", None) or str(exc)
        if property_name:
            cleared = self.push_properties([PropertyUpdate(vid, {property_name: ""})])[0]
            if cleared.outcome == "failed":
                return f"clear segsync tags: {cleared.message}"
        return ""

    def _optout_group(self) -> int:
        group = self.groups().get(self.optout_tag_group.lower())
        if group is None:  # the firm has none yet: segsync creates it (marked as segsync's)
            made = self.client.create_tag_group(self.optout_tag_group, S.OPTOUT_MARK)
            group = made.get("tag_group") if isinstance(made, Mapping) else None
            if not isinstance(group, Mapping) or not isinstance(group.get("id"), int):
                raise InputError(f"redtail: POST /tag_groups for {self.optout_tag_group!r} answered without an id")
            self.groups()[self.optout_tag_group.lower()] = group
        return int(group["id"])

    def _find_all(self, address: str | None) -> list[str]:
        """Every contact whose emails include ``address`` exactly (INFERRED ``email`` search parameter, paged;
        every answer is checked, so a server that ignores the parameter finds nobody rather than a wrong person)."""
        if address is None:
            return []
        what = "GET /contacts/search?email"
        rows = self.all_rows(lambda n: self.client.call("GET", "/contacts/search", S.EP_CONTACTS,
                                                        params={"email": address, "page": n}), "contacts", what)
        found = []
        for raw in rows:
            email, others = M.emails_of(raw)
            if address == email or address in others:
                found.append(M.record_id(raw, what))
        return found

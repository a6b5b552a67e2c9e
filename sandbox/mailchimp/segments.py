"""Tags and static segments - one thing at Mailchimp, so one thing here.

A tag on a member is membership of the static segment with that name. :class:`SegmentOps` is the part
of :class:`sandbox.mailchimp.state.ListState` that manages them; it relies on the state's ``segments``,
``find`` and ``stamp``.

What Mailchimp documents (Marketing API reference, "Lists/Audiences > Segments" and "Tags"; the OpenAPI
conversion of spec 3.0.55 in Hevelop/go-client-mailchimp-marketing-api, ``api/openapi.yaml``): tags are
listed by ``GET /lists/{id}/segments`` as segments of ``type: "static"``, so a tag and a static segment
share one namespace per audience; ``POST /lists/{id}/members/{hash}/tags`` creates a tag that does not
exist yet; ``POST /segments/{id}`` adds/removes at most 500 members per call. Inferred: the wording of
the 400 answered when a new segment takes a name already used by a tag or segment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sandbox.mailchimp.problems import invalid, not_found


class Tagged(Protocol):
    """What segments need of a member (:class:`sandbox.mailchimp.state.Member` is one); no import of state."""

    @property
    def unique_email_id(self) -> str: ...


MAX_BATCH_MEMBERS = 500  # POST /lists/{id} and segment add/remove, per Mailchimp


@dataclass
class Segment:
    """A static segment (which is also what a tag is)."""

    id: int
    name: str
    created_at: datetime
    updated_at: datetime
    members: set[str] = field(default_factory=set)  # unique_email_ids


class SegmentOps:
    """Tag and segment operations of an audience (mixed into ``ListState``)."""

    segments: dict[int, Segment]
    _next_segment_id: int

    # provided by ListState, which mixes this class in
    find: Callable[[Any], Tagged | None]
    stamp: Callable[[], datetime]

    def segment_by_name(self, name: str) -> Segment | None:
        for seg in self.segments.values():
            if seg.name == name:
                return seg
        return None

    def segment(self, segment_id: str | int) -> Segment:
        try:
            return self.segments[int(segment_id)]
        except (KeyError, ValueError):
            raise not_found() from None

    def tag_names(self, member: Tagged) -> list[str]:
        """The member's active tags, by segment id order (Mailchimp lists them in creation order)."""
        return [seg.name for seg in self.segments.values() if member.unique_email_id in seg.members]

    def ensure_segment(self, name: str) -> Segment:
        """The static segment (tag) with this name, created if new."""
        seg = self.segment_by_name(name)
        if seg is None:
            now = self.stamp()
            seg = Segment(self._next_segment_id, name, now, now)
            self._next_segment_id += 1
            self.segments[seg.id] = seg
        return seg

    def apply_tags(self, member: Tagged, tags: Iterable[Any]) -> None:
        """``POST .../tags``: activate or deactivate named tags; unknown names become tags."""
        tags = list(tags)
        if not all(isinstance(t, dict) for t in tags):
            raise invalid("The resource submitted could not be validated.",
                          [{"field": "tags", "message": "Each tag must be an object {name, status}."}])
        for tag in tags:
            name = str(tag.get("name", "")).strip()
            if not name:
                raise invalid("Tag names must not be blank.")
            if tag.get("status") not in ("active", "inactive"):
                raise invalid(f"Tag status must be 'active' or 'inactive', not {tag.get('status')!r}.")
            if tag["status"] == "active":
                seg = self.ensure_segment(name)
                seg.members.add(member.unique_email_id)
                seg.updated_at = self.stamp()
            else:
                found = self.segment_by_name(name)
                if found is not None and member.unique_email_id in found.members:
                    found.members.discard(member.unique_email_id)
                    found.updated_at = self.stamp()

    def sync_tags(self, member: Tagged, names: Any, *, replace: bool) -> None:
        """Add these tags; with ``replace`` also drop every tag not named (batch ``sync_tags``)."""
        check_strings(names, "tags")
        wanted = {str(n) for n in names}
        for name in sorted(wanted):
            self.ensure_segment(name).members.add(member.unique_email_id)
        if replace:
            for seg in self.segments.values():
                if seg.name not in wanted:
                    seg.members.discard(member.unique_email_id)

    def create_segment(self, name: str, emails: Iterable[str]) -> Segment:
        """``POST /segments`` with ``static_segment``; emails not on the list are ignored (as documented)."""
        if not isinstance(name, str) or not name.strip():
            raise invalid("The resource submitted could not be validated.",
                          [{"field": "name", "message": "This value should not be blank."}])
        if self.segment_by_name(name) is not None:
            raise invalid(f"Sorry, a segment or tag named '{name}' already exists.")
        check_strings(emails, "static_segment")
        seg = self.ensure_segment(name)
        for email in emails:
            member = self.find(email)
            if member is not None:
                seg.members.add(member.unique_email_id)
        return seg

    def patch_segment(self, seg: Segment, name: Any, emails: Any) -> None:
        """``PATCH /segments/{id}``: rename and/or replace the static membership (unknown emails ignored)."""
        if name is not None:
            if not isinstance(name, str) or not name.strip():
                raise invalid("The resource submitted could not be validated.",
                              [{"field": "name", "message": "This value should not be blank."}])
            other = self.segment_by_name(name)
            if other is not None and other.id != seg.id:
                raise invalid(f"Sorry, a segment or tag named '{name}' already exists.")
            seg.name = name
        if emails is not None:
            if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
                raise invalid("static_segment must be an array of email addresses.")
            found = (self.find(e) for e in emails)
            seg.members = {m.unique_email_id for m in found if m is not None}
        seg.updated_at = self.stamp()

    def update_segment(self, seg: Segment, add: list[str], remove: list[str]) -> dict[str, Any]:
        """``POST /segments/{id}``: add/remove by email; unknown emails are reported, not fatal."""
        for label, items in (("members_to_add", add), ("members_to_remove", remove)):
            check_strings(items, label)
            if len(items) > MAX_BATCH_MEMBERS:
                raise invalid(f"{label} accepts at most {MAX_BATCH_MEMBERS} emails per call, got {len(items)}.")
        added: list[Tagged] = []
        removed: list[Tagged] = []
        missing: list[str] = []
        for email in add:
            member = self.find(email)
            if member is None:
                missing.append(email)
            elif member.unique_email_id not in seg.members:
                seg.members.add(member.unique_email_id)
                added.append(member)
        not_in_segment: list[str] = []
        for email in remove:
            member = self.find(email)
            if member is None:
                missing.append(email)
            elif member.unique_email_id in seg.members:
                seg.members.discard(member.unique_email_id)
                removed.append(member)
            else:
                not_in_segment.append(email)
        if added or removed:
            seg.updated_at = self.stamp()
        errors = []
        if missing:
            errors.append({"email_addresses": missing, "error": "Email addresses are not subscribed to the list"})
        if not_in_segment:
            errors.append({"email_addresses": not_in_segment, "error": "Email addresses are not in the segment"})
        return {"added": added, "removed": removed, "errors": errors,
                "error_count": len(missing) + len(not_in_segment)}


def check_strings(items: Any, field: str) -> None:
    """400 unless ``items`` is a JSON array of strings."""
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise invalid("The resource submitted could not be validated.",
                      [{"field": field, "message": f"{field} must be an array of strings."}])



"""The in-memory audience behind the Mailchimp simulator: members, tags/segments, campaigns.

Mailchimp models tags as static segments (one object, two names), so this does too: a tag on
a member is membership of the static segment with that name. Members are keyed by their
``unique_email_id``, which survives an email change, while ``id`` (the subscriber hash) is
always the MD5 of the current lower-cased address - as at Mailchimp.

All mutation goes through :class:`ListState` under one lock: the HTTP handlers run on the
server's event loop while tests call the inspection helpers from their own thread.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox.mailchimp.problems import SimError, invalid, not_found

STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional", "archived")
COMPLIANCE_STATES = ("unsubscribed", "cleaned")
MAX_BATCH_MEMBERS = 500  # POST /lists/{id} and segment add/remove, per Mailchimp
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: MD5 of the lower-cased address."""
    return hashlib.md5(email.strip().lower().encode()).hexdigest()  # noqa: S324 - the vendor's scheme


def compliance_error(email: str) -> SimError:
    """The 400 Mailchimp returns when asked to subscribe an unsubscribed or cleaned member."""
    return SimError(
        400,
        "Member In Compliance State",
        f"{email} is already a list member in compliance state due to unsubscribe, bounce, or compliance "
        "review and cannot be subscribed. They can resubscribe through a signup form (status 'pending').",
    )


@dataclass
class Member:
    """One audience member. ``activity`` feeds the member activity feed."""

    unique_email_id: str
    email: str
    status: str
    web_id: int
    merge_fields: dict[str, Any]
    timestamp_signup: datetime | None
    timestamp_opt: datetime | None
    ip_opt: str
    ip_signup: str
    last_changed: datetime
    member_rating: int = 2
    unsubscribe_reason: str = ""
    activity: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return subscriber_hash(self.email)


@dataclass
class Segment:
    """A static segment (which is also what a tag is)."""

    id: int
    name: str
    created_at: datetime
    updated_at: datetime
    members: set[str] = field(default_factory=set)  # unique_email_ids


@dataclass
class CampaignRecord:
    """A sent campaign and, per recipient (unique_email_id), their activity on it."""

    id: str
    title: str
    send_time: datetime
    recipients: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class ListState:
    """One audience and everything hanging off it."""

    def __init__(self, list_id: str, name: str, clock: Callable[[], datetime]) -> None:
        self.list_id = list_id
        self.name = name
        self.clock = clock
        self.lock = threading.RLock()
        self.created_at = clock()
        self.members: dict[str, Member] = {}  # unique_email_id -> member, in insertion order
        self._by_hash: dict[str, str] = {}
        self.segments: dict[int, Segment] = {}
        self.campaigns: dict[str, CampaignRecord] = {}
        self._next_web_id = 100001
        self._next_segment_id = 2001
        self._last_stamp: datetime | None = None

    # ---- lookups -------------------------------------------------------------------------
    def find(self, id_or_email: str) -> Member | None:
        """A member by subscriber hash or by email (Mailchimp accepts either in the path)."""
        key = id_or_email.strip().lower()
        if "@" in key:
            key = subscriber_hash(key)
        uid = self._by_hash.get(key)
        return self.members.get(uid) if uid else None

    def get(self, id_or_email: str) -> Member:
        """Like :meth:`find` but a 404 when absent."""
        member = self.find(id_or_email)
        if member is None:
            raise not_found(f"The requested resource could not be found: member {id_or_email}.")
        return member

    def segment_by_name(self, name: str) -> Segment | None:
        for seg in self.segments.values():
            if seg.name == name:
                return seg
        return None

    def segment(self, segment_id: str | int) -> Segment:
        try:
            return self.segments[int(segment_id)]
        except (KeyError, ValueError):
            raise not_found(f"The requested segment was not found: {segment_id}.") from None

    def tag_names(self, member: Member) -> list[str]:
        """The member's active tags, by segment id order (Mailchimp lists them in creation order)."""
        return [seg.name for seg in self.segments.values() if member.unique_email_id in seg.members]

    # ---- time ----------------------------------------------------------------------------
    def stamp(self) -> datetime:
        """Now, never earlier than the last stamp handed out (so last_changed only moves forward)."""
        now = self.clock()
        if self._last_stamp is not None and now < self._last_stamp:
            now = self._last_stamp
        self._last_stamp = now
        return now

    # ---- members -------------------------------------------------------------------------
    def add(
        self,
        email: str,
        status: str,
        merge_fields: dict[str, Any] | None = None,
        *,
        ip: str = "",
        opted_in_at: datetime | None = None,
        signed_up_at: datetime | None = None,
        last_changed: datetime | None = None,
        reason: str = "",
        rating: int = 2,
    ) -> Member:
        """Create a member (the caller checked it does not exist)."""
        validate_email(email)
        validate_status(status)
        now = self.stamp() if last_changed is None else last_changed
        uid = hashlib.sha1(f"{self.list_id}:{email.lower()}".encode()).hexdigest()[:10]  # noqa: S324 - an id, not security
        member = Member(
            unique_email_id=uid,
            email=email,
            status=status,
            web_id=self._next_web_id,
            merge_fields={"FNAME": "", "LNAME": "", **(merge_fields or {})},
            timestamp_signup=signed_up_at,
            timestamp_opt=opted_in_at if opted_in_at is not None else (now if status == "subscribed" else None),
            ip_opt=ip,
            ip_signup=ip,
            last_changed=now,
            member_rating=rating,
            unsubscribe_reason=reason,
        )
        self._next_web_id += 1
        self.members[uid] = member
        self._by_hash[member.id] = uid
        return member

    def set_status(self, member: Member, status: str, reason: str = "") -> bool:
        """Change a member's status under Mailchimp's compliance rule; True if it changed."""
        validate_status(status)
        if status == member.status:
            return False
        if status == "subscribed" and member.status in COMPLIANCE_STATES:
            raise compliance_error(member.email)
        now = self.stamp()
        if status == "subscribed":
            member.timestamp_opt = now
        if status == "unsubscribed":
            member.unsubscribe_reason = reason or "N/A (Unsubscribed via API)"
        member.activity.append({"activity_type": status if status != "unsubscribed" else "unsub",
                                "created_at_timestamp": now})
        member.status = status
        member.last_changed = now
        return True

    def change_email(self, member: Member, new_email: str) -> None:
        """Move a member to a new address; the subscriber hash follows, unique_email_id stays."""
        validate_email(new_email)
        if new_email.lower() == member.email.lower():
            member.email = new_email
            return
        if self.find(new_email) is not None:
            raise SimError(400, "Member Exists", f"{new_email} is already a list member. Use PUT to insert or update list members.")
        del self._by_hash[member.id]
        member.email = new_email
        self._by_hash[member.id] = member.unique_email_id
        member.last_changed = self.stamp()

    def update(self, member: Member, body: dict[str, Any], *, status_key: str = "status") -> None:
        """Apply a PUT/PATCH/batch body to an existing member; the compliance check runs first."""
        status = body.get(status_key)
        if status is not None:
            validate_status(status)
            if status == "subscribed" and member.status in COMPLIANCE_STATES:
                raise compliance_error(member.email)
        new_email = body.get("email_address")
        if new_email and new_email.lower() != member.email.lower():
            self.change_email(member, new_email)
        fields = body.get("merge_fields")
        if isinstance(fields, dict):
            changed = {k: v for k, v in fields.items() if member.merge_fields.get(k) != v}
            if changed:
                member.merge_fields.update(changed)
                member.last_changed = self.stamp()
        if status is not None:
            self.set_status(member, status)

    def upsert(self, path_id: str, body: dict[str, Any], *, patch: bool) -> tuple[Member, bool]:
        """PUT (``patch=False``) or PATCH a member. Returns ``(member, created)``."""
        member = self.find(path_id)
        if patch:
            if member is None:
                raise not_found(f"The requested resource could not be found: member {path_id}.")
            self.update(member, body)
            return member, False
        email = body.get("email_address")
        if not email:
            raise invalid("The resource submitted could not be validated.",
                          [{"field": "email_address", "message": "This value should not be blank."}])
        validate_email(email)
        if subscriber_hash(email) != (subscriber_hash(path_id) if "@" in path_id else path_id.lower()):
            raise invalid("The subscriber hash in the URL does not match the email_address in the body.")
        if member is not None:
            # status_if_new only applies to a new member, exactly as at Mailchimp.
            self.update(member, body)
            return member, False
        status = body.get("status_if_new") or body.get("status")
        if not status:
            raise invalid("The resource submitted could not be validated.",
                          [{"field": "status_if_new", "message": "This value should not be blank."}])
        member = self.add(email, status, body.get("merge_fields"), ip=body.get("ip_signup", ""))
        self.sync_tags(member, body.get("tags") or [], replace=False)
        return member, True

    # ---- tags and segments ---------------------------------------------------------------
    def ensure_segment(self, name: str) -> Segment:
        """The static segment (tag) with this name, created if new."""
        seg = self.segment_by_name(name)
        if seg is None:
            now = self.stamp()
            seg = Segment(self._next_segment_id, name, now, now)
            self._next_segment_id += 1
            self.segments[seg.id] = seg
        return seg

    def apply_tags(self, member: Member, tags: Iterable[dict[str, Any]]) -> None:
        """``POST .../tags``: activate or deactivate named tags; unknown names become tags."""
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
                seg = self.segment_by_name(name)
                if seg is not None and member.unique_email_id in seg.members:
                    seg.members.discard(member.unique_email_id)
                    seg.updated_at = self.stamp()

    def sync_tags(self, member: Member, names: Iterable[str], *, replace: bool) -> None:
        """Add these tags; with ``replace`` also drop every tag not named (batch ``sync_tags``)."""
        wanted = {str(n) for n in names}
        for name in sorted(wanted):
            self.ensure_segment(name).members.add(member.unique_email_id)
        if replace:
            for seg in self.segments.values():
                if seg.name not in wanted:
                    seg.members.discard(member.unique_email_id)

    def create_segment(self, name: str, emails: Iterable[str]) -> Segment:
        """``POST /segments`` with ``static_segment``; emails not on the list are ignored (as documented)."""
        if not name or not str(name).strip():
            raise invalid("The resource submitted could not be validated.",
                          [{"field": "name", "message": "This value should not be blank."}])
        if self.segment_by_name(name) is not None:
            raise invalid(f"Sorry, a segment or tag named '{name}' already exists.")
        seg = self.ensure_segment(name)
        for email in emails:
            member = self.find(email)
            if member is not None:
                seg.members.add(member.unique_email_id)
        return seg

    def update_segment(self, seg: Segment, add: list[str], remove: list[str]) -> dict[str, Any]:
        """``POST /segments/{id}``: add/remove by email; unknown emails are reported, not fatal."""
        for label, items in (("members_to_add", add), ("members_to_remove", remove)):
            if len(items) > MAX_BATCH_MEMBERS:
                raise invalid(f"{label} accepts at most {MAX_BATCH_MEMBERS} emails per call, got {len(items)}.")
        added: list[Member] = []
        removed: list[Member] = []
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


def validate_email(email: Any) -> None:
    """400 "Invalid Resource" for a missing or malformed address, in Mailchimp's words."""
    if not isinstance(email, str) or not _EMAIL.match(email.strip()):
        raise invalid(f"{email} looks fake or invalid, please enter a real email address.")


def validate_status(status: Any) -> None:
    """400 for a status Mailchimp does not know."""
    if status not in STATUSES:
        raise invalid("The resource submitted could not be validated.",
                      [{"field": "status", "message": f"Value {status!r} is not one of {', '.join(STATUSES)}."}])

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox.mailchimp.problems import SimError, invalid, not_found
from sandbox.mailchimp.segments import Segment, SegmentOps, check_strings

STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional", "archived")
COMPLIANCE_STATES = ("unsubscribed", "cleaned")
SOURCES = ("user", "admin", "api")  # who made a change, as Mailchimp's webhook ``sources`` name them
# an event listener gets (webhook type, member, source, extra data[...] fields)
Listener = Callable[[str, "Member", str, dict[str, Any]], None]
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: MD5 of the lower-cased address."""
    return hashlib.md5(email.strip().lower().encode()).hexdigest()


def compliance_error(email: str) -> SimError:
    """The 400 Mailchimp returns when asked to subscribe an unsubscribed or cleaned member."""
    return SimError(
        400,
        "Member In Compliance State",
        f"{email} is in a compliance state due to unsubscribe, bounce, or compliance review and cannot be subscribed.",
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
    archived_from: str = ""  # the status before an archive (DELETE), which keeps its compliance state

    @property
    def id(self) -> str:
        return subscriber_hash(self.email)

    @property
    def in_compliance_state(self) -> bool:
        """Unsubscribed or cleaned (also while archived): Mailchimp refuses to make this member subscribed."""
        return self.status in COMPLIANCE_STATES or (
            self.status == "archived" and self.archived_from in COMPLIANCE_STATES)


@dataclass
class CampaignRecord:
    """A sent campaign and, per recipient (unique_email_id), their activity on it."""

    id: str
    title: str
    send_time: datetime
    recipients: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class ListState(SegmentOps):
    """One audience and everything hanging off it (tags and segments: :class:`SegmentOps`)."""

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
        # every request that tried to set status/status_if_new to "subscribed": (email, API path)
        self.subscribe_attempts: list[tuple[str, str]] = []
        # refuse status_if_new "subscribed" on an unsubscribed/cleaned member too (Mailchimp ignores it there)
        self.strict_status_if_new = True
        self.source = "api"  # who is acting right now; the simulator's people helpers switch it to "user"
        self.listeners: list[Listener] = []
        self.forgotten: set[str] = set()  # subscriber hashes deleted permanently (GDPR erasure)

    # ---- audit and events ----------------------------------------------------------------
    def audit(self, body: Any, path: str, email: str = "") -> None:
        """Record ``body`` in :attr:`subscribe_attempts` if it asks for ``subscribed`` (accepted or not)."""
        if not isinstance(body, Mapping):
            return
        if body.get("status") == "subscribed" or body.get("status_if_new") == "subscribed":
            who = body.get("email_address") if isinstance(body.get("email_address"), str) else email
            if who and "@" not in who:  # a subscriber hash in the path: name the member it points at
                member = self.find(who)
                who = member.email if member else who
            self.subscribe_attempts.append((str(who or ""), path))

    def emit(self, kind: str, member: Member, **extra: Any) -> None:
        """Tell listeners (the webhook dispatcher) about a change; never raises into the caller."""
        for listener in list(self.listeners):
            listener(kind, member, self.source, extra)

    # ---- lookups -------------------------------------------------------------------------
    def find(self, id_or_email: Any) -> Member | None:
        """A member by subscriber hash, email or contact_id (Mailchimp accepts any of them in the path)."""
        if not isinstance(id_or_email, str):
            return None
        key = id_or_email.strip().lower()
        if "@" in key:
            key = subscriber_hash(key)
        uid = self._by_hash.get(key)
        if uid is None and key in self.members:  # contact_id (= unique_email_id here)
            uid = key
        return self.members.get(uid) if uid else None

    def get(self, id_or_email: str) -> Member:
        """Like :meth:`find` but a 404 when absent."""
        member = self.find(id_or_email)
        if member is None:
            raise not_found()
        return member

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
        if subscriber_hash(email) in self.forgotten:
            raise SimError(400, "Forgotten Email Not Subscribed",
                           f"{email} was permanently deleted and cannot be re-imported. "
                           "The contact must re-subscribe to get back on the list.")
        if merge_fields is not None and not isinstance(merge_fields, dict):
            raise invalid("The resource submitted could not be validated.",
                          [{"field": "merge_fields", "message": "Schema describes object, "
                                                                f"{type(merge_fields).__name__} found instead"}])
        ip = ip if isinstance(ip, str) else ""
        now = self.stamp() if last_changed is None else last_changed
        # an id, not security
        uid = hashlib.sha1(f"{self.list_id}:{email.lower()}".encode()).hexdigest()[:10]
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
        if status == "subscribed":
            self.emit("subscribe", member)
        return member

    def set_status(self, member: Member, status: str, reason: str = "") -> bool:
        """Change a member's status under Mailchimp's compliance rule; True if it changed."""
        validate_status(status)
        if status == member.status:
            return False
        if status == "subscribed" and member.in_compliance_state:
            raise compliance_error(member.email)
        now = self.stamp()
        if status == "subscribed":
            member.timestamp_opt = now
        if status == "unsubscribed":
            member.unsubscribe_reason = reason or "N/A (Unsubscribed via API)"
        member.archived_from = member.status if status == "archived" else ""
        member.activity.append({"activity_type": status if status != "unsubscribed" else "unsub",
                                "created_at_timestamp": now})
        member.status = status
        member.last_changed = now
        if status == "unsubscribed":
            self.emit("unsubscribe", member, action="unsub", reason="manual")
        elif status == "archived":
            self.emit("unsubscribe", member, action="delete", reason="manual")
        elif status == "cleaned":
            self.emit("cleaned", member, reason="hard")
        elif status == "subscribed":
            self.emit("subscribe", member)
        return True

    def delete_permanently(self, member: Member) -> None:
        """``POST .../actions/delete-permanent``: the member and its data are gone; the address can't be re-added."""
        del self.members[member.unique_email_id]
        del self._by_hash[member.id]
        self.forgotten.add(member.id)
        for seg in self.segments.values():
            seg.members.discard(member.unique_email_id)
        for campaign in self.campaigns.values():
            campaign.recipients.pop(member.unique_email_id, None)

    def change_email(self, member: Member, new_email: str) -> None:
        """Move a member to a new address; the subscriber hash follows, unique_email_id stays."""
        validate_email(new_email)
        if new_email.lower() == member.email.lower():
            member.email = new_email
            return
        if self.find(new_email) is not None:
            raise SimError(400, "Member Exists",
                           f"{new_email} is already a list member. Use PUT to insert or update list members.")
        old_email = member.email
        del self._by_hash[member.id]
        member.email = new_email
        self._by_hash[member.id] = member.unique_email_id
        member.last_changed = self.stamp()
        self.emit("upemail", member, old_email=old_email)

    def update(self, member: Member, body: dict[str, Any], *, status_key: str = "status") -> None:
        """Apply a PUT/PATCH/batch body to an existing member; the compliance check runs first."""
        status = body.get(status_key)
        if body.get("status_if_new") is not None:
            validate_status(body["status_if_new"])
        if status is not None:
            validate_status(status)
            if status == "subscribed" and member.in_compliance_state:
                raise compliance_error(member.email)
        elif (self.strict_status_if_new and body.get("status_if_new") == "subscribed"
              and member.in_compliance_state):
            raise compliance_error(member.email)
        new_email = body.get("email_address")
        if new_email is not None:
            validate_email(new_email)
        fields = body.get("merge_fields")
        if fields is not None and not isinstance(fields, dict):
            raise invalid("The resource submitted could not be validated.",
                          [{"field": "merge_fields", "message": "Schema describes object, "
                                                                f"{type(fields).__name__} found instead"}])
        if new_email and new_email.lower() != member.email.lower():
            self.change_email(member, new_email)
        if isinstance(fields, dict):
            changed = {k: v for k, v in fields.items() if member.merge_fields.get(k) != v}
            if changed:
                member.merge_fields.update(changed)
                member.last_changed = self.stamp()
                self.emit("profile", member)
        if status is not None:
            self.set_status(member, status)

    def upsert(self, path_id: str, body: dict[str, Any], *, patch: bool) -> tuple[Member, bool]:
        """PUT (``patch=False``) or PATCH a member. Returns ``(member, created)``."""
        member = self.find(path_id)
        if patch:
            if member is None:
                raise not_found()
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
        check_strings(body.get("tags") or [], "tags")
        member = self.add(email, status, body.get("merge_fields"), ip=body.get("ip_signup", ""))
        self.sync_tags(member, body.get("tags") or [], replace=False)
        return member, True

def validate_email(email: Any) -> str:
    """``email`` itself; 400 "Invalid Resource" for a missing or malformed address, in Mailchimp's words."""
    if not isinstance(email, str) or not _EMAIL.match(email.strip()):
        raise invalid(f"{email} looks fake or invalid, please enter a real email address.")
    return email


def validate_status(status: Any) -> None:
    """400 for a status Mailchimp does not know."""
    if status not in STATUSES:
        raise invalid("The resource submitted could not be validated.",
                      [{"field": "status", "message": f"Value {status!r} is not one of {', '.join(STATUSES)}."}])

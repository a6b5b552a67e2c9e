"""Which tags of the audience segsync may add members to: the ones it created, and the ones it was given.

Mailchimp keeps one namespace per audience for tags and static segments, and a tag named like one of
segsync's may already be there: made by hand by the advisor, or by a previous install. segsync adds
members only to a tag it created itself (recorded in the tenant's :class:`~connectors.base.ObjectLedger`
before and after the create call) or that it was told to adopt:

- ``esp.adopt`` in the config lists names segsync may take over as they are;
- an install that pushed before segsync recorded its objects adopts a tag once, when it holds members
  and every one of them is a member segsync sent to it (its last-sent state, in-flight writes included;
  read once, at the first push after the upgrade); a tag holding anybody else, or nobody, is not adopted.

Anything else is refused by name, with how to resolve it. Removing members is never refused: segsync
only removes members it sent (its last-sent state) or deactivates its own names on a person who opted out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping

from connectors.base import ADOPTED, CREATED, CREATING, LOST, MemoryLedger, ObjectLedger, VendorObject
from connectors.mailchimp import settings as S
from connectors.mailchimp.client import MailchimpClient, malformed, offset_pages
from core.emails import normalize_email
from core.errors import ApiError, FatalApiError

KIND = "tag"  # a tag and a static segment are one object at Mailchimp


class Claims:
    """Decides, once per name and connector, whether segsync may add members to a tag (creating it if absent)."""

    def __init__(self, client: MailchimpClient, list_id: str, adopt: Iterable[str] = ()) -> None:
        self.client, self.list_id = client, list_id
        self.adopt = frozenset(adopt)
        self.ledger: ObjectLedger = MemoryLedger()
        self.refused: dict[str, str] = {}  # name -> why, kept for the connector's life (one run)
        self._claimed: dict[str, int] = {}  # name -> segment id of tags found to be segsync's in this run

    def claim(self, names: Iterable[str], segments: MutableMapping[str, int],
              counts: Mapping[str, int]) -> dict[str, str]:
        """Make each name segsync's (creating the tag when absent); returns the refused names with why."""
        out: dict[str, str] = {}
        for name in sorted(set(names)):
            if name in self._claimed and segments.get(name) == self._claimed[name]:
                continue  # decided earlier in this run (one audience, one run: a batch after another)
            why = self.refused.get(name)
            if why is None:
                why = self._claim(name, segments, counts)
            if why:
                self.refused[name] = out[name] = why
            else:
                self._claimed[name] = segments[name]
        return out

    def _claim(self, name: str, segments: MutableMapping[str, int], counts: Mapping[str, int]) -> str:
        rec = self.ledger.objects(KIND, self.list_id).get(name)
        seg_id = segments.get(name)
        if seg_id is None:
            return self._create(name, segments)
        if rec is not None and rec.how == CREATING:
            # segsync asked for it and the answer was lost (a crash): the name was free when it asked.
            self._record(name, seg_id, CREATED, "created; recorded after the create call's answer was lost")
            return ""
        if rec is not None and rec.owned:
            if not rec.vendor_id or rec.vendor_id == str(seg_id):
                return ""
            return (f"{S.VENDOR}: the tag {name!r} in audience {self.list_id} is not the one segsync created "
                    f"(id {seg_id}, segsync's was {rec.vendor_id}): it was deleted and made again outside segsync; "
                    f"segsync adds nobody to it. Rename or delete it in Mailchimp, or list it under esp.adopt")
        if name in self.adopt:
            self._record(name, seg_id, ADOPTED, "listed under esp.adopt")
            return ""
        if self._was_segsyncs(name, seg_id, counts):
            self._record(name, seg_id, ADOPTED, "upgrade: its members were exactly those segsync last sent to it")
            return ""
        return (f"{S.VENDOR}: the tag {name!r} already exists in audience {self.list_id} and segsync did not "
                f"create it: segsync adds nobody to a tag it did not create. Rename that tag in Mailchimp (or "
                f"change push.tag_prefix), or let segsync write to it by listing {name!r} under esp.adopt")

    def _create(self, name: str, segments: MutableMapping[str, int]) -> str:
        self._record(name, None, CREATING, "")  # before the call: a crash after it still knows it was segsync
        try:
            body = self.client.create_segment(self.list_id, name)
        except FatalApiError:
            raise
        except ApiError as exc:
            if _name_taken(exc) and exc.attempts <= 1:
                # Refused on the only try: the name was taken before segsync asked. Not segsync's.
                self._record(name, None, LOST, str(exc)[:500])
                return f"{S.VENDOR}: the tag {name!r} could not be created in audience {self.list_id}: {exc}"
            # A retriable or transport failure, or a conflict on a retry (an earlier try may have landed): the
            # record stays CREATING, so a tag under this name found next run is segsync's, and none is made again.
            return (f"{S.VENDOR}: the tag {name!r} could not be created in audience {self.list_id} this run "
                    f"(tried again next run): {exc}")
        if not isinstance(body, Mapping) or body.get("id") is None:
            raise malformed(f"POST /lists/{self.list_id}/segments ({name!r})", "without a segment id")
        segments[name] = int(body["id"])
        self._record(name, segments[name], CREATED, "")
        return ""

    def _was_segsyncs(self, name: str, seg_id: int, counts: Mapping[str, int]) -> bool:
        """The upgrade rule: the tag holds members, and every one is a member segsync sent to it.

        Not "exactly": the run's own write-ahead (the person about to be added) is already in the last-sent
        state when this is asked, and a member segsync sent may have been untagged by hand since.
        """
        sent = self.ledger.sent_to(KIND, name)
        if not sent or counts.get(name, 0) > len(sent):  # member_count counts subscribed members only
            return False
        have: set[str] = set()
        what = f"GET /lists/{self.list_id}/segments/{seg_id}/members"
        for _, items in offset_pages(what, "members", lambda offset: self.client.segment_members(
                self.list_id, seg_id, offset)):
            have.update(normalize_email(str(m.get("email_address") or "")) or "" for m in items
                        if isinstance(m, Mapping))
        return bool(have) and have <= {normalize_email(e) or "" for e in sent}

    def _record(self, name: str, seg_id: int | None, how: str, note: str) -> None:
        self.ledger.record(VendorObject(KIND, self.list_id, name, "" if seg_id is None else str(seg_id), how, note))


def _name_taken(exc: ApiError) -> bool:
    """Mailchimp's 400 for a segment name in use ("Sorry, a segment or tag named ... already exists.")."""
    return exc.status == 400 and "already exists" in f"{exc.detail} {exc}".lower()

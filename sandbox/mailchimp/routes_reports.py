"""Campaign routes: ``GET /campaigns`` and ``GET /reports/{campaign_id}/email-activity``.

Every recipient of a campaign appears in its email activity, with an empty ``activity`` list when
they did nothing - which is how Mailchimp reports it and why "sent" can be derived from it.
"""

from __future__ import annotations

import zlib
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.mailchimp.problems import fmt_time, invalid, not_found, parse_time
from sandbox.mailchimp.state import CampaignRecord, ListState
from sandbox.mailchimp.views import endpoint, ok, page, paging


def report_routes(state: ListState) -> list[Route]:
    """Campaign and report routes bound to the audience's state."""

    @endpoint
    async def campaigns(request: Request) -> Response:
        q = request.query_params
        count, offset = paging(request)
        status = q.get("status")
        if status and status not in ("save", "paused", "schedule", "sending", "sent"):
            raise invalid(f"Unknown campaign status {status!r}.")
        sort_field = q.get("sort_field", "create_time")
        if sort_field not in ("create_time", "send_time"):
            raise invalid(f"sort_field must be create_time or send_time, not {sort_field!r}.")
        with state.lock:
            # create_time equals send_time for simulated campaigns, so both sorts agree
            items = sorted(state.campaigns.values(), key=lambda c: (c.send_time, c.id))
            if status and status != "sent":
                items = []  # every simulated campaign has been sent
            if q.get("list_id") and q["list_id"] != state.list_id:
                items = []  # the account has one audience
            if q.get("since_send_time"):
                since = parse_time(q["since_send_time"], "since_send_time")
                items = [c for c in items if c.send_time >= since]
            if q.get("before_send_time"):
                before = parse_time(q["before_send_time"], "before_send_time")
                items = [c for c in items if c.send_time < before]
            if q.get("sort_dir", "ASC").upper() == "DESC":
                items.reverse()
            return ok(request, {"campaigns": [_campaign_json(state, c) for c in page(items, count, offset)],
                                "total_items": len(items)})

    @endpoint
    async def email_activity(request: Request) -> Response:
        count, offset = paging(request)
        since_raw = request.query_params.get("since")
        since = parse_time(since_raw, "since") if since_raw else None
        with state.lock:
            campaign = state.campaigns.get(request.path_params["campaign_id"])
            if campaign is None:
                raise not_found()
            recipients = [uid for uid in campaign.recipients if uid in state.members]
            emails = []
            for uid in page(recipients, count, offset):
                member = state.members[uid]
                acts = [a for a in campaign.recipients[uid] if since is None or a["timestamp"] >= since]
                emails.append({
                    "campaign_id": campaign.id,
                    "list_id": state.list_id,
                    "list_is_active": True,
                    "email_id": member.id,
                    "email_address": member.email,
                    "activity": [{**a, "timestamp": fmt_time(a["timestamp"])} for a in acts],
                })
            return ok(request, {"emails": emails, "campaign_id": campaign.id, "total_items": len(recipients)})

    return [
        Route("/campaigns", campaigns, methods=["GET"]),
        Route("/reports/{campaign_id}/email-activity", email_activity, methods=["GET"]),
    ]


def _campaign_json(state: ListState, c: CampaignRecord) -> dict[str, Any]:
    return {
        "id": c.id,
        "web_id": zlib.crc32(c.id.encode()) % 10_000_000,
        "type": "regular",
        "create_time": fmt_time(c.send_time),
        "status": "sent",
        "emails_sent": len(c.recipients),
        "send_time": fmt_time(c.send_time),
        "content_type": "template",
        "recipients": {"list_id": state.list_id, "list_is_active": True, "list_name": state.name,
                       "recipient_count": len(c.recipients)},
        "settings": {"subject_line": c.title, "title": c.title, "from_name": "Sandbox Advisors"},
    }

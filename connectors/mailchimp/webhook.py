"""Mailchimp's list webhook: form-encoded events, authenticated by a secret in the URL.

Mailchimp signs nothing, so the tenant's ``webhook_secret`` is the last part of the URL and is
compared in constant time; the GET is Mailchimp's validation ping and answers 200. What the events mean:

===========================  ==================================================================
``unsubscribe``, ``cleaned``  ``email_marketing`` withdrawn
``subscribe``                 ``email_marketing`` granted only with the member's opt-in record
                              (``ip_opt``, kept as evidence); without it nothing: the event
                              does not say who subscribed the person (they, an admin, the API),
                              and the next pull grants only from ``timestamp_opt``
``upemail``                   an alias old -> new; the current consent is carried over
``profile``, ``campaign``     nothing (answered 200)
===========================  ==================================================================
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl

from connectors.hooks import (
    EMAIL_MARKETING,
    HookAlias,
    HookContext,
    HookRequest,
    HookResult,
    HookSignal,
    Refused,
    WebhookHandler,
)

VENDOR = "mailchimp"
TYPES = frozenset({"subscribe", "unsubscribe", "profile", "upemail", "cleaned", "campaign"})


class MailchimpWebhook(WebhookHandler):
    """``GET|POST /hooks/{tenant}/mailchimp/{secret}``."""

    vendor: ClassVar[str] = VENDOR
    routes: ClassVar[tuple[tuple[str, tuple[str, ...]], ...]] = (("/{secret}", ("GET", "POST")),)
    url_hint: ClassVar[str] = "/<consent.webhook_secret>"
    secret_in_url: ClassVar[bool] = True

    def admit(self, request: HookRequest, context: HookContext) -> bool:
        given = request.path_params.get("secret", "")
        if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                                   context.webhook_secret.encode("utf-8", "surrogatepass")):
            raise Refused(401, "bad secret")
        return request.method == "GET"  # Mailchimp's validation ping

    def parse(self, body: bytes, context: HookContext) -> HookResult | None:
        """What a Mailchimp form post means; None for events that change no consent."""
        fields = _fields(body)
        kind = fields.get("type")
        if kind not in TYPES:
            raise Refused(400, f"type must be one of {', '.join(sorted(TYPES))}")
        try:
            fired = datetime.strptime(fields.get("fired_at", ""), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        except ValueError:
            raise Refused(400, "fired_at must look like 2026-11-25 18:00:00") from None
        list_id = fields.get("data[list_id]")
        expected = (context.settings or {}).get("list_id")
        if expected is not None and list_id != expected:
            raise Refused(400, "data[list_id] is not this tenant's audience")
        if kind in ("profile", "campaign") or (kind == "subscribe" and not fields.get("data[ip_opt]")):
            # ``subscribe`` does not say who subscribed the person (they, an admin or the API): alone it is
            # not evidence of consent. Only the member's own opt-in record is (``ip_opt``, present when the
            # person confirmed from a form); without it the next pull reads timestamp_opt/ip_opt and decides.
            return None
        if kind == "upemail":
            old, new = _required(fields, "data[old_email]"), _required(fields, "data[new_email]")
            old_email, new_email = context.email(old, "data[old_email]"), context.email(new, "data[new_email]")
            return HookResult(alias=HookAlias(old_email, new_email, fired, VENDOR))
        email = context.email(_required(fields, "data[email]"), "data[email]")
        evidence: dict[str, Any] = {"vendor": VENDOR, "webhook": VENDOR, "type": kind}
        for key in ("list_id", "reason", "action", "campaign_id", "ip_opt", "ip_signup", "id"):
            value = fields.get(f"data[{key}]")
            if value:
                evidence["subscriber_id" if key == "id" else key] = value
        # A subscribe that got here carries the member's ip_opt.
        state: Literal["granted", "withdrawn"] = "granted" if kind == "subscribe" else "withdrawn"
        signal = HookSignal(email, EMAIL_MARKETING, state, VENDOR, fired, evidence)
        return HookResult((signal,), reason=f"mailchimp {kind}")


def _fields(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, errors="strict", max_num_fields=200)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(400, f"body is not a form-encoded Mailchimp event ({type(exc).__name__})") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise Refused(400, f"field {name!r} appears twice")
        fields[name] = value
    return fields


def _required(fields: Mapping[str, str], name: str) -> str:
    value = fields.get(name)
    if not value:
        raise Refused(400, f"{name} is missing")
    return value

"""Communication preferences: v3 (per subscription type) and v4 (statuses, batch read/write, opt-out of all).

HubSpot documents v3 as legacy and v4 as current (VENDORS.md; the published OpenAPI files
``Communication Preferences/Subscriptions/Rollouts/147906/v3`` and ``176901/v4/subscriptions.json``).
v4 ``POST /statuses/batch/write`` takes ``{inputs: [{subscriberIdString, subscriptionId, statusState
(SUBSCRIBED|UNSUBSCRIBED|NOT_SPECIFIED), channel: "EMAIL", legalBasis?, legalBasisExplanation?}]}`` and
answers a batch response (``status``, ``results`` of PublicStatus, ``startedAt``, ``completedAt``, and
``errors``/``numErrors`` for inputs it refused); its scope is ``communication_preferences.statuses.batch.write``.
Inferred: the 100-input cap (HubSpot's usual batch size) and that a batch write cannot resubscribe an
address opted out of all email (as v3 cannot).

HubSpot keeps two levels. Unsubscribing from one subscription type (v3 ``/unsubscribe``) sets that
type's status and the contact property ``hs_email_optout_<id>``; it does not opt the person out of
all email. Opting out of everything (v4 ``/unsubscribe-all``, or a person clicking "unsubscribe from
all") sets ``hs_email_optout`` and then every type reads NOT_SUBSCRIBED with source
PORTAL_WIDE_STATUS. Nothing can subscribe a portal-wide opted-out address again through the API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from sandbox.hubspot.errors import validation
from sandbox.hubspot.http import json_object
from sandbox.hubspot.schema import EMAIL_RE, iso

if TYPE_CHECKING:
    from sandbox.hubspot.sim import HubSpotSim

LEGAL_BASES = {"LEGITIMATE_INTEREST_PQL", "LEGITIMATE_INTEREST_CLIENT", "PERFORMANCE_OF_CONTRACT",
               "CONSENT_WITH_NOTICE", "NON_GDPR", "PROCESS_AND_STORE", "LEGITIMATE_INTEREST_OTHER"}


def portal_wide_optout(sim: HubSpotSim, email: str) -> bool:
    """Whether the address has opted out of all email (contact property or a stored status)."""
    contact = sim.resolve(sim.contacts, email, "email")
    if contact is not None and contact.properties.get("hs_email_optout") == "true":
        return True
    return email.lower() in sim.portal_optouts


def statuses(sim: HubSpotSim, email: str) -> list[dict[str, Any]]:
    """Every subscription type's status for one address (v3 PublicSubscriptionStatus shape)."""
    mine = sim.sub_status.get(email.lower(), {})
    wide = portal_wide_optout(sim, email)
    known = sim.resolve(sim.contacts, email, "email") is not None
    out = []
    for d in sim.subscriptions:
        if wide:
            st = {"status": "NOT_SUBSCRIBED", "legalBasis": None, "legalBasisExplanation": None,
                  "sourceOfStatus": "PORTAL_WIDE_STATUS"}
        else:  # a known contact in a non-GDPR portal is subscribed until it says otherwise
            st = mine.get(d["id"], {"status": "SUBSCRIBED" if known else "NOT_SUBSCRIBED", "legalBasis": None,
                                    "legalBasisExplanation": None, "sourceOfStatus": "SUBSCRIPTION_STATUS"})
        out.append({"id": d["id"], "name": d["name"], "description": d["description"], "preferenceGroupName": None,
                    **st})
    return out


def _check(email: str, legal_basis: Any) -> None:
    if not EMAIL_RE.match(email):
        raise validation(f"Invalid email address: {email}")
    if legal_basis is not None and legal_basis not in LEGAL_BASES:
        raise validation(f"Invalid legalBasis {legal_basis!r}; one of {sorted(LEGAL_BASES)}")


# -- v3 ------------------------------------------------------------------------------

async def definitions(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """GET /communication-preferences/v3/definitions."""
    return 200, {"subscriptionDefinitions": sim.subscriptions}


async def status(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """GET /communication-preferences/v3/status/email/{email}."""
    email = request.path_params["email"]
    with sim.lock:
        return 200, {"recipient": email, "subscriptionStatuses": statuses(sim, email)}


async def change_subscription(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """POST /communication-preferences/v3/unsubscribe | subscribe {emailAddress, subscriptionId, legalBasis...}."""
    op, body = request.path_params["op"], await json_object(request)
    if op not in ("subscribe", "unsubscribe"):
        raise validation(f"Unknown operation {op}")
    email, sub_id = str(body.get("emailAddress") or ""), str(body.get("subscriptionId") or "")
    (sim.unsubscribe_calls if op == "unsubscribe" else sim.subscribe_calls).append(dict(body))
    _check(email, body.get("legalBasis"))
    if sub_id not in {d["id"] for d in sim.subscriptions}:
        raise validation(f"Subscription {sub_id} does not exist in portal {sim.portal_id}")
    wanted = "NOT_SUBSCRIBED" if op == "unsubscribe" else "SUBSCRIBED"
    with sim.lock:
        if op == "subscribe" and portal_wide_optout(sim, email):
            raise validation(f"{email} has opted out of all email communication and cannot be resubscribed "
                             "through the API", sub_category="OPTED_OUT_OF_ALL")
        current = next(s for s in statuses(sim, email) if s["id"] == sub_id)
        if current["status"] == wanted:
            # HubSpot refuses a no-op change; connectors must treat this as "already done".
            already = "unsubscribed from" if op == "unsubscribe" else "subscribed to"
            raise validation(f"{email} is already {already} subscription {sub_id}")
        sim.sub_status.setdefault(email.lower(), {})[sub_id] = {
            "status": wanted, "legalBasis": body.get("legalBasis"),
            "legalBasisExplanation": body.get("legalBasisExplanation"), "sourceOfStatus": "SUBSCRIPTION_STATUS"}
        contact = sim.resolve(sim.contacts, email, "email")
        if contact is not None:
            name = f"hs_email_optout_{sub_id}"
            contact.properties[name] = "true" if op == "unsubscribe" else "false"
            sim.contacts.touch(contact, sim.clock())
        return 200, next(s for s in statuses(sim, email) if s["id"] == sub_id)


# -- v4 ------------------------------------------------------------------------------

def _v4_results(sim: HubSpotSim, email: str, reason: str | None = None) -> list[dict[str, Any]]:
    now = iso(sim.clock())
    return [{"subscriberIdString": email, "channel": "EMAIL", "subscriptionId": int(s["id"]),
             "subscriptionName": s["name"], "status": s["status"], "source": s["sourceOfStatus"],
             "legalBasis": s["legalBasis"], "legalBasisExplanation": s["legalBasisExplanation"],
             "setStatusSuccessReason": reason, "timestamp": now, "businessUnitId": 0}
            for s in statuses(sim, email)]


def _channel(request: Request) -> None:
    if request.query_params.get("channel") != "EMAIL":
        raise validation("channel is required and must be EMAIL")


async def v4_status(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """GET /communication-preferences/v4/statuses/{email}?channel=EMAIL."""
    _channel(request)
    started = iso(sim.clock())
    with sim.lock:
        results = _v4_results(sim, request.path_params["email"])
    return 200, {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": iso(sim.clock())}


async def v4_unsubscribe_all(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """POST /communication-preferences/v4/statuses/{email}/unsubscribe-all?channel=EMAIL: portal-wide opt-out."""
    _channel(request)
    email = request.path_params["email"]
    _check(email, None)
    started = iso(sim.clock())
    with sim.lock:
        sim.unsubscribe_calls.append({"emailAddress": email, "subscriptionId": "ALL"})
        already = portal_wide_optout(sim, email)
        sim.portal_optouts.add(email.lower())
        contact = sim.resolve(sim.contacts, email, "email")
        if contact is not None and not already:
            contact.properties["hs_email_optout"] = "true"
            sim.contacts.touch(contact, sim.clock())
        results = _v4_results(sim, email, None if already else "UNSUBSCRIBED_FROM_ALL")
    return 200, {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": iso(sim.clock())}


async def v4_batch_read(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """POST /communication-preferences/v4/statuses/batch/read?channel=EMAIL {"inputs": [emails]}."""
    _channel(request)
    inputs = (await json_object(request)).get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
        raise validation("inputs must be an array of email addresses")
    if len(inputs) > 100:
        raise validation(f"Batch input cannot exceed 100 inputs (got {len(inputs)}).")
    started = iso(sim.clock())
    with sim.lock:
        results = [{"subscriberIdString": email, "statuses": _v4_results(sim, email)} for email in inputs]
    return 200, {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": iso(sim.clock())}


def _write_one(sim: HubSpotSim, item: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Apply one batch-write input: (the new PublicStatus, None) or (None, a StandardError)."""
    email = str(item.get("subscriberIdString") or "") if isinstance(item, dict) else ""
    sub_id = str(item.get("subscriptionId") or "") if isinstance(item, dict) else ""
    state = item.get("statusState") if isinstance(item, dict) else None

    def refuse(message: str) -> tuple[None, dict[str, Any]]:
        return None, {"status": "error", "category": "VALIDATION_ERROR", "message": message,
                      "context": {"subscriberIdString": [email], "subscriptionId": [sub_id]}}

    if not EMAIL_RE.match(email):
        return refuse(f"Invalid email address: {email}")
    if item.get("channel") != "EMAIL":
        return refuse("channel is required and must be EMAIL")
    if state not in ("SUBSCRIBED", "UNSUBSCRIBED", "NOT_SPECIFIED"):
        return refuse(f"statusState must be SUBSCRIBED, UNSUBSCRIBED or NOT_SPECIFIED, not {state!r}")
    if sub_id not in {d["id"] for d in sim.subscriptions}:
        return refuse(f"Subscription {sub_id} does not exist in portal {sim.portal_id}")
    if item.get("legalBasis") is not None and item["legalBasis"] not in LEGAL_BASES:
        return refuse(f"Invalid legalBasis {item['legalBasis']!r}")
    if state == "SUBSCRIBED" and portal_wide_optout(sim, email):
        return refuse(f"{email} has opted out of all email communication and cannot be resubscribed")
    status = {"SUBSCRIBED": "SUBSCRIBED", "UNSUBSCRIBED": "NOT_SUBSCRIBED"}.get(state)
    mine = sim.sub_status.setdefault(email.lower(), {})
    if status is None:
        mine.pop(sub_id, None)
    else:
        mine[sub_id] = {"status": status, "legalBasis": item.get("legalBasis"),
                        "legalBasisExplanation": item.get("legalBasisExplanation"),
                        "sourceOfStatus": "SUBSCRIPTION_STATUS"}
    (sim.unsubscribe_calls if state == "UNSUBSCRIBED" else sim.subscribe_calls).append(
        {"emailAddress": email, "subscriptionId": sub_id, "legalBasis": item.get("legalBasis"),
         "legalBasisExplanation": item.get("legalBasisExplanation"), "api": "v4"})
    contact = sim.resolve(sim.contacts, email, "email")
    if contact is not None and status is not None:
        contact.properties[f"hs_email_optout_{sub_id}"] = "true" if status == "NOT_SUBSCRIBED" else "false"
        sim.contacts.touch(contact, sim.clock())
    return next(r for r in _v4_results(sim, email) if str(r["subscriptionId"]) == sub_id), None


async def v4_batch_write(sim: HubSpotSim, request: Request) -> tuple[int, Any]:
    """POST /communication-preferences/v4/statuses/batch/write {"inputs": [PublicStatusRequest]}."""
    inputs = (await json_object(request)).get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise validation("inputs must be a non-empty array of status requests")
    if len(inputs) > 100:
        raise validation(f"Batch input cannot exceed 100 inputs (got {len(inputs)}).")
    started = iso(sim.clock())
    results, errors = [], []
    with sim.lock:
        for item in inputs:
            done, error = _write_one(sim, item)
            if done is not None:
                results.append(done)
            if error is not None:
                errors.append(error)
    body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started,
                            "completedAt": iso(sim.clock())}
    if errors:
        body.update(errors=errors, numErrors=len(errors))
        return 207, body
    return 200, body


ROUTES = [
    ("/communication-preferences/v4/statuses/batch/read", v4_batch_read, ["POST"]),
    ("/communication-preferences/v4/statuses/batch/write", v4_batch_write, ["POST"]),
    ("/communication-preferences/v3/definitions", definitions, ["GET"]),
    ("/communication-preferences/v3/status/email/{email}", status, ["GET"]),
    ("/communication-preferences/v3/{op:str}", change_subscription, ["POST"]),
    ("/communication-preferences/v4/statuses/{email}", v4_status, ["GET"]),
    ("/communication-preferences/v4/statuses/{email}/unsubscribe-all", v4_unsubscribe_all, ["POST"]),
]

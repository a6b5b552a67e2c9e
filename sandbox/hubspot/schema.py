"""Property definitions and value validation, the way HubSpot's property API describes them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sandbox.hubspot.errors import HubSpotError, validation

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
READ_ONLY = {"hs_object_id", "createdate", "lastmodifieddate", "hs_lastmodifieddate", "hs_merged_object_ids"}
# Writing these is refused (READ_ONLY_VALUE): the opt-out only changes through communication preferences.
READ_ONLY_VALUE = {"hs_email_optout", "hs_analytics_num_page_views", "hs_analytics_num_visits",
                   "hs_analytics_last_visit_timestamp", "hs_email_last_open_date", "hs_email_last_click_date",
                   "hs_email_delivered", "hs_email_open", "hs_email_click", "hs_email_last_send_date",
                   "hs_email_optout_7001", "hs_email_optout_7002", "hs_email_optout_7003"}
TYPES = {"string", "number", "date", "datetime", "enumeration", "bool"}


def iso(dt: datetime) -> str:
    """HubSpot's timestamp format: ISO 8601 UTC with milliseconds and Z."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"  # drop "+00:00"


def to_millis(value: Any) -> float | None:
    """A date/datetime property or filter value (ms epoch or ISO string) as ms epoch."""
    if value is None or value == "":
        return None
    text = str(value)
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp() * 1000


def option(value: str, label: str | None = None, order: int = 0) -> dict[str, Any]:
    """One enumeration option."""
    return {"label": label or value, "value": value, "displayOrder": order, "hidden": False, "description": ""}


def definition(name: str, label: str, type_: str, field_type: str, group: str, options: list[str] | None = None,
               now: datetime | None = None, hubspot_defined: bool = True, **extra: Any) -> dict[str, Any]:
    """A full property definition as GET /crm/v3/properties/... returns it."""
    stamp = iso(now or datetime(2020, 1, 1, tzinfo=UTC))
    return {
        "name": name, "label": label, "type": type_, "fieldType": field_type, "groupName": group,
        "description": extra.get("description", ""),
        "options": [option(o, order=i) for i, o in enumerate(options or [])],
        "displayOrder": -1, "calculated": False, "externalOptions": False, "hasUniqueValue": name == "email",
        "hidden": False, "formField": True, "hubspotDefined": hubspot_defined, "archived": False,
        "createdAt": stamp, "updatedAt": stamp,
        "modificationMetadata": {"archivable": not hubspot_defined, "readOnlyDefinition": hubspot_defined,
                                 "readOnlyValue": name in READ_ONLY or name in READ_ONLY_VALUE
                                 or name.startswith("hs_lifecyclestage_")},
    }


def customer_property(name: str) -> dict[str, Any]:
    """A multi-select contact property a user made in HubSpot's UI.

    HubSpot's property model (CRM Properties API v3, ``Property.createdUserId``): "The internal user ID of
    the user who created the property in HubSpot. This field may not exist if the property was created
    outside of HubSpot" - so one made by hand carries it and one made through the API does not
    (https://developers.hubspot.com/docs/api-reference/latest/crm/properties/create-property).
    INFERRED: the user id's value and the group ("contactinformation") a user would pick.
    """
    prop = definition(name, name.replace("_", " ").capitalize(), "enumeration", "checkbox", "contactinformation",
                      ["vip", "prospect"], hubspot_defined=False, description="Made by hand in HubSpot")
    prop["createdUserId"] = prop["updatedUserId"] = "4815162"
    return prop


CONTACT_GROUPS = [("contactinformation", "Contact information"), ("emailinformation", "Email information"),
                  ("analyticsinformation", "Web analytics history"), ("advisor_book", "Advisor book")]
LIFECYCLE = ["subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer",
             "evangelist", "other"]


STAGE_DATES = {f"hs_lifecyclestage_{stage}_date" for stage in LIFECYCLE}


def default_contact_properties() -> dict[str, dict[str, Any]]:
    """The standard contact properties segsync touches, plus the book's custom ones."""
    d = [
        definition("email", "Email", "string", "text", "contactinformation"),
        definition("firstname", "First Name", "string", "text", "contactinformation"),
        definition("lastname", "Last Name", "string", "text", "contactinformation"),
        definition("hs_additional_emails", "Additional email addresses", "enumeration", "checkbox",
                   "contactinformation"),
        definition("createdate", "Create Date", "datetime", "date", "contactinformation"),
        definition("lastmodifieddate", "Last Modified Date", "datetime", "date", "contactinformation"),
        definition("hs_object_id", "Record ID", "number", "number", "contactinformation"),
        definition("hs_merged_object_ids", "Merged Contact IDs", "enumeration", "checkbox", "contactinformation"),
        definition("lifecyclestage", "Lifecycle Stage", "enumeration", "radio", "contactinformation", LIFECYCLE),
        definition("hs_email_optout", "Unsubscribed from all email", "enumeration", "booleancheckbox",
                   "emailinformation", ["true", "false"]),
        definition("hs_email_last_open_date", "Last marketing email open date", "datetime", "date",
                   "emailinformation"),
        definition("hs_email_last_click_date", "Last marketing email click date", "datetime", "date",
                   "emailinformation"),
        definition("hs_email_optout_7001", "Opted out of email: Marketing Information", "enumeration",
                   "booleancheckbox", "emailinformation", ["true", "false"]),
        definition("hs_email_optout_7002", "Opted out of email: One to One", "enumeration", "booleancheckbox",
                   "emailinformation", ["true", "false"]),
        definition("hs_email_optout_7003", "Opted out of email: Account and statement notices", "enumeration",
                   "booleancheckbox", "emailinformation", ["true", "false"]),
        definition("hs_email_last_send_date", "Last marketing email send date", "datetime", "date",
                   "emailinformation"),
        definition("hs_email_delivered", "Marketing emails delivered", "number", "number", "emailinformation"),
        definition("hs_email_open", "Marketing emails opened", "number", "number", "emailinformation"),
        definition("hs_email_click", "Marketing emails clicked", "number", "number", "emailinformation"),
        definition("hs_analytics_num_page_views", "Number of Pageviews", "number", "number", "analyticsinformation"),
        definition("hs_analytics_num_visits", "Number of Sessions", "number", "number", "analyticsinformation"),
        definition("hs_analytics_last_visit_timestamp", "Time of Last Session", "datetime", "date",
                   "analyticsinformation"),
        definition("age", "Age", "number", "number", "advisor_book", hubspot_defined=False),
        definition("age_band", "Age band", "enumeration", "select", "advisor_book",
                   ["18-34", "35-44", "45-54", "55-64", "65-74", "75+"], hubspot_defined=False),
        definition("account_tier", "Account tier", "enumeration", "select", "advisor_book",
                   ["core", "premier", "private"], hubspot_defined=False),
        definition("aum", "Assets under management", "number", "number", "advisor_book", hubspot_defined=False),
        definition("household_id", "Household ID", "string", "text", "advisor_book", hubspot_defined=False),
    ]
    d += [definition(f"hs_lifecyclestage_{stage}_date", f"Became a {stage} date", "datetime", "date",
                     "contactinformation") for stage in LIFECYCLE]
    return {p["name"]: p for p in d}


def default_deal_properties(stages: list[str], pipelines: list[str]) -> dict[str, dict[str, Any]]:
    """Deal properties the sandbox serves (deposits and upgrades); stage and pipeline ids are the options."""
    d = [
        definition("dealname", "Deal Name", "string", "text", "dealinformation"),
        definition("amount", "Amount", "number", "number", "dealinformation"),
        definition("closedate", "Close Date", "datetime", "date", "dealinformation"),
        definition("dealtype", "Deal Type", "enumeration", "radio", "dealinformation", ["deposit", "upgrade"]),
        definition("dealstage", "Deal Stage", "enumeration", "radio", "dealinformation", list(stages)),
        definition("pipeline", "Pipeline", "enumeration", "select", "dealinformation",
                   list(pipelines)),
        definition("createdate", "Create Date", "datetime", "date", "dealinformation"),
        definition("hs_lastmodifieddate", "Last Modified Date", "datetime", "date", "dealinformation"),
        definition("hs_object_id", "Record ID", "number", "number", "dealinformation"),
    ]
    return {p["name"]: p for p in d}


def invalid_property(name: str, message: str, code: str) -> HubSpotError:
    """HubSpot's 400 for a bad property value: the per-property details are JSON inside the message."""
    detail = [{"isValid": False, "message": message, "error": code, "name": name}]
    return validation(f"Property values were not valid: {json.dumps(detail)}", sub_category=code,
                      context={"propertyName": [name]})


def validate_value(prop: dict[str, Any] | None, name: str, value: Any) -> str:
    """Return the stored (string) form of ``value`` or raise a 400 HubSpotError with HubSpot's wording."""
    if prop is None:
        raise invalid_property(name, f'Property "{name}" does not exist', "PROPERTY_DOESNT_EXIST")
    if name in READ_ONLY_VALUE or name in STAGE_DATES:
        raise invalid_property(name, f"{name} is a read only property; its value cannot be set.", "READ_ONLY_VALUE")
    if value is None:
        return ""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if text == "":
        return ""
    kind = prop["type"]
    if name == "email" and not EMAIL_RE.match(text):
        raise invalid_property(name, f"Email address {text} is invalid", "INVALID_EMAIL")
    if kind == "number":
        try:
            float(text)
        except ValueError:
            raise invalid_property(name, f"{text} was not a valid number.", "INVALID_INTEGER") from None
    elif kind in ("date", "datetime"):
        millis = to_millis(text)
        if millis is None:
            raise invalid_property(name, f"{text} was not a valid long.", "INVALID_DATE")
        text = iso(datetime.fromtimestamp(millis / 1000, UTC))
    elif kind in ("enumeration", "bool") and prop["options"]:
        allowed = [o["value"] for o in prop["options"]]
        for part in text.split(";"):
            if part and part not in allowed:
                raise invalid_property(name, f"{part} was not one of the allowed options: {allowed}",
                                       "INVALID_OPTION")
    return text


def new_property(body: dict[str, Any], groups: Mapping[Any, dict[str, Any]], now: datetime) -> dict[str, Any]:
    """Validate a POST /properties body and build the stored definition."""
    for required in ("name", "label", "type", "fieldType", "groupName"):
        if not body.get(required):
            raise validation(f"Missing required field: {required}")
    if not isinstance(body["name"], str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,99}", body["name"]):
        raise validation(f"Invalid property name {body['name']!r}: it must start with a lowercase letter and contain "
                         "only lowercase letters, numbers and underscores")
    if body["type"] not in TYPES:
        raise validation(f"Invalid type {body['type']!r}")
    options = body.get("options") or []
    if not isinstance(options, list) or not all(isinstance(o, dict) and o.get("value") for o in options):
        raise validation("options must be a list of {label, value} objects")
    if body["groupName"] not in groups:
        raise HubSpotError(400, f"Property group {body['groupName']} does not exist", "VALIDATION_ERROR")
    prop = definition(body["name"], body["label"], body["type"], body["fieldType"], body["groupName"],
                      now=now, hubspot_defined=False, description=body.get("description", ""))
    prop["options"] = [option(o["value"], o.get("label"), o.get("displayOrder", i))
                       for i, o in enumerate(body.get("options") or [])]
    return prop

"""Which contact properties a model reads when none are declared: the discovery rules.

Explicit ``features:`` lists are used as given. Otherwise every stored property is considered and these
are left out: segsync's reserved columns and its own pushed properties, exclusions and sensitive
attributes from the config, identity, protected-trait and consent fields (:data:`NEVER_DISCOVERED`),
id-like text (mostly unique values) and dates kept as text (:data:`DATE_TEXT`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from core.errors import InputError
from scoring.specs import FeatureSpec

RESERVED = {"contact_id", "email", "created_at"}
# Text that starts like a date (ISO 8601 "2025-06-10", "2025-06-10T14:00:00Z", or "6/10/2025"). A date kept as
# text is never a category: its values are all but unique, and a record's modification time (a CRM's
# last-modified date, an ESP's last-changed) changes whenever anyone writes the record, segsync's own pushes
# included, so as an input it would turn every push into a changed score on the next run.
DATE_TEXT = r"^(?:\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4})(?:$|[T ])"
# Property names never *discovered* as inputs (a declared list is used as given): who a person is (names,
# addresses, phone numbers, record ids - proxies for protected traits, or creation order), protected traits
# themselves (age, birth date, gender, ... - measured for fairness, never inputs by default) and what they
# consented to (subscription status, opt-outs, legal basis - consent decides who is pushed, never how they
# score, and an opt-out segsync propagates would otherwise move the person's score). Matched on the name's
# "_"-separated words, case-insensitively, so ``hs_object_id``, ``firstname``, ``hs_email_optout_7001`` and
# Mailchimp's ``status``/``ip_opt`` are all left out; the report's list of discovered inputs shows the rest.
NEVER_DISCOVERED = re.compile(
    r"^status$|(?:^|_)(?:id|ids|uuid|phone|mobilephone|mobile|fax|firstname|lastname|name|fullname|salutation|"
    r"address|street|city|zip|postal|postcode|ip|optout|opt|unsubscribed|unsubscribe|subscription|subscriptions|"
    r"subscribed|consent|gdpr|legal|basis|marketable|bounce|bounced|"
    r"age|dob|birth|birthday|birthdate|gender|sex|race|ethnicity|religion|marital|nationality)(?:$|_)",
    re.IGNORECASE)


def select_properties(contacts: pd.DataFrame, spec: FeatureSpec,
                      exclude: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(numeric, categorical) property columns to use as inputs.

    Explicit lists win. Otherwise every non-reserved column is considered, minus exclusions,
    sensitive attributes, segsync's own pushed properties (feeding our scores back in would be
    a loop), identity and consent fields (:data:`NEVER_DISCOVERED`), id-like text columns (mostly unique
    values carry no pattern) and dates kept as text (see :data:`DATE_TEXT`).
    """
    skip = set(exclude) | set(spec.exclude_properties) | RESERVED
    if spec.numeric_properties or spec.categorical_properties:
        missing = [c for c in (*spec.numeric_properties, *spec.categorical_properties) if c not in contacts.columns]
        if missing:
            raise InputError(f"configured properties not found in contacts: {', '.join(missing)}")
        return ([c for c in spec.numeric_properties if c not in skip],
                [c for c in spec.categorical_properties if c not in skip])
    skip |= set(spec.sensitive_attributes)
    numeric: list[str] = []
    categorical: list[str] = []
    n = max(len(contacts), 1)
    for col in contacts.columns:
        # "_"-prefixed columns are segsync's bookkeeping (a source's row number), never behaviour.
        if col in skip or str(col).lower().startswith(("segsync", "_")) or NEVER_DISCOVERED.search(str(col)):
            continue
        s = contacts[col]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            numeric.append(col)
            continue
        if pd.api.types.is_datetime64_any_dtype(s):
            continue
        text = s.astype("string").str.strip().replace("", pd.NA)  # type: ignore[call-overload]  # stubs lack NA
        present = int(text.notna().sum())
        if present and pd.to_numeric(text, errors="coerce").notna().sum() >= 0.95 * present:
            numeric.append(col)
        elif present and text.str.match(DATE_TEXT).sum() >= 0.95 * present:
            continue
        elif text.nunique() <= max(spec.max_categories * 4, 0.5 * n):
            categorical.append(col)
    return numeric, categorical

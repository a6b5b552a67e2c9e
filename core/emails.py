"""Email addresses, the one way segsync compares and checks them."""

from __future__ import annotations

import re

# Deliberately loose (something@something.tld, no spaces): vendors own deliverability; this only
# catches values that cannot be an address at all (a name in the email column, a blank, a typo'd @).
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_email(email: str | None) -> str | None:
    """Lower-case and trim an email address; None (or blank) stays None."""
    if email is None:
        return None
    email = email.strip().lower()
    return email or None


def looks_like_email(email: str) -> bool:
    """True when ``email`` has the shape of an address (see :data:`EMAIL_RE`)."""
    return EMAIL_RE.match(email) is not None

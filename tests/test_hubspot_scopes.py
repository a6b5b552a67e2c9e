"""Issue 14, "Checked by": the README's HubSpot scope table, the scopes the connector asks for and the scopes
its 401 message lists are one and the same list."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.hubspot import HubSpotConnector
from connectors.hubspot import settings as S
from connectors.kit import RetrySettings
from core.errors import FatalApiError

SCOPE = re.compile(r"\b(?:crm|communication_preferences)\.[a-z_.]*[a-z]")


def readme_scopes() -> set[str]:
    """Scopes in the README's table (`a.read` / `.write` names two)."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    table = text[text.index("| scope | why |"):]
    table = table[: table.index("\n\n")]
    out: set[str] = set()
    for row in table.splitlines()[2:]:
        cell = row.split("|")[1]
        names = re.findall(r"`([^`]+)`", cell)
        base = names[0]
        out.add(base)
        for extra in names[1:]:  # ".write" after "crm.objects.contacts.read"
            out.add(base.rsplit(".", 1)[0] + extra)
    return out


def test_readme_scope_table_is_the_connectors_scope_list():
    assert readme_scopes() == set(S.REQUIRED_SCOPES)


def test_a_401_names_exactly_the_scopes_segsync_needs(make_sandbox):
    sb = make_sandbox(contacts=20, seed=63)
    conn = HubSpotConnector("pat-na1-not-a-real-token", sb.hubspot_url, plan="unlimited",
                            retry=RetrySettings(max_attempts=1, initial_wait=0.0, max_wait=0.0, total_budget=5.0))
    with pytest.raises(FatalApiError) as err:
        list(conn.pull_contacts(None, datetime.now(UTC)))
    assert set(SCOPE.findall(str(err.value))) == set(S.REQUIRED_SCOPES)

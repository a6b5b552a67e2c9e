"""Issue 14 item 9: one consent decision per person and purpose, acted on everywhere (docs/consent.md).

End to end against the sandbox: runs of the tenant, ``segsync consent record``/``history``/``status`` as
child processes, and the simulators' state. Each branch of the rule has its test: a withdrawal a later
grant superseded is not propagated (and history says so), a later withdrawal is propagated everywhere,
and a withdrawal at the very instant of the grant (order unknown) is withdrawn everywhere.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

from tests.test_vendor_reality import TENANT, consent_status, person_in_both, run_once, segsync, write_config


def _optin_time(config: Path, email: str) -> datetime:
    """When the ledger says the person opted in at Mailchimp (the grant the first run recorded)."""
    out = json.loads(segsync("consent", "history", str(config), "--tenant", TENANT, "--email", email, "--json"))
    grants = [e for e in out["events"] if e["purpose"] == "email_marketing" and e["state"] == "granted"
              and e["source"] == "mailchimp"]
    assert grants, "the first run recorded no Mailchimp opt-in for this person"
    return datetime.fromisoformat(grants[-1]["occurred_at"])


def _withdraw(config: Path, email: str, at: datetime) -> None:
    segsync("consent", "record", str(config), "--tenant", TENANT, "--email", email, "--purpose", "email_marketing",
            "--state", "withdrawn", "--occurred-at", at.isoformat())


def _actions(config: Path, email: str) -> list[dict]:
    out = json.loads(segsync("consent", "history", str(config), "--tenant", TENANT, "--email", email, "--json"))
    return out["actions"]


def _setup(make_sandbox, tmp_path, seed: int):
    sb = make_sandbox(contacts=150, seed=seed)
    config = write_config(tmp_path, sb)
    run_once(config)
    email, _ = person_in_both(sb)
    return sb, config, email


def test_a_withdrawal_older_than_the_opt_in_is_not_propagated_and_history_says_so(make_sandbox, tmp_path):
    sb, config, email = _setup(make_sandbox, tmp_path, 41)
    optin = _optin_time(config, email)
    _withdraw(config, email, optin - timedelta(days=30))  # e.g. an old CRM opt-out learnt late
    assert consent_status(config, email)["email_marketing"]["allowed"], "the later opt-in is the decision"
    run_once(config)
    assert sb.mailchimp.status(email) == "subscribed", "a superseded withdrawal must not unsubscribe anyone"
    actions = _actions(config, email)
    assert actions and all(a["status"] == "done" for a in actions)
    assert all("superseded by a later grant" in (a["last_error"] or "") for a in actions)
    text = segsync("consent", "history", str(config), "--tenant", TENANT, "--email", email)
    assert "not propagated: superseded by a later grant" in text


def test_a_withdrawal_after_the_opt_in_reaches_every_system(make_sandbox, tmp_path):
    sb, config, email = _setup(make_sandbox, tmp_path, 42)
    _withdraw(config, email, datetime.now().astimezone())
    assert not consent_status(config, email)["email_marketing"]["allowed"]
    run_once(config)
    assert sb.mailchimp.status(email) == "unsubscribed"
    assert email.lower() in sb.hubspot.optouts or "NOT_SUBSCRIBED" in json.dumps(
        sb.hubspot.sub_status.get(email.lower(), {}))
    assert not any("superseded" in (a["last_error"] or "") for a in _actions(config, email))


def test_a_withdrawal_at_the_same_instant_as_the_opt_in_fails_closed_everywhere(make_sandbox, tmp_path):
    sb, config, email = _setup(make_sandbox, tmp_path, 43)
    _withdraw(config, email, _optin_time(config, email))  # the order of the two cannot be known
    assert not consent_status(config, email)["email_marketing"]["allowed"]
    run_once(config)
    assert sb.mailchimp.status(email) == "unsubscribed", "order unknown: withdrawn, for every system"

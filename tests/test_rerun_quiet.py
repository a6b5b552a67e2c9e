"""A re-run with no change at the vendors makes zero write calls, through ``segsync sync`` over real HTTP.

The echo this guards against: every contact segsync writes gets a new modification time at the CRM
(HubSpot's ``lastmodifieddate``), so once the CRM's search has settled (``SEARCH_SETTLE_SECONDS`` after
the write) the next incremental pull, or any ``--full-refresh``, reads those contacts back as
"changed". That is segsync's own write, not a change: the scores, the segments and so the plan must
not move. Before the fix the model read ``lastmodifieddate`` as a category, so the third run of the
planted-signal book re-planned 178 changes (133 CRM updates, 45 Mailchimp tags).

Runs 1, 2 and 3 here: the first push, a plain re-run, and a re-run that re-reads every record
(``--full-refresh``, the echo at once rather than after the settle window). The slow case waits out
the settle window and re-runs plainly, as the scheduler would. The default book (HubSpot, 600 contacts,
where the date happened not to be picked as an input) and Wealthbox (declared features) are held to the
same invariant.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from consent.schema import consent_outbox
from consent.signals import ConsentSignal
from core.emails import normalize_email
from sandbox import Sandbox
from scoring.base import Encoder, TrainedModel
from scoring.discovery import select_properties
from scoring.specs import FeatureSpec, ScoreSpec
from sync.cli import cli
from sync.config import load_config, load_config_text
from sync.run.gate import ConsentGate
from sync.run.scorer import inputs_gone, wanted_properties, without_own_tags
from sync.store import open_store
from tests.configs import sandbox_config, signal_sandbox
from tests.test_wealthbox_sync import write_config as wealthbox_config


def sync(config: Path, *flags: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["sync", str(config), "--json", *flags], obj={})
    assert "Traceback" not in result.output, result.output[-2000:]
    assert result.exit_code == 0, result.output[-2000:]
    body = json.loads(result.stdout)
    report: dict[str, Any] = body[0] if isinstance(body, list) else body
    return report


def writes(sb: Sandbox) -> list[tuple[str, str, str]]:
    """Every call that changes vendor data, at any vendor of the sandbox (reads sent as POST excluded)."""
    return [(c.vendor, c.method, c.path) for c in sb.calls.writes()]


def planned(report: dict[str, Any]) -> dict[str, int]:
    return {dest: d["changes"] for dest, d in report["plan"]["destinations"].items() if d["changes"]}


# A book on which the sandbox's Wealthbox config pushes a segment (Sandbox.scores_yaml: review_propensity passes
# the gate at seed 7 on 1,250 contacts; at 400 nothing passes, and a run that pushes nothing proves nothing).
WEALTHBOX_BOOK = 1250

Setup = Callable[[Any, Path], tuple[Sandbox, Path]]

SETUPS: dict[str, Setup] = {
    # The planted-signal book (tests/configs.py): churn_watch is cut from a score that passes the gate.
    "signal-book-hubspot": lambda make, tmp: signal_sandbox(make, tmp, seed=5),
    # The default book (no planted signal) as test_e2e_sandbox runs it: churn_watch passes the gate at 600.
    "default-book-hubspot": lambda make, tmp: (sb := make(contacts=600, seed=5), sandbox_config(tmp, sb)),
    # Wealthbox as the CRM with the sandbox's own config (Sandbox.config_yaml: declared features).
    "default-book-wealthbox": lambda make, tmp: (sb := make(contacts=WEALTHBOX_BOOK, seed=7),
                                                 wealthbox_config(tmp, sb)),
}


@pytest.mark.slow
@pytest.mark.parametrize("setup", list(SETUPS))
def test_rerun_and_full_refresh_with_no_vendor_change_write_nothing(make_sandbox, tmp_path, setup):
    sb, config = SETUPS[setup](make_sandbox, tmp_path)
    first = sync(config)
    assert planned(first) and writes(sb), f"the first run pushed nothing; the re-runs would prove nothing: {first}"
    for flags in ((), ("--full-refresh",)):
        before = len(writes(sb))
        report = sync(config, *flags)
        assert planned(report) == {}, (flags, planned(report), report["plan"].get("examples"))
        assert writes(sb)[before:] == [], (flags, writes(sb)[before:])
        assert report["segments"] == first["segments"], flags


# Books holding people merged at the CRM whose merged-away address is subscribed at the ESP while the survivor
# opted out of email (checked below, so a change of the generator cannot make the test moot): seed 5 at 800, the
# survivor opted out at the CRM only; seed 7 at 600, at the CRM and at the ESP under the survivor's own address.
MERGED_OPT_OUT_BOOKS = {"crm-only": {"contacts": 800, "seed": 5}, "crm-and-esp": {"contacts": 600, "seed": 7}}


@pytest.mark.slow
@pytest.mark.parametrize("book", list(MERGED_OPT_OUT_BOOKS))
def test_one_opt_out_unsubscribes_every_esp_address_and_its_echo_propagates_nothing(make_sandbox, tmp_path, book):
    """One consent decision per person: the survivor's opt-out withdraws the person (``decide_people``), so run 1
    unsubscribes every ESP member the person has, the merged-away address included. The ESP then reports that
    address as unsubscribed (our own write read back); recording it is evidence, propagating it back to the CRM
    would be a write on a run where nothing changed."""
    sb = make_sandbox(**MERGED_OPT_OUT_BOOKS[book])
    config = sandbox_config(tmp_path, sb)
    people = {p.key: p for p in sb.book.people}
    cases = [p for p in sb.book.people if p.merged_into and p.in_esp and p.esp_status == "subscribed"
             and people[p.merged_into].crm_email_optout]
    assert cases, "the book no longer holds the case"
    first = sync(config)
    assert planned(first)
    for p in cases:  # the person's decision was acted on at every address the ESP has
        assert sb.mailchimp.status(p.esp_email or p.email) == "unsubscribed", p.key
    before = len(writes(sb))
    for flags in ((), ("--full-refresh",)):
        again = sync(config, *flags)
        assert writes(sb)[before:] == [], (flags, writes(sb)[before:])
        assert again["consent"].get("propagations_queued", 0) == 0, (flags, again["consent"])
    # The read-back itself, as the pull hands it to the gate (whether a re-pull reports a member's change depends
    # on which of the person's members the store holds the status of): evidence recorded, nothing propagated.
    cfg = load_config(config)
    store = open_store(cfg.store)
    try:
        gate = ConsentGate(store, cfg.tenants[0], "hubspot", "mailchimp")
        addresses = [normalize_email(p.esp_email or p.email) for p in cases]

        def withdrawn() -> set[str]:
            known = gate.ledger.decisions("firm", addresses, gate.policy)
            return {a for a in addresses if known[a].reasons.get("email_marketing") == "withdrawn"}

        pending = [a for a in addresses if a not in withdrawn()]  # a re-run may have recorded some already
        stats = gate.record([ConsentSignal(a, "email_marketing", "withdrawn", "consent", "mailchimp",
                                           datetime.now(UTC), reason="N/A (Unsubscribed via API)") for a in pending])
        assert (stats.recorded, stats.already_withdrawn, stats.enqueued) == (len(pending), len(pending), 0)
        assert withdrawn() == set(addresses)
        with store.engine.connect() as conn:  # none of them was ever queued to propagate, by any run
            assert conn.execute(sa.select(consent_outbox.c.email).where(
                consent_outbox.c.email.in_(addresses))).all() == []
        # A withdrawal at an address whose person had not opted out is still propagated (the rule is not "never").
        fresh = next(p for p in sb.book.people if p.in_crm and p.in_esp and not p.merged_into and
                     not p.crm_email_optout and p.esp_status == "subscribed")
        stats = gate.record([ConsentSignal(fresh.esp_email or fresh.email, "email_marketing", "withdrawn", "consent",
                                           "mailchimp", datetime.now(UTC), reason="Other")])
        assert (stats.withdrawals, stats.already_withdrawn) == (1, 0) and stats.enqueued > 0
        # ... to the CRM only: the ESP reported it, and knows the person by that one address.
        with store.engine.connect() as conn:
            queued = set(conn.execute(sa.select(consent_outbox.c.destination).where(
                consent_outbox.c.email == normalize_email(fresh.esp_email or fresh.email))).scalars())
        assert queued and all(d.startswith("crm.") for d in queued), queued
    finally:
        store.close()


# The settle window of the scheduled-run case (crm.search_settle_seconds): the sandbox's search has no index lag,
# so it need not be HubSpot's 30 s (SEARCH_SETTLE_SECONDS, the default). It must still cover the gap between
# run 1's last writes and run 2's start, so that run 2 does not read the echo and run 3 (asserted) does.
SETTLE_SECONDS = 10.0


@pytest.mark.slow
def test_three_plain_runs_past_the_search_settle_window_write_nothing_after_the_first(make_sandbox, tmp_path):
    """The reported case as it happens on a schedule: run 3 starts after run 1's writes have settled."""
    sb, config = signal_sandbox(make_sandbox, tmp_path, seed=5)
    text = config.read_text()
    assert "plan: unlimited," in text
    config.write_text(text.replace("plan: unlimited,", f"plan: unlimited, search_settle_seconds: {SETTLE_SECONDS},", 1))
    first = sync(config)
    settled = time.monotonic() + SETTLE_SECONDS + 1  # run 1's writes are searchable from then on
    assert writes(sb)
    before = len(writes(sb))
    assert planned(sync(config)) == {}
    time.sleep(max(0.0, settled - time.monotonic()))  # the only wait in this file; not a timed assertion
    third = sync(config)
    assert third["pull"]["hubspot.contacts"]["changed"] > 0, "run 3 did not read the echo back; the test is moot"
    assert planned(third) == {}, (planned(third), third["plan"].get("examples"))
    assert writes(sb)[before:] == []
    assert third["segments"] == first["segments"]


# --------------------------------------------------------------------------- the rule, without HTTP


def contacts_frame() -> pd.DataFrame:
    """Four contacts as the scorer reads them: a CRM's bookkeeping dates as text next to real properties."""
    return pd.DataFrame({
        "contact_id": ["a", "b", "c", "d"],
        "email": ["a@x.org", "b@x.org", "c@x.org", "d@x.org"],
        "created_at": pd.to_datetime(["2021-01-01"] * 4, utc=True),
        "lastmodifieddate": ["2026-12-01T15:40:57.042Z"] * 2 + ["2025-06-10T14:00:00.000Z"] * 2,
        "last_changed": ["2021-06-06T08:10:30+00:00", "", "2024-02-01T00:00:00+00:00", "2023-01-01T00:00:00+00:00"],
        "review_date": ["6/10/2025", "6/10/2025", "7/1/2025", None],
        "lifecyclestage": ["customer", "lead", "customer", "lead"],
        "hs_email_open": ["4", "0", "2", "1"],
    })


def test_dates_kept_as_text_are_not_model_inputs():
    numeric, categorical = select_properties(contacts_frame(), FeatureSpec())
    assert (numeric, categorical) == (["hs_email_open"], ["lifecyclestage"])


def test_a_saved_model_that_reads_a_date_as_text_is_retrained_not_reused():
    spec = ScoreSpec(name="churn_risk", kind="churn")
    model = TrainedModel(spec, pd.Timestamp("2025-06-01", tz="UTC"), pd.Timestamp("2025-06-02", tz="UTC"),
                         Encoder(["txn_count", "lastmodifieddate", "lifecyclestage"],
                                 {"lastmodifieddate": ["2025-06-10T14:00:00.000Z"],
                                  "lifecyclestage": ["customer", "lead"]}), None, [])
    as_of = pd.Timestamp("2025-06-30", tz="UTC")
    assert inputs_gone(model, contacts_frame(), as_of) == ["lastmodifieddate"]
    model.encoder = Encoder(["txn_count", "lifecyclestage"], {"lifecyclestage": ["customer", "lead"]})
    assert inputs_gone(model, contacts_frame(), as_of) == []


def test_segsyncs_own_segment_property_and_tags_are_not_read_back_as_inputs(tmp_path):
    vendors = SimpleNamespace(hubspot_token="pat-na1-00000000-000000000000", hubspot_url="http://127.0.0.1:9",
                              mailchimp_key="0" * 32 + "-us6", mailchimp_list_id="a1b2c3d4e5",
                              mailchimp_url="http://127.0.0.1:9/3.0")
    text = sandbox_config(tmp_path, vendors).read_text()
    text = text.replace("    holdout_percent: 10\n",
                        "    holdout_percent: 10\n    push: {crm_property: advisor_segments, tag_prefix: 'seg/'}\n")
    tenant = load_config_text(text).tenants[0]
    records = [{"properties": {"advisor_segments": "churn_watch", "tags": ["VIP", "seg/churn_watch"],
                               "lifecyclestage": "lead"}}]
    wanted, discovered = wanted_properties(tenant, records)
    assert discovered and "advisor_segments" not in wanted and {"tags", "lifecyclestage"} <= wanted
    assert without_own_tags(["VIP", "seg/churn_watch"], tenant.push.tag_prefix) == ["VIP"]

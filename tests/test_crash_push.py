"""A run that dies after the vendor applied a batch but before segsync recorded it (issue 20, item 1).

The vendor has the batch; segsync never heard back. If the wanted state then changes (here: the
person withdraws), the next run must still leave the vendor equal to the plan: the records were
written ahead as "in flight", so the rerun and the opt-out handlers treat them as possibly applied.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sync.cli.app import cli
from sync.config import load_config
from sync.run.pipeline import RunOptions, run_tenant
from sync.run.plan import CRM, TAGS
from sync.store import open_store
from tests.configs import signal_sandbox
from tests.test_e2e_sandbox import check_vendor_state, hubspot_segments, mailchimp_members
from tests.test_e2e_sandbox import sync_once as rerun


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs (not even the run's own error handling of Exception)."""


def small_book(make_sandbox, tmp_path: Path):
    """The smallest book whose churn score passes the scoring gate (the planted signal, 300 contacts)."""
    return signal_sandbox(make_sandbox, tmp_path, seed=5)


def crash_after_vendor_applied(config: Path, destination: str) -> None:
    """Run once, dying right after the vendor answered the first batch for ``destination``."""
    cfg = load_config(config)
    store = open_store(cfg.store)
    real = store.confirm_batch

    def confirm_then_die(tenant_id, run_id, dest, confirmed, outcomes):
        confirmed = list(confirmed)
        if dest == destination and any(v for _, v in confirmed):
            raise Killed  # the vendor applied the batch; its answer is lost with the process
        return real(tenant_id, run_id, dest, confirmed, outcomes)

    store.confirm_batch = confirm_then_die  # type: ignore[method-assign]
    try:
        with pytest.raises(Killed):
            run_tenant(cfg, cfg.tenants[0], store, RunOptions(), base_dir=config.parent)
    finally:
        store.close()


def withdraw(config: Path, email: str, purpose: str) -> None:
    result = CliRunner().invoke(cli, ["consent", "record", str(config), "--tenant", "firm", "--email", email,
                                      "--purpose", purpose, "--state", "withdrawn"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("destination", [TAGS, CRM])
def test_objection_after_a_crash_mid_push_clears_what_the_lost_batch_applied(make_sandbox, tmp_path, destination):
    sb, config = small_book(make_sandbox, tmp_path)
    crash_after_vendor_applied(config, destination)
    if destination == TAGS:
        tagged = sorted(e for e, (_, tags) in mailchimp_members(sb).items() if tags)
    else:
        tagged = sorted(e for e, segs in hubspot_segments(sb).items() if segs)
    assert tagged, "the killed batch applied nothing: the test would prove nothing"
    for email in tagged[:3]:
        withdraw(config, email, "profiling")  # no longer to be profiled: our tags and properties must go
    report = rerun(config)
    assert report["status"] == "ok", report
    check_vendor_state(config, sb)
    assert report["plan"]["in_flight_resent"] > 0
    again = rerun(config)
    assert again["plan"]["total_changes"] == 0, again["plan"]
    assert again["push"]["totals"] == {}, again["push"]


def test_a_rerun_after_a_crash_with_no_change_resends_only_the_lost_batch(make_sandbox, tmp_path):
    sb, config = small_book(make_sandbox, tmp_path)
    crash_after_vendor_applied(config, CRM)
    report = rerun(config)
    assert report["status"] == "ok", report
    # The first CRM batch (100 records) was applied but unanswered: only those are re-sent as in flight.
    check_vendor_state(config, sb)
    assert 0 < report["plan"]["in_flight_resent"] <= 100, report["plan"]


def test_the_small_signal_book_passes_the_gate_so_there_is_a_push_to_crash_in(make_sandbox, tmp_path):
    sb, config = small_book(make_sandbox, tmp_path)
    report = rerun(config)
    assert report["status"] == "ok", report
    gate = report["scoring"]["models"]["churn_risk"]["metrics"]["gate"]
    assert gate["passed"], gate
    assert gate["checks"]["gain_over_baseline"]["ci_low"] > 0.05, gate
    assert report["push"]["totals"], "the gate passed yet nothing was pushed"
    check_vendor_state(config, sb)


def test_the_planner_resends_in_flight_records_even_when_unchanged_and_the_guard_ignores_them():
    from sync.run.plan import Person, build_plan
    from sync.store.sqlcore import canonical

    people = [Person("c1", "a@x.com", "h1", "m1", "subscribed", True, True),
              Person("c2", "b@x.com", "h2", "m2", "subscribed", True, True)]
    last = {CRM: {}, TAGS: {"c1": canonical(["segsync:a"]), "c2": canonical(["segsync:a"])}}
    kwargs = dict(property_name="segsync_segments", score_names=[], segment_names=["a"], push_scores=False,
                  esp_tags=True, esp_segments=False, tag_prefix="segsync:", has_esp=True)
    settled = build_plan("t", people, {"c1": {"a"}, "c2": {"a"}}, {}, last, **kwargs)
    assert settled.changes[TAGS] == []  # confirmed and unchanged: nothing to send
    plan = build_plan("t", people, {"c1": {"a"}, "c2": {"a"}}, {}, last, unsure={TAGS: {"c1"}}, **kwargs)
    (change,) = plan.changes[TAGS]
    assert change.contact_id == "c1" and change.unsure and change.desired == ["segsync:a"]
    assert plan.changed_contacts() == 0  # a re-send as is is no change of mind for the guard

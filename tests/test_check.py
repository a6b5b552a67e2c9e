"""``segsync check`` against the sandbox vendors: good credentials pass; a revoked token, a missing
scope, an unknown audience and an unreachable store each fail with a plain message naming what to fix
(exit 2); no secret is ever printed."""

from __future__ import annotations

import json

from click.testing import CliRunner

from sync.check import FAIL, OK, WARN, check_config, check_store
from sync.cli import cli
from sync.config.models import load_config
from tests.configs import sandbox_config

SECRET = "e2e-webhook-secret-0123"


def run_check(path, *args):

    return CliRunner().invoke(cli, ["check", str(path), *args])


def by_what(findings):
    return {f.what: f for f in findings}


def test_check_passes_on_good_credentials_and_prints_the_webhook_urls(tmp_path, sandbox):
    path = sandbox_config(tmp_path, sandbox, secret=SECRET)
    writes_before = len(sandbox.calls.writes("hubspot")) + len(sandbox.calls.writes("mailchimp"))
    result = run_check(path)
    assert result.exit_code == 0, result.output
    assert "all checks passed" in result.output
    assert "token accepted; read with scopes crm.objects.contacts.read" in result.output
    assert f"esp mailchimp audience: {sandbox.mailchimp_list_id} ('" in result.output
    assert "http://127.0.0.1:8080/hooks/firm/mailchimp/<consent.webhook_secret>" in result.output
    assert "vendors cannot reach this" in result.output  # a warning, not a failure
    for secret in (SECRET, sandbox.hubspot_token, sandbox.mailchimp_key):
        assert secret not in result.output
    # reads only
    assert len(sandbox.calls.writes("hubspot")) + len(sandbox.calls.writes("mailchimp")) == writes_before


def test_a_revoked_token_fails_naming_the_credential(tmp_path, sandbox):
    path = sandbox_config(tmp_path, sandbox, secret=SECRET)
    old = sandbox.hubspot_token
    sandbox.hubspot.rotate_token("pat-na1-rotated-by-the-admin")  # the configured token is now refused
    result = run_check(path, "--json")
    assert result.exit_code == 2, result.output
    report = json.loads(result.output)
    assert report["ok"] is False
    failed = [f for f in report["findings"] if f["status"] == FAIL]
    assert [f["what"] for f in failed] == ["crm hubspot (crm.objects.contacts.read)"]  # one 401 is enough said
    assert failed[0]["tenant"] == "firm"
    assert failed[0]["detail"].startswith("crm.access_token refused the credential: ")
    assert "private-app token with scopes" in failed[0]["detail"]
    assert old not in result.output
    # the other firm-level checks still ran
    assert by_what_json(report)["esp mailchimp audience"]["status"] == OK


def by_what_json(report):
    return {f["what"]: f for f in report["findings"]}


def test_a_missing_scope_is_named_and_the_other_reads_still_run(tmp_path, make_sandbox):
    sb = make_sandbox(contacts=50, seed=3, scopes=["crm.objects.contacts.read", "crm.schemas.contacts.read",
                                                   "communication_preferences.read_write"])
    cfg = load_config(sandbox_config(tmp_path, sb, secret=SECRET))
    found = by_what(check_config(cfg, tmp_path))
    deals = found["crm hubspot (crm.objects.deals.read)"]
    assert deals.status == FAIL and deals.detail.startswith("crm.access_token lacks a permission (scope)")
    assert "crm.objects.deals.read" in deals.detail
    summary = found["crm hubspot"]
    assert summary.status == WARN
    assert (
        "crm.objects.contacts.read, crm.schemas.contacts.read, communication_preferences.read_write" in summary.detail
    )


def test_an_unknown_audience_is_named(tmp_path, sandbox):
    path = sandbox_config(tmp_path, sandbox, secret=SECRET)
    path.write_text(path.read_text().replace(sandbox.mailchimp_list_id, "nosuchlist"))
    found = by_what(check_config(load_config(path), tmp_path))
    audience = found["esp mailchimp audience"]
    assert audience.status == FAIL and audience.detail.startswith("esp.list_id 'nosuchlist': no such audience")
    assert found["crm hubspot"].status == OK


def test_a_wrong_mailchimp_key_names_it(tmp_path, sandbox):
    path = sandbox_config(tmp_path, sandbox, secret=SECRET)
    wrong = "f" * 32 + "-us6"
    path.write_text(path.read_text().replace(sandbox.mailchimp_key, wrong))
    result = run_check(path)
    assert result.exit_code == 2
    assert "esp.api_key refused the credential" in result.output
    assert wrong not in result.output


def test_an_unreachable_store_is_a_plain_message_without_the_password():
    finding = check_store("postgresql+psycopg://segsync:hunter2-db-password@127.0.0.1:1/segsync")
    assert finding.status == FAIL
    assert finding.detail.startswith("postgresql+psycopg://segsync:***@127.0.0.1:1/segsync: cannot connect (")
    assert "hunter2" not in finding.detail
    assert "unexpected" not in finding.detail and "OperationalError" not in finding.detail
    assert check_store("not a url").detail.startswith("store: 'not a url' is not a database URL")


def test_the_store_passes_when_it_answers(tmp_path):
    finding = check_store(f"sqlite:///{tmp_path / 'x.db'}")
    assert (finding.status, finding.what) == (OK, "store")


def test_public_url_is_what_the_vendors_see(tmp_path, sandbox):
    path = sandbox_config(tmp_path, sandbox, secret=SECRET)
    path.write_text(path.read_text().replace("tenants:", "server: {public_url: 'https://hooks.example.com'}\ntenants:"))
    found = check_config(load_config(path), tmp_path)
    urls = {f.what: f.detail for f in found if f.what.startswith("webhook")}
    assert urls == {"webhook mailchimp": "https://hooks.example.com/hooks/firm/mailchimp/<consent.webhook_secret>",
                    "webhook hubspot": "https://hooks.example.com/hooks/firm/hubspot",
                    "webhook preferences": "https://hooks.example.com/hooks/firm/preferences"}
    assert not [f for f in found if f.what == "webhooks"]  # https and public: no warning

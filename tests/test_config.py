"""Config: the example validates, mistakes are all reported with paths and lines, secrets never print."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from core.errors import ConfigError
from sync.cli import cli
from sync.config import load_config, load_config_text

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_ENV = {
    "HARBOR_HUBSPOT_TOKEN": "pat-na1-11111111-2222-3333-4444-555555555555",
    "HARBOR_MAILCHIMP_KEY": "0123456789abcdef0123456789abcdef-us6",
    "HARBOR_WEBHOOK_SECRET": "whsec-0123456789abcdef",
}

MINIMAL = """
version: 1
tenants:
  - id: t1
    crm: {type: hubspot, access_token: tok-secret-value-123}
    consent:
      webhook_secret: 0123456789abcdef-secret
      purposes: {email_marketing: {basis: consent}, profiling: {basis: legitimate_interest}}
"""


def test_example_config_is_valid():
    cfg = load_config(ROOT / "config.example.yaml", env=EXAMPLE_ENV)
    tenant = cfg.tenants[0]
    assert tenant.id == "harbor-wealth"
    assert tenant.crm.base_url == "https://api.hubapi.com"
    assert tenant.esp is not None and tenant.esp.list_id == "a1b2c3d4e5"
    assert {s.name for s in tenant.scores} == {"upgrade_propensity", "churn_risk", "ltv_12m"}


def test_validate_command_accepts_the_example(monkeypatch):
    for k, v in EXAMPLE_ENV.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(cli, ["validate", str(ROOT / "config.example.yaml")], obj={})
    assert result.exit_code == 0, result.output
    assert "harbor-wealth" in result.output


def test_three_mistakes_are_all_reported_with_paths_and_lines(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        MINIMAL.replace("id: t1", "id: t1\n    timezone: Mars/Olympus")
        .replace("access_token: tok-secret-value-123", "access_token: tok-secret-value-123, bsae_url: http://x")
        + "    segments: [{name: s, score: nope, top_percent: 5}]\n"
    )
    result = CliRunner().invoke(cli, ["validate", str(bad)], obj={})
    assert result.exit_code == 2
    out = result.output
    assert "Traceback" not in out
    assert f"{bad}:5: tenant t1: timezone: unknown time zone 'Mars/Olympus'" in out
    assert f"{bad}:6: tenant t1: crm.bsae_url: unknown key (did you mean base_url?)" in out
    assert "tenant t1: segments[0].score: refers to score 'nope'" in out


def test_missing_field_is_named_with_its_path():
    text = MINIMAL + "    esp: {type: mailchimp, api_key: k-us6}\n"
    with pytest.raises(ConfigError) as exc:
        load_config_text(text)
    assert "<config>:9: tenant t1: esp.list_id: field required" in exc.value.problems


def test_missing_env_var_is_named():
    with pytest.raises(ConfigError) as exc:
        load_config_text(MINIMAL.replace("tok-secret-value-123", '"${NOT_SET_ANYWHERE}"'), env={})
    expected = "<config>:5: tenant t1: crm.access_token: environment variable NOT_SET_ANYWHERE is not set"
    assert exc.value.problems == [expected]


def test_yaml_syntax_error_names_the_line():
    with pytest.raises(ConfigError, match=r"<config>:4: not valid YAML: .*started at line 3"):
        load_config_text("version: 1\ntenants:\n  - id: [unclosed\n")
    with pytest.raises(ConfigError, match=r'quote values that use'):
        load_config_text("version: 1\nx: {a: ${B}}\n")


def test_secrets_never_print(caplog):
    cfg = load_config_text(MINIMAL)
    tenant = cfg.tenants[0]
    for text in (repr(cfg), str(cfg), repr(tenant.crm), f"{tenant.consent}"):
        assert "tok-secret-value-123" not in text
        assert "0123456789abcdef-secret" not in text
    # and the redacting log filter masks them even if code logs them by mistake
    from connectors.kit.http import RedactingFilter

    logger = logging.getLogger("segsync.test")
    caplog.handler.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger="segsync.test"):
        logger.info("token is %s", tenant.crm.access_token.get_secret_value())
    assert "tok-secret-value-123" not in caplog.text and "***" in caplog.text


def test_planned_crm_types_are_a_clear_error():
    with pytest.raises(ConfigError) as exc:
        load_config_text(MINIMAL.replace("type: hubspot, access_token: tok-secret-value-123", "type: salesforce"))
    assert exc.value.problems[0].startswith("<config>:5: tenant t1: crm.type: salesforce is not supported yet")
    assert len(exc.value.problems) == 1


def test_duplicate_keys_and_tenants_are_errors():
    with pytest.raises(ConfigError) as exc:
        load_config_text("version: 1\nversion: 1\n")
    assert "<config>:2: version: version is given twice (first at line 1)" in exc.value.problems
    doubled = MINIMAL + MINIMAL.split("tenants:\n", 1)[1]
    with pytest.raises(ConfigError) as exc:
        load_config_text(doubled)
    expected = "<config>:9: tenant t1: id: tenant id 't1' is already used (line 4); ids must be unique"
    assert exc.value.problems == [expected]


def test_a_wealthbox_block_validates_and_its_typos_and_limits_are_reported():
    wb = "type: wealthbox, access_token: wb-secret-token-123"
    tenant = load_config_text(MINIMAL.replace("type: hubspot, access_token: tok-secret-value-123", wb)).tenants[0]
    assert tenant.crm.type == "wealthbox" and tenant.crm.per_page == 100 and tenant.crm.auth == "api_token"
    with pytest.raises(ConfigError) as exc:  # a typo, a per_page above the documented 100, an unknown auth
        load_config_text(MINIMAL.replace("type: hubspot, access_token: tok-secret-value-123",
                                         wb + ", tag_prefx: x, per_page: 101, auth: password"))
    text = "\n".join(exc.value.problems)
    assert "tag_prefx" in text and "per_page" in text and "100" in text and "auth" in text
    assert "wb-secret-token-123" not in text


def test_redtail_block_typo_and_page_size_above_the_cap_are_named():
    redtail = "type: redtail, api_key: rt-key-0001, username: advisor, password: rt-pass-0001"
    cfg = load_config_text(MINIMAL.replace("type: hubspot, access_token: tok-secret-value-123", redtail))
    assert cfg.tenants[0].crm.type == "redtail" and cfg.tenants[0].crm.page_size == 200
    with pytest.raises(ConfigError) as exc:
        load_config_text(MINIMAL.replace("type: hubspot, access_token: tok-secret-value-123",
                                         redtail + ", tag_gruop: mine, page_size: 500"))
    problems = "\n".join(exc.value.problems)
    assert "crm.tag_gruop: unknown key (did you mean tag_group?)" in problems
    assert "crm.page_size" in problems and "200" in problems
    assert "rt-pass-0001" not in problems and "rt-key-0001" not in problems

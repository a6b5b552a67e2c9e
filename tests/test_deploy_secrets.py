"""``${VAR}`` from ``VAR_FILE`` (Docker/compose secrets, systemd credentials), and the sandbox's
printed config carrying a schedule so ``segsync serve`` on it runs."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from sync.config.models import load_config_text

CONFIG = """version: 1
store: "sqlite:///:memory:"
tenants:
  - id: harbor
    crm: {type: hubspot, access_token: "${HS_TOKEN}"}
    consent:
      webhook_secret: ${HOOK_SECRET}
      purposes:
        email_marketing: {basis: consent}
        profiling: {basis: legitimate_interest}
"""


def secret_file(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_secret_comes_from_the_file_var_file_names(tmp_path):
    env = {"HS_TOKEN_FILE": secret_file(tmp_path, "hs", "pat-na1-from-file\n"),
           "HOOK_SECRET_FILE": secret_file(tmp_path, "hook", "hook-secret-from-a-file-01")}
    cfg = load_config_text(CONFIG, env)
    assert cfg.tenants[0].crm.access_token.get_secret_value() == "pat-na1-from-file"  # one trailing newline dropped
    assert cfg.tenants[0].consent.webhook_secret.get_secret_value() == "hook-secret-from-a-file-01"


def test_file_secret_problems_are_named_with_path_and_line(tmp_path):
    env = {"HS_TOKEN_FILE": str(tmp_path / "missing"), "HOOK_SECRET_FILE": secret_file(tmp_path, "empty", "\n")}
    with pytest.raises(ConfigError) as exc:
        load_config_text(CONFIG, env)
    problems = exc.value.problems
    missing, empty = tmp_path / "missing", tmp_path / "empty"
    assert f"<config>:5: tenant harbor: crm.access_token: HS_TOKEN_FILE names {missing}, which does not exist" in (
        problems
    )
    assert f"<config>:7: tenant harbor: consent.webhook_secret: HOOK_SECRET_FILE names {empty}, which is empty" in (
        problems
    )
    assert len(problems) == 2  # the emptied values are not reported again as "field required" or "too short"


def test_both_var_and_var_file_is_an_error(tmp_path):
    env = {"HS_TOKEN": "pat-na1-env", "HS_TOKEN_FILE": secret_file(tmp_path, "hs", "pat-na1-file"),
           "HOOK_SECRET": "hook-secret-from-env-0001"}
    with pytest.raises(ConfigError) as exc:
        load_config_text(CONFIG, env)
    expected = "<config>:5: tenant harbor: crm.access_token: both HS_TOKEN and HS_TOKEN_FILE are set; keep one"
    assert exc.value.problems == [expected]


def test_a_file_secret_is_masked_like_any_other(tmp_path):
    from connectors.kit.http import redact

    env = {"HS_TOKEN_FILE": secret_file(tmp_path, "hs", "pat-na1-masked-from-file-77"), "HOOK_SECRET": "h" * 20}
    load_config_text(CONFIG, env)
    assert "pat-na1-masked-from-file-77" not in redact("Authorization: Bearer pat-na1-masked-from-file-77")


def test_the_sandbox_config_has_a_schedule_that_serve_runs(tmp_path, sandbox):
    from sync.serve import Service
    from sync.store import open_store

    text = sandbox.config_yaml(store=f"sqlite:///{tmp_path / 'x.db'}", schedule="*/15 * * * *")
    cfg = load_config_text(text)
    assert cfg.tenants[0].schedule == "*/15 * * * *"
    service = Service(cfg, tmp_path, store=open_store(cfg.store))
    try:
        jobs = service.schedule()
        assert [j["tenant"] for j in jobs] == ["sandbox-advisors"]
    finally:
        service.shutdown()
        service.store.close()
    assert "schedule" not in sandbox.config_yaml()  # the default stays manual (tests, demo)

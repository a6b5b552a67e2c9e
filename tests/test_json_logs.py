"""`--log-format json` (or server.log_format: json): every log line is one JSON object; webhook access lines are
structured, with the Mailchimp secret in the path masked."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import os

from click.testing import CliRunner

from connectors.kit.http import register_secret
from sync.cli import cli
from sync.config import load_config_text
from sync.logs import ENV
from sync.serve import uvicorn_log_config
from tests.configs import consent_yaml

SECRET = "mc-hook-secret-0123456789"


def test_access_lines_are_json_with_the_webhook_secret_masked(monkeypatch):
    monkeypatch.setenv(ENV, "json")
    register_secret(SECRET)
    conf = uvicorn_log_config()
    stream = io.StringIO()
    conf["handlers"]["access"] = {**conf["handlers"]["access"], "stream": stream}
    conf["handlers"]["default"] = {**conf["handlers"]["default"], "stream": stream}
    logging.config.dictConfig(conf)
    try:
        logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "10.0.0.7:5000", "POST",
                                                 f"/hooks/harbor/mailchimp/{SECRET}", "1.1", 200)
        logging.getLogger("uvicorn.error").warning("token %s refused", SECRET)
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access, error = lines
    assert access["event"] == "http_request" and access["method"] == "POST" and access["status"] == 200
    assert access["path"] == "/hooks/harbor/mailchimp/***" and access["client"] == "10.0.0.7:5000"
    assert access["level"] == "info" and access["time"].endswith("+00:00")
    assert SECRET not in stream.getvalue() and error["level"] == "warning" and "***" in error["message"]


def test_cli_log_format_json_writes_one_object_per_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(ENV, raising=False)
    config = tmp_path / "c.yaml"
    config.write_text(f"""version: 1
server: {{log_format: json}}
tenants:
  - id: t1
    crm: {{type: csv, contacts: contacts.csv}}
    {consent_yaml("json-log-secret-0123456")}
""")
    assert load_config_text(config.read_text()).server.log_format == "json"
    result = CliRunner().invoke(cli, ["--log-format", "json", "-v", "validate", str(config)], obj={})
    assert result.exit_code == 0, result.output
    assert os.environ[ENV] == "json"  # the whole process (serve's uvicorn included) follows the option

    from sync.cli.app import setup_logging

    setup_logging(verbose=True, log_format="json")  # what the option did, now writing to this test's stderr
    register_secret(SECRET)
    logging.getLogger("segsync.sync").info("webhook for %s with %s", "t1", SECRET)
    logging.getLogger("segsync.sync").debug("not shown: segsync logs INFO under -v")
    err = capsys.readouterr().err
    records = [json.loads(line) for line in err.strip().splitlines()]  # every line parses
    ours = [r for r in records if r["logger"] == "segsync.sync"]
    assert len(ours) == 1 and SECRET not in err
    assert {"level": "info", "message": "webhook for t1 with ***"}.items() <= ours[0].items()

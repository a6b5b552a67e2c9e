"""The command line as users meet it: help, the sandbox command's config, errors without tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from sync.config import load_config_text


def segsync(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sync", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CI": "true"}, **kw)


def test_help_lists_every_command():
    out = segsync("--help").stdout
    for command in ("validate", "sync", "runs", "serve", "score", "report", "consent", "sandbox", "demo"):
        assert f"  {command}" in out, command
    assert "--dry-run" in segsync("sync", "--help").stdout


def test_sandbox_command_prints_a_config_that_validates(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "sync", "sandbox", "--contacts", "200"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env={**os.environ, "CI": "true"})
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "esp_static_segments" in line:
                break
        text = "".join(lines)
        config = text[text.index("version: 1"):]
        cfg = load_config_text(config)
        assert cfg.tenants[0].crm.base_url.startswith("http://127.0.0.1:")
        (tmp_path / "sb.yaml").write_text(config)
        assert segsync("validate", str(tmp_path / "sb.yaml")).returncode == 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()


def test_missing_config_file_is_one_clear_line(tmp_path):
    result = segsync("sync", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr and "Traceback" not in result.stderr

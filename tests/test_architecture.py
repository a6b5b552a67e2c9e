"""DESIGN.md's arrows: sync uses connectors, consent and scoring; those never import sync or each other
(plain records in connectors.base and errors in connectors.errors are the shared vocabulary), and only
the CLI's sandbox/demo commands, tests and benchmarks import sandbox."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = {"connectors.base", "connectors.errors", "connectors.http"}


def imports(package: str) -> list[tuple[str, str]]:
    found = []
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((str(path.relative_to(ROOT)), node.module))
            elif isinstance(node, ast.Import):
                found += [(str(path.relative_to(ROOT)), alias.name) for alias in node.names]
    return found


def test_connectors_consent_and_scoring_never_import_sync_or_each_other():
    bad = []
    for package, others in (("connectors", ("consent", "scoring")), ("consent", ("scoring",)), ("scoring", ("consent",))):
        for where, module in imports(package):
            top = module.split(".")[0]
            if top in ("sync", "sandbox", *others) and module not in SHARED:
                bad.append(f"{where} imports {module}")
            if package != "connectors" and top == "connectors" and module not in SHARED:
                bad.append(f"{where} imports {module}")
    assert bad == []


def test_only_the_demo_and_sandbox_commands_import_sandbox():
    allowed = {"sync/demo.py", "sync/cli/run_cmds.py"}
    bad = [f"{w} imports {m}" for w, m in imports("sync") if m.split(".")[0] == "sandbox" and w not in allowed]
    assert bad == []

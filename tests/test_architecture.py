"""The shape of the code, checked: DESIGN.md's arrows, no import cycles, a CLI that starts without the
scoring stack, and modules and functions small enough to read.

DESIGN.md's arrows: sync uses connectors, consent and scoring; those never import sync or each other
(core.*, the consent signal in consent.signals and the plain records in connectors.base are the shared
vocabulary; core imports nothing of ours), and only
the CLI's sandbox/demo commands, tests and benchmarks import sandbox."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = {"consent.signals", "connectors.base", "connectors.hooks"}
PACKAGES = ("core", "connectors", "consent", "scoring", "sync", "sandbox")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 80


def imports(package: str) -> list[tuple[str, str]]:
    found = []
    where = ROOT / package
    for path in [where] if where.is_file() else where.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((str(path.relative_to(ROOT)), node.module))
            elif isinstance(node, ast.Import):
                found += [(str(path.relative_to(ROOT)), alias.name) for alias in node.names]
    return found


def shared(module: str) -> bool:
    """True for the modules every package may import: ``core`` and the shared records."""
    return module.split(".")[0] == "core" or module in SHARED


def test_core_imports_only_the_standard_library():
    ours = ("connectors", "consent", "scoring", "sync", "sandbox")
    bad = [f"{w} imports {m}" for w, m in imports("core") if m.split(".")[0] in ours]
    third_party = [f"{w} imports {m}" for w, m in imports("core")
                   if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] not in ("core", "__future__")]
    assert bad == [] and third_party == []


def test_consent_signals_is_plain_data():
    assert [m for _, m in imports("consent/signals.py") if m.split(".")[0] not in sys.stdlib_module_names
            and m != "__future__"] == []


def test_connectors_consent_and_scoring_never_import_sync_or_each_other():
    bad = []
    for package, others in (
        ("connectors", ("consent", "scoring")),
        ("consent", ("scoring",)),
        ("scoring", ("consent",)),
    ):
        for where, module in imports(package):
            top = module.split(".")[0]
            if top in ("sync", "sandbox", *others) and not shared(module):
                bad.append(f"{where} imports {module}")
            if package != "connectors" and top == "connectors" and not shared(module):
                bad.append(f"{where} imports {module}")
    assert bad == []


def test_only_the_demo_and_sandbox_commands_import_sandbox():
    allowed = {"sync/cli/run_cmds.py"}
    bad = [f"{w} imports {m}" for w, m in imports("sync") if m.split(".")[0] == "sandbox" and w not in allowed]
    assert bad == []


# ---------------------------------------------------------------------------------------------- vendors

VENDOR_NAMES = re.compile(r"hubspot|mailchimp", re.IGNORECASE)


def vendor_mentions(package: str) -> list[str]:
    """Every line of ``package`` that names a vendor (code, strings, comments, docstrings, templates)."""
    found = []
    for path in sorted((ROOT / package).rglob("*")):
        if path.suffix not in (".py", ".html", ".css", ".mako") or not path.is_file():
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if VENDOR_NAMES.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_the_vendor_scan_sees_a_vendor_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text('"""Talks to HubSpot."""\nx = 1  # and to MAILCHIMP\n')
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert [m.split(":")[1] for m in vendor_mentions("pkg")] == ["1", "2"]


@pytest.mark.parametrize("package", ["sync", "consent"])
def test_no_vendor_names_outside_connectors(package: str) -> None:
    # Vendor knowledge lives in connectors/<vendor>/ (reached through connectors.registry) and sandbox/.
    assert vendor_mentions(package) == []


# ---------------------------------------------------------------------------------------------- cycles


def _is_type_checking(node: ast.AST) -> bool:
    """An ``if TYPE_CHECKING:`` block (its imports exist for the type checker only)."""
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
    )


def module_graph(package: str) -> dict[str, set[str]]:
    """module -> the modules of ``package`` it imports at run time, at any level (an import inside a
    function still ties the two modules together; hiding a cycle in a function does not remove it).
    Imports under ``if TYPE_CHECKING:`` are left out: they never execute, so they make no runtime circle."""
    modules: dict[str, Path] = {}
    for path in (ROOT / package).rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        tree = ast.parse(path.read_text(), str(path))
        type_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block) for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue  # ``if TYPE_CHECKING:`` imports never run: annotations, not an import-time dependency
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = here[: len(here) - node.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name`` imports mod.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_cycle_finder_finds_a_cycle_and_only_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package: str):
    assert cycles(module_graph(package)) == []


def test_type_checking_imports_are_not_runtime_edges(tmp_path):
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from a import b\nimport c\n"
    tree = ast.parse(source)
    type_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block) for n in ast.walk(block)}
    runtime = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in type_only]
    assert [getattr(n, "module", None) or n.names[0].name for n in runtime] == ["typing", "c"]


# ---------------------------------------------------------------------------------------------- fast CLI

PROBE = """
import json, sys
from sync.cli import cli
cli.main(sys.argv[1:], prog_name="segsync", standalone_mode=False, obj={})
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("pandas", "sklearn"))), file=sys.stderr)
"""


def heavy_modules_loaded(*args: str, env: dict[str, str] | None = None) -> list[str]:
    """Run ``segsync ARGS`` in a fresh interpreter; the pandas/scikit-learn modules it imported."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.mark.slow  # a fresh interpreter each: out of `make test-fast`, in `make test`
def test_the_probe_sees_a_heavy_import():
    # The probe must be able to fail: a pandas import made before the CLI runs is reported.
    proc = subprocess.run(
        [sys.executable, "-c", "import pandas\n" + PROBE, "--help"], cwd=ROOT,
        capture_output=True, text=True, timeout=120,
    )
    assert "pandas" in json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.mark.slow  # a fresh interpreter each: out of `make test-fast`, in `make test`
def test_segsync_help_imports_neither_pandas_nor_sklearn():
    assert heavy_modules_loaded("--help") == []


@pytest.mark.slow  # a fresh interpreter each: out of `make test-fast`, in `make test`
def test_segsync_validate_imports_neither_pandas_nor_sklearn():
    env = {
        "HARBOR_HUBSPOT_TOKEN": "pat-na1-11111111-2222-3333-4444-555555555555",
        "HARBOR_MAILCHIMP_KEY": "0123456789abcdef0123456789abcdef-us6",
        "HARBOR_WEBHOOK_SECRET": "whsec-0123456789abcdef",
    }
    assert heavy_modules_loaded("validate", str(ROOT / "config.example.yaml"), env=env) == []


# ---------------------------------------------------------------------------------------------- size


def oversized(package: str) -> Iterator[str]:
    """Modules over MAX_MODULE_LINES lines and functions over MAX_FUNCTION_LINES lines in ``package``."""
    for path in sorted((ROOT / package).rglob("*.py")):
        where = path.relative_to(ROOT)
        if "migrations" in where.parts and "versions" in where.parts:
            continue  # an Alembic revision is generated, and frozen once it ships: never edited to fit
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            yield f"{where}: {len(text.splitlines())} lines"
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    yield f"{where}:{node.lineno} {node.name}(): {length} lines"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_over_500_lines_and_no_function_over_80(package: str):
    assert list(oversized(package)) == []


# ---------------------------------------------------------------------------------------------- registry


def test_every_vendor_folder_with_a_plugin_is_registered() -> None:
    # Adding a vendor = its folder + one line in VENDOR_MODULES: a plugin.py that is not listed is a
    # connector nobody can configure.
    from connectors import registry

    folders = {f"connectors.{p.parent.name}.plugin" for p in (ROOT / "connectors").glob("*/plugin.py")}
    assert folders == set(registry.VENDOR_MODULES)
    names = [p.name for p in registry.plugins()]
    assert len(names) == len(set(names))
    assert not set(names) & {t for planned in registry.PLANNED.values() for t in planned}

"""scoring/ has no import circle (module- or function-level), no hidden function-level imports of itself,
and no module or function past its size limit."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` under ``root`` by dotted name."""
    return {module_name(root, p): p for p in sorted((root / package).rglob("*.py"))}


def imported(node: ast.Import | ast.ImportFrom, here: str, is_package: bool, known: dict[str, Path]) -> set[str]:
    """The modules of the package an import statement loads: the target, its submodules named in
    ``from x import y``, and every parent package (importing ``a.b.c`` runs ``a`` and ``a.b`` first)."""
    if isinstance(node, ast.Import):
        targets = {alias.name for alias in node.names}
    else:
        base = node.module or ""
        if node.level:
            anchor = here.split(".") if is_package else here.split(".")[:-1]
            anchor = anchor[: len(anchor) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        targets = {base} | {f"{base}.{alias.name}" for alias in node.names}
    loaded = set()
    for target in targets:
        parts = target.split(".")
        loaded |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {m for m in loaded if m in known and m != here}


def import_graph(root: Path, package: str) -> tuple[dict[str, set[str]], list[str]]:
    """Edges module -> modules it imports (anywhere in the file), and the function-level imports found."""
    known = modules(root, package)
    graph: dict[str, set[str]] = {name: set() for name in known}
    nested: list[str] = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found = imported(node, name, path.name == "__init__.py", known)
                graph[name] |= found
                if found and id(node) not in top_level and not _type_checking_only(tree, node):
                    nested.append(f"{path.relative_to(root)}:{node.lineno} imports {', '.join(sorted(found))}")
    return graph, nested


def _type_checking_only(tree: ast.Module, node: ast.AST) -> bool:
    return any(isinstance(n, ast.If) and ast.unparse(n.test).endswith("TYPE_CHECKING") and node in ast.walk(n)
               for n in tree.body)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, each as the path that closes it (a -> b -> a)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start)
    return found


def test_scoring_has_no_import_circle():
    graph, _ = import_graph(ROOT, "scoring")
    assert graph["scoring.registry"] >= {"scoring.kinds.classifier", "scoring.kinds.ltv", "scoring.kinds.cluster"}
    assert [" -> ".join(c) for c in cycles(graph)] == []


def test_scoring_does_not_import_itself_inside_functions():
    _, nested = import_graph(ROOT, "scoring")
    assert nested == [], "a function-level import hides a circle; import at module level"


def test_kinds_import_only_the_shared_layer_never_each_other_or_the_registry():
    graph, _ = import_graph(ROOT, "scoring")
    kinds = {m for m in graph if m.startswith("scoring.kinds.")}
    upper = {"scoring.registry", "scoring.models", "scoring.backtest", "scoring.card", "scoring.persist"}
    bad = {k: sorted(graph[k] & (kinds | upper)) for k in kinds if graph[k] & (kinds | upper)}
    assert bad == {}
    assert not graph["scoring.base"] & (kinds | upper), "scoring.base sits at the bottom"


def test_the_walk_finds_circles_at_module_and_function_level(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub import c\n")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def late():\n    from . import a\n    return a\n")
    (pkg / "sub" / "c.py").write_text("import pkg.sub.d\n")  # runs pkg.sub first
    (pkg / "sub" / "d.py").write_text("")
    graph, nested = import_graph(tmp_path, "pkg")
    found = {" -> ".join(c) for c in cycles(graph)}
    assert "pkg.a -> pkg.b -> pkg.a" in found  # hidden in a function, still a circle
    assert "pkg.sub -> pkg.sub.c -> pkg.sub" in found  # a package __init__ importing its child that imports it
    assert nested == ["pkg/b.py:2 imports pkg, pkg.a"]


def test_scoring_modules_and_functions_stay_small():
    long_modules, long_functions = [], []
    for path in modules(ROOT, "scoring").values():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {size} lines")
    assert long_modules == [] and long_functions == []

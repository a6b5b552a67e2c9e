"""YAML loading that remembers where each value came from, and ``${VAR}`` interpolation.

PyYAML parses; we only walk its node tree to keep a line number for every path, so a
validation error can say ``tenants[1].esp.list_id: field required (line 14)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError

PathKey = tuple[str | int, ...]
_SCALARS = yaml.SafeLoader("")  # used only to construct scalar values from nodes
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def format_path(path: PathKey) -> str:
    """``("tenants", 1, "esp", "list_id")`` -> ``tenants[1].esp.list_id``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


class Located:
    """Parsed YAML data plus the 1-based line of every path in it, and the problems found while reading it."""

    def __init__(self, data: Any, lines: dict[PathKey, int], source: str,
                 problems: list[tuple[PathKey, int, str]] | None = None) -> None:
        self.data, self.lines, self.source = data, lines, source
        self.problems: list[tuple[PathKey, int, str]] = problems or []  # (path, line, message), e.g. a key given twice
        self.default_lines: set[int] = set()  # lines of the `defaults:` block (its mistakes are said once)

    def line_of(self, path: PathKey) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _merged_pairs(node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
    """The mapping's own pairs, then those ``<<: *anchor`` brings in for keys it does not set itself."""
    own = [(k, v) for k, v in node.value if k.tag != _MERGE_TAG]
    keys = {k.value for k, _ in own if isinstance(k, yaml.ScalarNode)}
    for k, v in node.value:
        if k.tag != _MERGE_TAG:
            continue
        sources = v.value if isinstance(v, yaml.SequenceNode) else [v]
        for src in sources:
            for mk, mv in _merged_pairs(src) if isinstance(src, yaml.MappingNode) else []:
                if isinstance(mk, yaml.ScalarNode) and mk.value not in keys:
                    own.append((mk, mv))
                    keys.add(mk.value)
    return own


def _walk(node: yaml.Node, path: PathKey, lines: dict[PathKey, int], problems: list[tuple[PathKey, int, str]]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in _merged_pairs(node):
            line = key_node.start_mark.line + 1
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                problems.append((path, line, "mapping keys must be plain words"))
                continue
            if key in out:
                # Reported, and the first value kept, so every other problem is still found in the same pass.
                first = lines.get((*path, key))
                problems.append(((*path, key), line, f"{key} is given twice (first at line {first})"))
                continue
            lines[(*path, key)] = line
            out[key] = _walk(value_node, (*path, key), lines, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(child, (*path, i), lines, problems) for i, child in enumerate(node.value)]
    # Scalars: let PyYAML's safe constructor resolve the type (int, bool, null, str, ...).
    try:
        return _SCALARS.construct_object(node, deep=True)
    except ValueError as exc:  # e.g. an integer of thousands of digits (Python's int conversion limit)
        problems.append((path, node.start_mark.line + 1, f"the value cannot be read ({str(exc).split(';')[0]})"))
        return None


def load_yaml(text: str, source: str = "<config>") -> Located:
    """Parse YAML text into plain data with line numbers; syntax errors become :class:`ConfigError`."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a segsync config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        started = getattr(exc, "context_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        if started is not None and mark is not None and started.line != mark.line:
            problem += f" (the value started at line {started.line + 1})"
        text_lines = text.splitlines()
        if mark is not None and mark.line < len(text_lines) and "${" in text_lines[mark.line]:
            problem += ' - inside {...} or [...], quote values that use ${VAR}: "${VAR}"'
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    lines: dict[PathKey, int] = {}
    problems: list[tuple[PathKey, int, str]] = []
    try:
        data = {} if node is None else _walk(node, (), lines, problems)
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a segsync config") from None
    return Located(data, lines, source, problems)


def load_yaml_file(path: str | Path) -> Located:
    """Read and parse a YAML file, naming it in every error."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read it ({exc.strerror})") from None
    return load_yaml(text, str(p))


def read_secret_file(variable: str, filename: str) -> tuple[str, str | None]:
    """The contents of the file ``variable`` names (one trailing newline dropped), or a problem to report.

    This is how Docker and compose secrets arrive (``/run/secrets/NAME``): the value never sits in the
    environment, where ``docker inspect`` and child processes would see it.
    """
    try:
        text = Path(filename).read_text(encoding="utf-8")
    except FileNotFoundError:
        return "", f"{variable} names {filename}, which does not exist"
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        return "", f"{variable} names {filename}, which cannot be read ({reason})"
    value = text[:-1] if text.endswith("\n") else text
    value = value[:-1] if value.endswith("\r") else value
    if not value:
        return "", f"{variable} names {filename}, which is empty"
    return value, None


def interpolate(located: Located, env: Mapping[str, str] | None = None) -> list[tuple[PathKey, str]]:
    """Replace ``${VAR}`` (or ``${VAR:-default}``) in every string, in place; return the problems (path, message).

    ``VAR`` comes from the environment or, when ``VAR_FILE`` is set instead, from the file it names
    (Docker/compose secrets). Setting both is an error: which one wins would be a guess.
    """
    env = os.environ if env is None else env
    problems: list[tuple[PathKey, str]] = []

    def sub(value: Any, path: PathKey) -> Any:
        if isinstance(value, dict):
            return {k: sub(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v, (*path, i)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value

        def one(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env and f"{name}_FILE" in env:
                problems.append((path, f"both {name} and {name}_FILE are set; keep one"))
                return ""
            if name in env:
                return env[name]
            if f"{name}_FILE" in env:
                value, problem = read_secret_file(f"{name}_FILE", env[f"{name}_FILE"])
                if problem:
                    problems.append((path, problem))
                return value
            if default is not None:
                return default
            problems.append((path, f"environment variable {name} is not set"))
            return ""

        return _VAR.sub(one, value)

    located.data = sub(located.data, ())
    return problems

"""Config validation that reads like a compiler: every problem in one pass, sorted by line, in plain words.

Each problem is ``file:line: tenant <id>: path: message``; ``--json`` gets the same as objects (path, line,
message). Before pydantic sees the data, this module applies the ``defaults:`` block to every tenant and drops
``x-`` blocks (YAML anchors live there), and runs the checks pydantic cannot make (duplicate tenant ids with
the line of the repeat, references to scores, did-you-mean). Pydantic's messages are rewritten so that no
regular expression or library wording reaches a person.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from core.errors import ConfigError
from sync.config.yamlsource import Located, PathKey, format_path


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the config, where it is."""

    path: PathKey
    line: int | None
    message: str
    tenant: str | None = None  # the tenant's id when the problem is inside one

    def where(self) -> str:
        """The path as a person reads it: ``tenant harbor: esp.list_id`` rather than ``tenants[2].esp.list_id``."""
        if self.tenant is not None and len(self.path) >= 2 and self.path[0] == "tenants":
            rest = format_path(self.path[2:]) if len(self.path) > 2 else ""
            return f"tenant {self.tenant}" + (f": {rest}" if rest else "")
        return format_path(self.path)

    def render(self, source: str) -> str:
        """``file:line: tenant <id>: path: message``."""
        at = f"{source}:{self.line}" if self.line else source
        return f"{at}: {self.where()}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form."""
        return {"path": format_path(self.path), "line": self.line, "tenant": self.tenant, "message": self.message}


class ConfigProblems(ConfigError):
    """A config with problems; ``details`` keeps them structured for ``validate --json``."""

    def __init__(self, source: str, details: list[Problem]) -> None:
        n = len(details)
        title = f"{source}: {n} problem{'s' if n != 1 else ''} in the config"
        super().__init__(title, [p.render(source) for p in details])
        self.details = details


def suggest(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean X?)`` when a known choice is close to ``word``, else nothing."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


# ---------------------------------------------------------------------------- defaults and x- blocks


def _deep_merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = _deep_merge(base[k], v) if k in base else v
        return out
    return override


def _copy_lines(located: Located, src: PathKey, dst: PathKey, value: Any, own: Any) -> None:
    """An inherited value keeps the line it was written on (in ``defaults:``), unless the tenant set it."""
    if own is None and src in located.lines:
        located.lines.setdefault(dst, located.lines[src])
    if isinstance(value, dict):
        for k, v in value.items():
            _copy_lines(located, (*src, k), (*dst, k), v, own.get(k) if isinstance(own, dict) else None)


def apply_defaults(located: Located) -> list[Problem]:
    """Merge ``defaults:`` into every tenant (its own values win; maps merge, lists replace); drop ``x-`` keys."""
    data = located.data
    if not isinstance(data, dict):
        return []
    for key in [k for k in data if isinstance(k, str) and k.startswith("x-")]:
        del data[key]  # anchors' home: `x-crm: &crm {...}` then `crm: *crm`
    if "defaults" not in data:
        return []
    defaults = data.pop("defaults")
    located.default_lines = {line for path, line in located.lines.items() if path[:1] == ("defaults",)}
    if not isinstance(defaults, dict):
        return [Problem(("defaults",), located.line_of(("defaults",)), "must be a mapping of tenant settings")]
    problems = []
    if "id" in defaults:
        line = located.line_of(("defaults", "id"))
        problems.append(Problem(("defaults", "id"), line, "every tenant needs its own id"))
    tenants: list[Any] = data["tenants"] if isinstance(data.get("tenants"), list) else []
    for i, tenant in enumerate(tenants):
        if isinstance(tenant, dict):
            _copy_lines(located, ("defaults",), ("tenants", i), defaults, tenant)
            tenants[i] = _deep_merge(copy.deepcopy({k: v for k, v in defaults.items() if k != "id"}), tenant)
    return problems


# ---------------------------------------------------------------------------- checks pydantic cannot make


def tenant_ids(located: Located) -> dict[int, str]:
    """Index -> id of every tenant that has a usable id (for naming tenants in messages)."""
    tenants = located.data.get("tenants") if isinstance(located.data, dict) else None
    return {
        i: t["id"]
        for i, t in enumerate(tenants if isinstance(tenants, list) else [])
        if isinstance(t, dict) and isinstance(t.get("id"), str)
    }


def reference_checks(located: Located) -> list[Problem]:
    """Duplicate tenant ids (at the repeat's line), duplicate score/segment names, segments naming unknown scores."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    tenants = located.data.get("tenants") if isinstance(located.data, dict) else None
    for i, tenant in enumerate(tenants if isinstance(tenants, list) else []):
        if not isinstance(tenant, dict):
            continue
        tid = tenant.get("id")
        if isinstance(tid, str):
            line = located.line_of(("tenants", i, "id"))
            if tid in seen:
                text = f"tenant id {tid!r} is already used (line {seen[tid]}); ids must be unique"
                problems.append(Problem(("tenants", i, "id"), line, text))
            else:
                seen[tid] = line or 0
        problems += _name_checks(located, i, tenant)
    return problems


def _name_checks(located: Located, i: int, tenant: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    lists: dict[str, list[Any]] = {}
    for what in ("scores", "segments"):
        value = tenant.get(what)
        lists[what] = value if isinstance(value, list) else []
    for what, items in lists.items():
        first: dict[str, int] = {}
        for j, item in enumerate(items):
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str):
                continue
            path = ("tenants", i, what, j, "name")
            if name in first:
                text = f"{what[:-1]} name {name!r} is already used (line {first[name]})"
                problems.append(Problem(path, located.line_of(path), text))
            first.setdefault(name, located.line_of(path) or 0)
    names = [s["name"] for s in lists["scores"] if isinstance(s, dict) and isinstance(s.get("name"), str)]
    for j, seg in enumerate(lists["segments"]):
        ref = seg.get("score") if isinstance(seg, dict) else None
        if isinstance(ref, str) and ref not in names:
            path = ("tenants", i, "segments", j, "score")
            known = f"; scores defined: {', '.join(names)}" if names else "; this tenant defines no scores"
            text = f"refers to score {ref!r}, which is not defined{suggest(ref, names) or known}"
            problems.append(Problem(path, located.line_of(path), text))
    return problems


# ---------------------------------------------------------------------------- pydantic errors in plain words

# What each constrained string must look like, said for people (keyed by the pattern the model declares).
PATTERN_WORDS = {
    r"^[a-z0-9][a-z0-9_-]{0,62}$": (
        "use lower-case letters, digits, '-' and '_' (starting with a letter or digit, at most 63)"
    ),
    r"^[a-z][a-z0-9_]{0,99}$": "use lower-case letters, digits and '_', starting with a letter (at most 100)",
    r"^#[0-9a-fA-F]{6}$": "use a colour like #1f4e79",
    r"^https?://[^/\s]+$": "use a scheme and host only, like https://hooks.example.com (no path)",
}
TYPE_WORDS = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "list_type": "must be a list",
    "dict_type": "must be a mapping (key: value)",
    "model_type": "must be a mapping (key: value)",
    "model_attributes_type": "must be a mapping (key: value)",
    "missing": "field required",
}
BOUND_WORDS = {
    "greater_than": "greater than",
    "greater_than_equal": "at least",
    "less_than": "less than",
    "less_than_equal": "at most",
}


def _got(value: Any) -> str:
    return "" if isinstance(value, dict | list) else f" (got {value!r})"


def plain_message(err: Mapping[str, Any], fields: Sequence[str] = ()) -> str:
    """One pydantic error as a sentence; ``fields`` are the keys allowed where the error is (for did-you-mean)."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    key = err["loc"][-1] if err["loc"] else ""
    if kind == "extra_forbidden":
        hint = suggest(str(key), fields)
        return f"unknown key{hint or ' (check the spelling)'}"
    if kind in TYPE_WORDS:
        return TYPE_WORDS[kind] + ("" if kind == "missing" else _got(value))
    if kind in BOUND_WORDS:
        bound = next(iter(ctx.values()), "?")
        bound = f"{bound:g}" if isinstance(bound, float) else bound
        return f"must be {BOUND_WORDS[kind]} {bound}{_got(value)}"
    if kind == "string_pattern_mismatch":
        return PATTERN_WORDS.get(str(ctx.get("pattern")), "contains characters that are not allowed here") + _got(value)
    if kind in ("string_too_short", "string_too_long"):
        n = ctx.get("min_length", ctx.get("max_length"))
        return f"must be at {'least' if kind == 'string_too_short' else 'most'} {n} characters"
    if kind in ("too_short", "too_long"):
        n = ctx.get("min_length", ctx.get("max_length"))
        return f"needs at {'least' if kind == 'too_short' else 'most'} {n} item{'s' if n != 1 else ''}"
    if kind == "literal_error":
        allowed = [a.strip(" '\"") for a in str(ctx.get("expected", "")).replace(" or ", ", ").split(", ") if a.strip()]
        return f"{value!r} is not one of {', '.join(allowed)}{suggest(str(value), allowed)}"
    if kind == "union_tag_invalid":
        tags = [a.strip(" '\"") for a in str(ctx.get("expected_tags", "")).split(",")]
        hint = suggest(str(ctx.get("tag")), tags)
        return f"unknown type {ctx.get('tag')!r}" + (hint or f" (available: {', '.join(tags)})")
    if kind == "union_tag_not_found":
        return f"needs a type ({ctx.get('discriminator', 'type')})".replace("'", "")
    return str(err["msg"]).removeprefix("Value error, ")


def data_path(err: Mapping[str, Any], data: Any) -> PathKey:
    """The error's location in the data: pydantic's union tags (a vendor's ``type``) are not keys and are dropped."""
    loc: list[str | int] = []
    node = data
    parts = list(err["loc"])
    for i, part in enumerate(parts):
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if (isinstance(node, dict) and part in node) or in_list:
            loc.append(part)
            node = node[part]
        elif i == len(parts) - 1 and err["type"] in ("missing", "extra_forbidden"):
            loc.append(part)
    return tuple(loc)


def fields_at(model: type[BaseModel], path: PathKey) -> list[str]:
    """The keys allowed in the mapping at ``path`` (every union member's, where the path goes through a union)."""
    models: list[Any] = [model]
    for part in path:
        nxt: list[Any] = []
        for m in models:
            if isinstance(part, int):
                nxt += [a for a in typing.get_args(m)]  # list[X] -> X
            elif isinstance(m, type) and issubclass(m, BaseModel) and part in m.model_fields:
                nxt.append(m.model_fields[part].annotation)
        models = _unwrap(nxt)
    return sorted({f for m in models if isinstance(m, type) and issubclass(m, BaseModel) for f in m.model_fields})


def _unwrap(annotations: list[Any]) -> list[Any]:
    out: list[Any] = []
    for a in annotations:
        origin = typing.get_origin(a)
        if origin is typing.Annotated:
            out += _unwrap([typing.get_args(a)[0]])
        elif origin in (typing.Union, types.UnionType):
            out += _unwrap(list(typing.get_args(a)))
        elif origin is dict:
            out += _unwrap([typing.get_args(a)[1]])
        else:
            out.append(a)
    return out


def tenant_of(path: PathKey, ids: Mapping[int, str]) -> str | None:
    """The id of the tenant a path is inside (``#N`` by position when it has no usable id)."""
    if len(path) >= 2 and path[0] == "tenants" and isinstance(path[1], int):
        return ids.get(path[1], f"#{path[1] + 1}")
    return None


# Errors of model validators that :func:`reference_checks` already reports at the right line.
_ALREADY_CHECKED = ("tenant ids must be unique", "score names must be unique", "segment names must be unique")


def pydantic_problems(
    errors: Sequence[Mapping[str, Any]],
    located: Located,
    model: type[BaseModel],
    flagged: set[PathKey],
    planned: Mapping[str, str],
) -> list[Problem]:
    """Pydantic's errors in plain words, one per path, leaving out what an earlier problem (``flagged``) explains.

    ``planned`` maps a type tag that is known but not built yet (e.g. ``salesforce``) to what to say about it.
    """
    ids = tenant_ids(located)
    problems: list[Problem] = []
    for err in errors:
        msg = str(err["msg"]).removeprefix("Value error, ")
        if msg.startswith(_ALREADY_CHECKED):
            continue
        path = data_path(err, located.data)
        if any(path[: len(f)] == f for f in flagged):
            continue
        if err["type"] == "union_tag_invalid":
            path += (str((err.get("ctx") or {}).get("discriminator", "type")).strip("'"),)  # point at the type: line
        if err["type"] == "union_tag_invalid" and str((err.get("ctx") or {}).get("tag")) in planned:
            text = planned[str(err["ctx"]["tag"])]
        else:
            parent = path[:-1] if err["type"] == "extra_forbidden" else path
            text = plain_message(err, fields_at(model, parent) if err["type"] == "extra_forbidden" else ())
        flagged.add(path)
        problems.append(Problem(path, located.line_of(path), text, tenant_of(path, ids)))
    return problems


def sort_problems(problems: list[Problem], default_lines: set[int] | frozenset[int] = frozenset()) -> list[Problem]:
    """By file position (problems without a line first, they are about the whole file), then path.

    A mistake in ``defaults:`` breaks every tenant that inherits it; it is said once, under the first.
    """
    out: list[Problem] = []
    seen: set[tuple[int, PathKey, str]] = set()
    for p in sorted(problems, key=lambda p: (p.line or 0, format_path(p.path))):
        if p.line in default_lines and p.path[:1] == ("tenants",):
            key = (p.line or 0, p.path[2:], p.message)
            if key in seen:
                continue
            seen.add(key)
        out.append(p)
    return out


def located_problems(located: Located) -> list[Problem]:
    """What reading the YAML found (keys given twice), with their tenants named."""
    ids = tenant_ids(located)
    return [Problem(path, line, msg, tenant_of(path, ids)) for path, line, msg in located.problems]


def with_tenants(located: Located, problems: list[Problem]) -> list[Problem]:
    """The same problems, each naming its tenant by id."""
    ids = tenant_ids(located)
    return [Problem(p.path, p.line, p.message, tenant_of(p.path, ids)) for p in problems]

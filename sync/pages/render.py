"""The Jinja2 environment of the pages: package templates, autoescaping on, one stylesheet inlined.

The stylesheet is inlined (with the request's CSP nonce when served) so a page is one document:
the same HTML works served by ``segsync serve`` and opened from disk (``segsync score --report``).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup


@cache
def environment() -> Environment:
    """The shared, autoescaping template environment."""
    env = Environment(loader=PackageLoader("sync.pages", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    env.filters["pct"] = _pct
    return env


@cache
def stylesheet() -> Markup:
    """The pages' CSS (trusted: it ships with the package)."""
    return Markup(files("sync.pages").joinpath("pages.css").read_text(encoding="utf-8"))


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _pct(v: Any) -> str:
    return "-" if v is None else f"{float(v) * 100:.1f}%"


def render(template: str, *, nonce: str = "", colour: str = "#1f4e79", **context: Any) -> str:
    """A full page: ``template`` with the stylesheet, the CSP nonce and the firm's colour."""
    return environment().get_template(template).render(css=stylesheet(), nonce=nonce, colour=colour, **context)

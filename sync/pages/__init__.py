"""The web pages of ``segsync serve``: status, run, model-card and lift pages, and the hosted preference page.

Server-rendered (Jinja2), charts as inline SVG, no JavaScript. ``mount(app, service)`` adds them
to the server's FastAPI app; ``sync.pages.cards.write_card_html`` writes a model card to disk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from sync.pages.routes import Host


def mount(app: FastAPI, host: Host) -> None:
    """Add the page routes to ``app`` (before the webhook's catch-all mount)."""
    from sync.pages.routes import build_router

    app.include_router(build_router(host))

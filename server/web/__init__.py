"""The web console: server-rendered pages (Jinja2 + htmx + uPlot) served by the fleet server
itself at ``/``, signed in with the server's users. Pages (``server/web/pages``, one module per
resource) ask the same permissions table as the API (``server.base.permissions``), reach data
within the caller's scope (``server.base.access``) and call the same services — never a second
set of rules. docs/web.md."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from server.web.pages import router

__all__ = ["STATIC_DIR", "install_web"]

STATIC_DIR = Path(__file__).parent / "static"


def install_web(app: FastAPI) -> None:
    """Mount the console's pages and its static files (vendored htmx/uPlot, CSS, JS)."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

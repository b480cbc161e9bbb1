"""The web console: server-rendered pages (Jinja2 + htmx + uPlot) served by the fleet server
itself at ``/``, signed in with the server's users. Pages reuse the API's role checks and the
data scope of ``server.base.access`` — never a second set of rules. docs/web.md."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from server.web.routes import router

__all__ = ["STATIC_DIR", "install_web"]

STATIC_DIR = Path(__file__).parent / "static"


def install_web(app: FastAPI) -> None:
    """Mount the console's pages and its static files (vendored htmx/uPlot, CSS, JS)."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

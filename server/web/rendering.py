"""What every console page shares: the templates and their filters, the route class that turns
errors into HTML pages (and an expired sign-in into the sign-in form), the page frame with its
navigation, and the small parsers of query strings and forms.

The navigation asks the permissions table (``server.base.permissions``) which links a role
gets, as the pages themselves do before answering."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from server.errors import InvalidInput, ServerError, Unauthorized
from server.kpi.definitions import DEFINITIONS
from server.kpi.export import human
from server.web import console, navigation
from server.web.auth import WebSession
from server.web.paging import PAGE_SIZE

__all__ = [
    "PAGE_SIZE",
    "WebRoute",
    "as_json",
    "choice_param",
    "duration",
    "int_param",
    "invalid",
    "json_script",
    "known_params",
    "kpi_text",
    "page_router",
    "placement_params",
    "render",
    "templates",
    "wants_json",
    "when",
]

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["human"] = human
templates.env.globals["DEFINITIONS"] = DEFINITIONS

_UNITS = ((60.0, 1.0, "s"), (3600.0, 60.0, "min"), (48 * 3600.0, 3600.0, "h"), (math.inf, 86400.0, "d"))
"""(below, divisor, unit): seconds under a minute, minutes under an hour, hours under two days,
then days — the same steps as ``fleetcare kpi report``."""


def _significant(value: float, digits: int = 3) -> str:
    """``value`` (≥ 0) to ``digits`` significant digits, trailing zeros dropped, thousands
    separated. Rounded half up as ``floor(x·10^d + 0.5)`` so that static/format.js, which does
    the same in the same double arithmetic, gives the same text for every value."""
    if value == 0:
        return "0"
    places = max(0, digits - 1 - math.floor(math.log10(value)))
    scaled = math.floor(value * 10**places + 0.5)
    whole, frac = divmod(scaled, 10**places)
    text = f"{whole:,}"
    if places:
        decimals = f"{frac:0{places}d}".rstrip("0")
        text += f".{decimals}" if decimals else ""
    return text


def duration(seconds: float | None) -> str:
    """A duration for people — one rule for the console's tiles, charts and tables (the charts
    use static/format.js, the same rule): three significant digits in the largest unit it
    reaches of s, min (under an hour), h (under two days), d. So 150 s is "2.5 min", never
    "0.0 h" or "0.04 h"; 4,500 s is "1.25 h"."""
    if seconds is None or math.isnan(seconds):
        return "—"
    sign, value = ("-", -seconds) if seconds < 0 else ("", float(seconds))
    for below, divisor, unit in _UNITS:
        if value < below:
            return f"{sign}{_significant(value / divisor)} {unit}"
    raise AssertionError("unreachable: the last unit has no upper bound")


def kpi_text(name: str, value: Any, values: dict[str, Any] | None = None) -> str:
    """A KPI value as the dashboard shows it: durations by :func:`duration`, everything else as
    the KPI report's terminal shows it (``server.kpi.export.human``)."""
    unit = DEFINITIONS[name].unit if name in DEFINITIONS else ""
    if name == "mtbf_s" and value is None and values and values.get("mtbf_censored"):
        bound = values.get("mtbf_lower_bound_s")
        return "—" if bound is None else f"> {duration(bound)}"
    if unit == "seconds" and isinstance(value, int | float) and not isinstance(value, bool):
        return duration(float(value))
    return human(name, value, values)


templates.env.globals["duration"] = duration
templates.env.globals["kpi_text"] = kpi_text


def when(value: datetime | None) -> str:
    """A time for people, always in UTC (the server's and the reports' zone)."""
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


templates.env.filters["when"] = when
templates.env.filters["file_size"] = console.file_size


def json_script(value: Any) -> str:
    """JSON for a ``<script type="application/json">`` block: ``<`` escaped, so no data (a
    metric name, a label) can close the script element."""
    return json.dumps(value).replace("<", "\\u003c")


class WebRoute(APIRoute):
    """Server errors as HTML pages (the API answers JSON); 401 → the sign-in form."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Unauthorized:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                if request.headers.get("hx-request"):
                    return Response(status_code=204, headers={"HX-Redirect": "/login"})
                return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
            except ServerError as exc:
                return templates.TemplateResponse(
                    request,
                    "error.html",
                    {"status": exc.status, "message": exc.message, "user": None},
                    status_code=exc.status,
                )

        return handle


def page_router() -> APIRouter:
    """A router for one resource's pages: HTML errors, not in the OpenAPI document."""
    return APIRouter(route_class=WebRoute, include_in_schema=False)


async def render(request: Request, name: str, web: WebSession, **context: Any) -> HTMLResponse:
    """A full page in the frame of ``base.html``: the user, the CSRF token, the navigation
    (only the pages the user may open: ``server.web.navigation``)."""
    async with request.app.state.runtime.sessions() as session:
        nav = await navigation.links(session, web.principal)
    return templates.TemplateResponse(
        request,
        name,
        {"user": web.principal, "csrf": web.csrf, "nav": nav, "current": request.url.path, **context},
    )


def int_param(value: str | None, field: str) -> int | None:
    """A whole number from a query string or form (None when absent or empty)."""
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{field}: {value!r} is not a number", field=field) from None


def choice_param(value: str | None, field: str, choices: Iterable[str]) -> str | None:
    """One of ``choices`` from a query string or form (None when absent or empty); any other
    value is a 422 naming the field and listing the choices, never silently ignored."""
    if value is None or value == "":
        return None
    allowed = list(choices)
    if value not in allowed:
        raise InvalidInput(f"{field}: {value!r} is not one of {', '.join(allowed)}", field=field)
    return value


def known_params(params: Mapping[str, str], accepted: Iterable[str]) -> None:
    """Refuse (422) a query parameter the page does not know, naming it and the ones it takes:
    a filter a person typed wrong (``?status=open`` on a page whose filter is ``state``) would
    otherwise be ignored while the page looks filtered."""
    allowed = set(accepted)
    for name in params:
        if name not in allowed:
            raise InvalidInput(
                f"{name}: unknown parameter; this page takes {', '.join(sorted(allowed))}", field=name
            )


def placement_params(params: Mapping[str, str]) -> dict[str, Any]:
    """The customer, site and model filters every list shares (the ``_filters.html`` selects)."""
    return {
        "customer": int_param(params.get("customer"), "customer"),
        "site": int_param(params.get("site"), "site"),
        "model": (params.get("model") or "").strip()[:256] or None,
    }


def wants_json(request: Request) -> bool:
    """The console's script posts with ``Accept: application/json``; a plain form gets pages."""
    return "application/json" in request.headers.get("accept", "")


def as_json(exc: ServerError) -> JSONResponse:
    """An error for the page's script (it shows the message where the result would be)."""
    return JSONResponse({"detail": exc.message, "field": exc.field}, status_code=exc.status)


def invalid(exc: ValidationError) -> InvalidInput:
    """A form that failed the API's request schema, as the API's own 422 names it."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    return InvalidInput(f"{field}: {first['msg']}", field=field)

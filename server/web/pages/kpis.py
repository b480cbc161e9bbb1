"""The dashboard (``GET /kpis`` for people): KPI tiles over a period, open incidents by
priority, the charts (each its own request, so the tiles do not wait for them) and the CSV.

Figures come from the KPI engine's public entry points (``server.kpi.compute_report`` and
``server.kpi.export``), for the customer the caller's scope imposes
(``server.base.report_scope``), as ``server/api/kpis.py`` computes them: the dashboard's tiles
are the API's figures."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from server import clock
from server.api.deps import RuntimeDep, SessionDep
from server.api.download import content_disposition
from server.base import access, permissions
from server.base.permissions import Capability
from server.base.report_scope import report_customer
from server.base.users import Principal
from server.errors import InvalidInput, ServerError, Unauthorized
from server.incidents.service import IncidentFilter
from server.kpi import GroupBy, Report, ReportSpec, compute_report
from server.kpi.export import check_period, parse_time, report_csv, report_json
from server.runtime import Runtime
from server.web.auth import WebUser
from server.web.queries import filter_options, open_by_priority
from server.web.rendering import as_json, int_param, page_router, render

__all__ = ["CHARTS", "SELF_RESOLUTION_TARGET", "TILES", "router"]

router = page_router()

SELF_RESOLUTION_TARGET = 0.8
"""The dashboard's target line for the self-resolution rate (shared/KPIS.md)."""

TILES = (
    "availability",
    "downtime_s",
    "mtrs_mean_s",
    "self_resolution_rate",
    "remote_usage_rate",
    "dispatches_avoided",
)

CHANNELS = ("auto", "customer", "remote", "field")
TOP = 10
"""Bars in the top-models and top-fault-codes charts."""


def _default_period() -> tuple[str, str]:
    """The last four whole weeks up to today (UTC), to tomorrow: today counts up to now."""
    end = clock.now().astimezone(UTC).date() + timedelta(days=1)
    return (end - timedelta(days=28)).isoformat(), end.isoformat()


def _weekly_series(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Weekly buckets for uPlot: x (epoch s), downtime hours, self-resolution %, and the
    incidents resolved per channel (stacked in the page)."""
    out: dict[str, list[Any]] = {"x": [], "downtime_h": [], "self_resolution_pct": []}
    out.update({channel: [] for channel in CHANNELS})
    for row in rows:
        values = row["kpis"]
        out["x"].append(parse_time(row["from"], "from").timestamp())
        dt = values.get("downtime_s")
        out["downtime_h"].append(None if dt is None else round(dt / 3600.0, 2))
        rate = values.get("self_resolution_rate")
        out["self_resolution_pct"].append(None if rate is None else round(100.0 * rate, 1))
        for channel in CHANNELS:
            out[channel].append(values.get(f"resolved_{channel}") or 0)
    return out


def _top(rows: list[dict[str, Any]], hours: Callable[[dict[str, Any]], float | None]) -> dict[str, Any]:
    """The :data:`TOP` groups with the most hours (none with zero), most first."""
    ranked = sorted(
        ((row["group"]["label"], h) for row in rows if (h := hours(row["kpis"])) is not None and h > 0),
        key=lambda pair: -pair[1],
    )[:TOP]
    return {"labels": [label for label, _ in ranked], "hours": [round(h, 2) for _, h in ranked]}


def _downtime_h(values: dict[str, Any]) -> float | None:
    return None if values.get("downtime_s") is None else values["downtime_s"] / 3600.0


def _restore_h(values: dict[str, Any]) -> float | None:
    """Σ restore time (t_restored - t_fault) = MTRS x its count: equipment state carries no
    fault code, so a fault code's downtime is the restore time of its incidents."""
    mean, n = values.get("mtrs_mean_s"), values.get("mtrs_n")
    return None if mean is None or not n else mean * n / 3600.0


CHARTS: dict[str, tuple[GroupBy, Callable[[list[dict[str, Any]]], dict[str, Any]]]] = {
    "weekly": (GroupBy("week"), _weekly_series),
    "models": (GroupBy("model"), lambda rows: _top(rows, _downtime_h)),
    "fault_codes": (GroupBy("fault_code"), lambda rows: _top(rows, _restore_h)),
}
"""The dashboard's charts: the KPI report grouping each reads, and how its rows become the
chart's data. Each is its own request (``/dashboard/charts/{name}``), so the tiles do not wait
for them and the browser fetches them in parallel."""


def _kpi_args(request: Request) -> dict[str, Any]:
    """The dashboard's filters from its query string (the default period when none)."""
    params = request.query_params
    start, end = _default_period()
    return {
        "from_": params.get("from") or start,
        "to": params.get("to") or end,
        "customer": int_param(params.get("customer"), "customer"),
        "site": int_param(params.get("site"), "site"),
        "model": params.get("model") or None,
    }


async def _report(
    session: SessionDep,
    runtime: Runtime,
    user: Principal,
    args: dict[str, Any],
    group_by: GroupBy | None = None,
) -> tuple[Report, ReportSpec]:
    """The KPI report ``GET /kpis`` computes for these filters: the period checked, the
    customer the caller's scope imposes, the baseline restore time of the settings."""
    start, end = parse_time(args["from_"], "from"), parse_time(args["to"], "to")
    check_period(start, end)
    spec = ReportSpec(
        start=start,
        end=end,
        group_by=group_by,
        customer=await report_customer(session, user, args["customer"]),
        site=args["site"],
        model=args["model"],
        baseline_restore_s=3600.0 * runtime.settings.kpi.baseline_restore_hours,
    )
    return await compute_report(session, spec), spec


@router.get("/", response_class=HTMLResponse)
async def dashboard(request: Request, session: SessionDep, runtime: RuntimeDep, web: WebUser) -> Response:
    """The tiles (one KPI report over the period); the charts load their own data after."""
    user = permissions.check(web.principal, Capability.READ_KPIS)
    args = _kpi_args(request)
    report = report_json((await _report(session, runtime, user, args))[0], definitions=False)
    values: dict[str, Any] = report["rows"][0]["kpis"] if report["rows"] else {}
    scope = access.device_condition(await access.scope_for(session, user))
    customer = report["filters"].get("customer")  # the customer the caller's scope imposed
    by_priority = await open_by_priority(
        session,
        IncidentFilter(customer_id=customer, site_id=args["site"], model=args["model"]),
        scope=scope,
    )
    customers, sites, models = await filter_options(session, scope)
    query = urlencode(
        {k: v for k, v in {**args, "from": args["from_"]}.items() if v is not None and k != "from_"}
    )
    return await render(
        request,
        "dashboard.html",
        web,
        period=report["period"],
        args=args,
        customer=customer,
        values=values,
        tiles=TILES,
        target=SELF_RESOLUTION_TARGET,
        by_priority=by_priority,
        customers=customers,
        sites=sites,
        models=models,
        csv_url="/dashboard.csv?" + query,
        chart_urls={name: f"/dashboard/charts/{name}?{query}" for name in CHARTS},
    )


@router.get("/dashboard/charts/{name}")
async def dashboard_chart(
    name: str, request: Request, session: SessionDep, runtime: RuntimeDep, web: WebUser
) -> JSONResponse:
    """One chart's data: the dashboard's report with the chart's grouping."""
    try:
        if name not in CHARTS:
            raise InvalidInput(f"name: {name!r} is not one of {', '.join(CHARTS)}", field="name")
        user = permissions.check(web.principal, Capability.READ_KPIS)
        group_by, shape = CHARTS[name]
        report, _ = await _report(session, runtime, user, _kpi_args(request), group_by)
    except ServerError as exc:  # the page's script shows the message in the chart's place
        if isinstance(exc, Unauthorized):
            raise
        return as_json(exc)
    return JSONResponse(shape(report_json(report, definitions=False)["rows"]))


@router.get("/dashboard.csv")
async def dashboard_csv(request: Request, session: SessionDep, runtime: RuntimeDep, web: WebUser) -> Response:
    """The API's CSV of what the dashboard shows (a link cannot send a bearer token): same
    report, same file name as ``GET /kpis?format=csv``."""
    user = permissions.check(web.principal, Capability.READ_KPIS)
    report, spec = await _report(session, runtime, user, _kpi_args(request))
    name = f"kpis-{spec.start:%Y%m%d}-{spec.end:%Y%m%d}.csv"
    return Response(
        report_csv(report),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": content_disposition(name)},
    )

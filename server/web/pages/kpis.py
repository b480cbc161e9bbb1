"""The dashboard (``GET /kpis`` for people): KPI tiles over a period, open incidents by
priority, the charts (each its own request, so the tiles do not wait for them) and the CSV.

Figures come from the KPI engine's public entry points (``server.kpi.compute_report`` and
``server.kpi.export``), for the customer the caller's scope imposes
(``server.base.report_scope``), as ``server/api/kpis.py`` computes them: the dashboard's tiles
are the API's figures."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import func, select
from sqlalchemy.sql.elements import ColumnElement

from server import clock
from server.api.deps import RuntimeDep, SessionDep
from server.api.download import content_disposition
from server.base import access, permissions
from server.base.permissions import Capability
from server.base.report_scope import report_customer
from server.base.users import Principal
from server.db.models import Device, Incident, StateInterval
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


def _default_period(as_of: datetime) -> tuple[str, str]:
    """The last four whole weeks up to the as-of day (UTC), to the day after: that day counts
    up to the as-of time."""
    end = as_of.astimezone(UTC).date() + timedelta(days=1)
    return (end - timedelta(days=28)).isoformat(), end.isoformat()


def _span(report: dict[str, Any]) -> list[float]:
    """The time axis of every chart: the report's period up to where it stops (``until``), so
    one point — or none — never stretches the axis beyond the period (charts.js pads it)."""
    period = report["period"]
    return [parse_time(period["from"], "from").timestamp(), parse_time(period["until"], "until").timestamp()]


def _weekly_series(report: dict[str, Any]) -> dict[str, Any]:
    """Weekly buckets for uPlot. Downtime and the channels are totals of each week, drawn as
    bars over the week: x is the middle of the week as cut to the period (``from``/``to`` its
    edges). Downtime in seconds (charts.js formats it by the console's duration rule; hours kept
    for the CSV-minded), self-resolution in %, the incidents resolved per channel (stacked)."""
    out: dict[str, Any] = {
        "x": [],
        "from": [],
        "to": [],
        "downtime_s": [],
        "downtime_h": [],
        "self_resolution_pct": [],
    }
    out.update({channel: [] for channel in CHANNELS})
    for row in report["rows"]:
        values = row["kpis"]
        start = parse_time(row["from"], "from").timestamp()
        end = parse_time(row["to"], "to").timestamp()
        out["from"].append(start)
        out["to"].append(end)
        out["x"].append((start + end) / 2)
        dt = values.get("downtime_s")
        out["downtime_s"].append(dt)
        out["downtime_h"].append(None if dt is None else round(dt / 3600.0, 2))
        rate = values.get("self_resolution_rate")
        out["self_resolution_pct"].append(None if rate is None else round(100.0 * rate, 1))
        for channel in CHANNELS:
            out[channel].append(values.get(f"resolved_{channel}") or 0)
    out["span"] = _span(report)
    return out


def _top(report: dict[str, Any], seconds: Callable[[dict[str, Any]], float | None]) -> dict[str, Any]:
    """The :data:`TOP` groups with the most downtime (none with zero), most first: seconds (the
    page formats them by the duration rule) and hours."""
    ranked = sorted(
        (
            (row["group"]["label"], v)
            for row in report["rows"]
            if (v := seconds(row["kpis"])) is not None and v > 0
        ),
        key=lambda pair: -pair[1],
    )[:TOP]
    return {
        "labels": [label for label, _ in ranked],
        "seconds": [v for _, v in ranked],
        "hours": [round(v / 3600.0, 2) for _, v in ranked],
    }


def _downtime_s(values: dict[str, Any]) -> float | None:
    return None if values.get("downtime_s") is None else float(values["downtime_s"])


def _restore_s(values: dict[str, Any]) -> float | None:
    """Σ restore time (t_restored - t_fault) = MTRS x its count: equipment state carries no
    fault code, so a fault code's downtime is the restore time of its incidents."""
    mean, n = values.get("mtrs_mean_s"), values.get("mtrs_n")
    return None if mean is None or not n else float(mean * n)


CHARTS: dict[str, tuple[GroupBy, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "weekly": (GroupBy("week"), _weekly_series),
    "models": (GroupBy("model"), lambda report: _top(report, _downtime_s)),
    "fault_codes": (GroupBy("fault_code"), lambda report: _top(report, _restore_s)),
}
"""The dashboard's charts: the KPI report grouping each reads, and how its rows become the
chart's data. Each is its own request (``/dashboard/charts/{name}``), so the tiles do not wait
for them and the browser fetches them in parallel."""


def _kpi_args(request: Request) -> dict[str, Any]:
    """The dashboard's filters from its query string: the as-of time (default now, the
    server's clock), the period (default the four weeks up to the as-of)."""
    params = request.query_params
    as_of = params.get("as_of") or None
    start, end = _default_period(parse_time(as_of, "as_of") if as_of else clock.now())
    return {
        "from_": params.get("from") or start,
        "to": params.get("to") or end,
        "as_of": as_of,
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
        as_of=parse_time(args["as_of"], "as_of") if args["as_of"] else None,
        baseline_restore_s=3600.0 * runtime.settings.kpi.baseline_restore_hours,
    )
    return await compute_report(session, spec), spec


async def _after_as_of(
    session: SessionDep, as_of: datetime, scope: ColumnElement[bool] | None
) -> dict[str, Any]:
    """What the caller's fleet holds dated after the as-of (a simulated fleet's clock, or device
    clocks ahead): incidents detected and state intervals begun after it, and the latest such
    time — the page says so instead of leaving it out silently, and offers the as-of of the data."""
    t = as_of.timestamp()
    where = [] if scope is None else [scope]
    incidents, last_incident = (
        await session.execute(
            select(func.count(), func.max(Incident.detect_s))
            .join(Device, Device.id == Incident.device_id)
            .where(Incident.detect_s > t, *where)
        )
    ).one()
    intervals, last_interval = (
        await session.execute(
            select(func.count(), func.max(StateInterval.start_s))
            .join(Device, Device.id == StateInterval.device_id)
            .where(StateInterval.start_s > t, *where)
        )
    ).one()
    latest = max((v for v in (last_incident, last_interval) if v is not None), default=None)
    return {
        "incidents": int(incidents),
        "intervals": int(intervals),
        "latest": None if latest is None else datetime.fromtimestamp(float(latest), UTC),
    }


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
    as_of = parse_time(report["period"]["as_of"], "as_of")
    later = await _after_as_of(session, as_of, scope)
    query = urlencode(
        {k: v for k, v in {**args, "from": args["from_"]}.items() if v is not None and k != "from_"}
    )
    return await render(
        request,
        "dashboard.html",
        web,
        period=report["period"],
        as_of=as_of,
        now=clock.now(),
        later=later,
        later_url=None
        if later["latest"] is None
        else "/?"
        + urlencode(
            {
                **{k: v for k, v in args.items() if v is not None and k not in ("from_", "to", "as_of")},
                "as_of": (later["latest"] + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ),
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
    return JSONResponse(shape(report_json(report, definitions=False)))


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

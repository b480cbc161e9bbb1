"""The console's pages. Each page names the API endpoint it stands for: :func:`auth.gate` runs
that endpoint's role check, and the data comes from the endpoint itself (called as a function:
same scope, same KPI engine, same validation) or from ``server.web.queries`` with the caller's
``access`` scope. Errors become HTML pages; an expired sign-in goes back to the sign-in form."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy import select

from server import clock, fleet
from server.api import audit as audit_api
from server.api import commands as commands_api
from server.api import devices as devices_api
from server.api import forecast as forecast_api
from server.api import incidents as incidents_api
from server.api import knowledge as knowledge_api
from server.api import kpis as kpis_api
from server.api import sessions as sessions_api
from server.api.deps import RuntimeDep, SessionDep
from server.api.download import content_disposition
from server.api.service_schemas import IncidentAssign, IncidentResolve
from server.base import access, users
from server.commands.policy import catalogue_of
from server.commands.files import FILE_FETCH
from server.db.models import Channel, Device, DeviceState, Role, SessionState, StateInterval
from server.errors import InvalidInput, ServerError, Unauthorized
from server.incidents import service as incident_service
from server.incidents.service import IncidentFilter
from server.kpi.definitions import DEFINITIONS
from server.kpi.export import human, parse_time
from server.maintenance import forecast as forecast_service
from server.web import auth, console
from server.web.auth import WebUser
from server.web.queries import FLEET_SORTS, FleetQuery, filter_options, fleet_page, open_by_priority

__all__ = ["SELF_RESOLUTION_TARGET", "router", "templates"]

logger = logging.getLogger(__name__)

SELF_RESOLUTION_TARGET = 0.8
"""The dashboard's target line for the self-resolution rate (shared/KPIS.md)."""

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["human"] = human
templates.env.globals["DEFINITIONS"] = DEFINITIONS


def _when(value: datetime | None) -> str:
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


templates.env.filters["when"] = _when
templates.env.filters["file_size"] = console.file_size


def _json_script(value: Any) -> str:
    """JSON for a ``<script type="application/json">`` block: ``<`` escaped, so no data (a
    metric name, a label) can close the script element."""
    return json.dumps(value).replace("<", "\\u003c")


class WebRoute(APIRoute):
    """Server errors as HTML pages (the API's handlers answer JSON); 401 → the sign-in form."""

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


router = APIRouter(route_class=WebRoute, include_in_schema=False)


def _safe_next(value: str | None) -> str:
    """Only a local path: never redirect off the server after sign-in."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _int(value: str | None, field: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{field}: {value!r} is not a number", field=field) from None


async def _page(request: Request, name: str, web: auth.WebSession, **context: Any) -> HTMLResponse:
    nav = {
        "dashboard": await auth.allowed(kpis_api.get_kpis, web.principal),
        "audit": await auth.allowed(audit_api.list_audit, web.principal, "_user"),
    }
    return templates.TemplateResponse(
        request, name, {"user": web.principal, "csrf": web.csrf, "nav": nav, **context}
    )


# --- sign-in ------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str | None = None) -> Response:
    token = auth.new_login_csrf()
    response = templates.TemplateResponse(
        request, "login.html", {"user": None, "csrf": token, "next": _safe_next(next), "error": None}
    )
    response.set_cookie(auth.LOGIN_CSRF_COOKIE, token, path="/login", httponly=True, samesite="strict")
    return response


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, session: SessionDep, runtime: RuntimeDep) -> Response:
    form = await auth.form_data(request)
    target = _safe_next(form.get("next"))
    expected = request.cookies.get(auth.LOGIN_CSRF_COOKIE, "")
    error: str | None = None
    if not expected or form.get("csrf") != expected:
        error = "The sign-in form expired; please try again."
    else:
        try:
            issued, _user = await users.login(
                session,
                form.get("username", ""),
                form.get("password", ""),
                ttl=timedelta(seconds=runtime.settings.auth.login_token_ttl),
                source=request.client.host if request.client else None,
            )
        except Unauthorized:
            error = "Wrong user name or password."
        else:
            signed_in = RedirectResponse(target, status_code=303)
            auth.set_session(signed_in, request, issued.token, int(runtime.settings.auth.login_token_ttl))
            signed_in.delete_cookie(auth.LOGIN_CSRF_COOKIE, path="/login")
            return signed_in
    token = auth.new_login_csrf()
    response = templates.TemplateResponse(
        request,
        "login.html",
        {"user": None, "csrf": token, "next": target, "error": error, "username": form.get("username", "")},
        status_code=401,
    )
    response.set_cookie(auth.LOGIN_CSRF_COOKIE, token, path="/login", httponly=True, samesite="strict")
    return response


@router.post("/logout")
async def logout(request: Request, session: SessionDep, web: WebUser) -> Response:
    auth.check_csrf(web, await auth.form_data(request))
    if web.principal.token_id is not None:
        await users.revoke_token_id(session, web.principal.token_id, actor=web.principal.actor)
    response = RedirectResponse("/login", status_code=303)
    auth.clear_session(response)
    return response


# --- dashboard ----------------------------------------------------------------------------


def _default_period() -> tuple[str, str]:
    """The last four whole weeks up to today (UTC), to tomorrow: today counts up to now."""
    end = clock.now().astimezone(UTC).date() + timedelta(days=1)
    return (end - timedelta(days=28)).isoformat(), end.isoformat()


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


CHARTS: dict[str, tuple[str, Callable[[list[dict[str, Any]]], dict[str, Any]]]] = {
    "weekly": ("week", _weekly_series),
    "models": ("model", lambda rows: _top(rows, _downtime_h)),
    "fault_codes": ("fault_code", lambda rows: _top(rows, _restore_h)),
}
"""The dashboard's charts: the KPI report grouping each reads, and how its rows become the
chart's data. Each is its own request (``/dashboard/charts/{name}``), so the tiles do not wait
for them and the browser fetches them in parallel."""


async def _kpi_args(request: Request) -> dict[str, Any]:
    params = request.query_params
    start, end = _default_period()
    return {
        "from_": params.get("from") or start,
        "to": params.get("to") or end,
        "customer": _int(params.get("customer"), "customer"),
        "site": _int(params.get("site"), "site"),
        "model": params.get("model") or None,
    }


@router.get("/", response_class=HTMLResponse)
async def dashboard(request: Request, session: SessionDep, runtime: RuntimeDep, web: WebUser) -> Response:
    """The tiles (one KPI report over the period); the charts load their own data after."""
    user = await auth.gate(kpis_api.get_kpis, web.principal)
    args = await _kpi_args(request)
    report = await kpis_api.get_kpis(session=session, runtime=runtime, user=user, definitions=False, **args)
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
    return await _page(
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
    """One chart's data: ``GET /kpis`` with the dashboard's filters and the chart's grouping."""
    try:
        if name not in CHARTS:
            raise InvalidInput(f"name: {name!r} is not one of {', '.join(CHARTS)}", field="name")
        user = await auth.gate(kpis_api.get_kpis, web.principal)
        group_by, shape = CHARTS[name]
        report = await kpis_api.get_kpis(
            session=session,
            runtime=runtime,
            user=user,
            definitions=False,
            group_by=group_by,
            **(await _kpi_args(request)),
        )
    except ServerError as exc:  # the page's script shows the message in the chart's place
        if isinstance(exc, Unauthorized):
            raise
        return _as_json(exc)
    return JSONResponse(shape(report["rows"]))


@router.get("/dashboard.csv")
async def dashboard_csv(request: Request, session: SessionDep, runtime: RuntimeDep, web: WebUser) -> Any:
    """The API's own CSV of what the dashboard shows (a link cannot send a bearer token)."""
    user = await auth.gate(kpis_api.get_kpis, web.principal)
    return await kpis_api.get_kpis(
        session=session, runtime=runtime, user=user, format="csv", **(await _kpi_args(request))
    )


# --- fleet --------------------------------------------------------------------------------

PAGE_SIZE = 50
STATES = [state.value for state in DeviceState]


def _fleet_query(request: Request) -> FleetQuery:
    params = request.query_params
    page = max(1, _int(params.get("page"), "page") or 1)
    online = params.get("online")
    sort = params.get("sort") or "id"
    if sort not in FLEET_SORTS:
        raise InvalidInput(f"sort: {sort!r} is not one of {', '.join(FLEET_SORTS)}", field="sort")
    return FleetQuery(
        q=(params.get("q") or "").strip()[:128] or None,
        customer=_int(params.get("customer"), "customer"),
        site=_int(params.get("site"), "site"),
        model=params.get("model") or None,
        state=params.get("state") or None,
        online=None if online in (None, "") else online == "1",
        sort=sort,
        descending=params.get("dir") == "desc",
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
    )


async def _fleet_context(request: Request, session: SessionDep, web: auth.WebSession) -> dict[str, Any]:
    where = _fleet_query(request)
    scope = access.device_condition(await access.scope_for(session, web.principal))
    rows, total = await fleet_page(session, where, scope=scope)
    params = {k: v for k, v in request.query_params.items() if v and k != "page"}
    page = where.offset // PAGE_SIZE + 1

    def link(**changes: Any) -> str:
        merged = {**params, **{k: str(v) for k, v in changes.items()}}
        return "?" + urlencode({k: v for k, v in merged.items() if v})

    return {
        "rows": rows,
        "total": total,
        "where": where,
        "page": page,
        "pages": max(1, -(-total // PAGE_SIZE)),
        "link": link,
        "query": urlencode(params | {"page": str(page)}),
    }


@router.get("/fleet", response_class=HTMLResponse)
async def fleet_page_view(request: Request, session: SessionDep, web: WebUser) -> Response:
    context = await _fleet_context(request, session, web)
    if request.headers.get("hx-request"):
        return templates.TemplateResponse(request, "_fleet_table.html", context)
    scope = access.device_condition(await access.scope_for(session, web.principal))
    customers, sites, models = await filter_options(session, scope)
    return await _page(
        request,
        "fleet.html",
        web,
        customers=customers,
        sites=sites,
        models=models,
        states=STATES,
        **context,
    )


# --- device -------------------------------------------------------------------------------


def _bands(intervals: list[StateInterval], start: datetime, end: datetime) -> list[dict[str, Any]]:
    """State intervals clipped to [start, end) as percentages of the width, for the timeline."""
    span = (end - start).total_seconds()
    out = []
    for interval in intervals:
        a = max(interval.start, start)
        b = min(interval.end or end, end)
        if b <= a:
            continue
        out.append(
            {
                "state": interval.state,
                "left": round(100 * (a - start).total_seconds() / span, 3),
                "width": round(100 * (b - a).total_seconds() / span, 3),
                "title": f"{interval.state}: {_when(a)} to {_when(b)}",
            }
        )
    return out


TELEMETRY_METRICS = 12
"""Charts on the device page at most (the first metrics by name); the API has them all."""
TELEMETRY_POINTS = 2000
"""Newest samples per metric and window: enough for a 90-day chart, bounded page weight."""


async def _telemetry(
    session: SessionDep, user: Any, device_id: str, start: datetime
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per metric, the window's samples from ``GET /devices/{id}/telemetry`` (oldest first) for
    uPlot; and the metrics not charted (beyond :data:`TELEMETRY_METRICS`)."""
    metrics = await forecast_service.device_metrics(session, device_id)
    series = []
    for metric in metrics[:TELEMETRY_METRICS]:
        samples = await devices_api.get_telemetry(
            device_id=device_id,
            session=session,
            user=user,
            metric=metric,
            since=start,
            limit=TELEMETRY_POINTS,
        )
        if not samples:
            continue
        samples.reverse()  # the API answers newest first
        series.append(
            {
                "metric": metric,
                "x": [s.ts.timestamp() for s in samples],
                "y": [s.value for s in samples],
                "truncated": len(samples) == TELEMETRY_POINTS,
            }
        )
    return series, metrics[TELEMETRY_METRICS:]


@router.get("/devices/{device_id}", response_class=HTMLResponse)
async def device_view(
    device_id: str, request: Request, session: SessionDep, runtime: RuntimeDep, web: WebUser
) -> Response:
    device: Device = await access.check_device(session, web.principal, device_id)
    days = min(90, max(1, _int(request.query_params.get("days"), "days") or 7))
    end = clock.now()
    start = end - timedelta(days=days)
    intervals = list(
        await session.scalars(
            select(StateInterval)
            .where(
                StateInterval.device_id == device_id,
                StateInterval.start_s < end.timestamp(),
                (StateInterval.end_s.is_(None)) | (StateInterval.end_s > start.timestamp()),
            )
            .order_by(StateInterval.start_s)
        )
    )
    events, _ = await fleet.list_events(session, device_id, limit=20)
    incidents, _ = await incident_service.list_incidents(
        session, IncidentFilter(device_id=device_id), limit=20
    )
    telemetry, uncharted = await _telemetry(session, web.principal, device_id, start)
    forecasts = await forecast_api.get_forecast(
        device_id=device_id, session=session, runtime=runtime, user=web.principal
    )
    return await _page(
        request,
        "device.html",
        web,
        device=device,
        days=days,
        start=start,
        end=end,
        bands=_bands(intervals, start, end),
        events=events,
        incidents=[incident for incident, _ in incidents],
        inventory=json.dumps(device.inventory or {}, indent=2, sort_keys=True),
        telemetry=_json_script(telemetry),
        metrics=[s["metric"] for s in telemetry],
        uncharted=uncharted,
        forecasts=sorted(forecasts, key=lambda f: (f.eta is None, f.eta or end, f.metric)),
    )


# --- incident -----------------------------------------------------------------------------


SUGGESTIONS = 5
PAST_INCIDENTS = 5


async def _suggestions(incident_id: int, session: SessionDep, user: Any) -> list[dict[str, Any]] | None:
    """``GET /incidents/{id}/suggestions`` (staff only, as the API: None for a customer, who
    gets guided steps instead) with each article's cause and resolution and the past incidents
    it solved (``GET /knowledge/articles/{id}``: the links, fixed ones first)."""
    if not await auth.allowed(knowledge_api.suggestions, user):
        return None
    found = await knowledge_api.suggestions(incident_id, session, user, limit=SUGGESTIONS)
    reader = await auth.gate(knowledge_api.get_article, user)
    out = []
    for item in found:
        article = await knowledge_api.get_article(item.article_id, session, reader)
        past = sorted(
            (link for link in article.links or [] if link.incident_id != incident_id),
            key=lambda link: (not link.fixed, -link.created_at.timestamp()),
        )
        out.append(
            {"s": item, "article": article, "past": past[:PAST_INCIDENTS], "more": len(past) > PAST_INCIDENTS}
        )
    return out


@router.get("/incidents/{incident_id}", response_class=HTMLResponse)
async def incident_view(
    incident_id: int, request: Request, session: SessionDep, runtime: RuntimeDep, web: WebUser
) -> Response:
    user = await auth.gate(incidents_api.get_incident, web.principal)
    detail = await incidents_api.get_incident(incident_id, session, user)
    remote_sessions: list[sessions_api.SessionPublic] = []
    if await auth.allowed(sessions_api.get_sessions, user):
        listed = await sessions_api.get_sessions(
            session=session, runtime=runtime, user=user, incident=incident_id, limit=20
        )
        remote_sessions = listed.items
    return await _page(
        request,
        "incident.html",
        web,
        incident=detail,
        suggestions=await _suggestions(incident_id, session, user),
        remote_sessions=remote_sessions,
        channels=[c.value for c in Channel],
        can_act=await auth.allowed(incidents_api.resolve, user),
        can_session=await auth.allowed(sessions_api.open_session, user),
    )


@router.post("/incidents/{incident_id}/{action}")
async def incident_action(
    incident_id: int, action: str, *, request: Request, session: SessionDep, runtime: RuntimeDep, web: WebUser
) -> Response:
    """Acknowledge, assign, resolve (with channel and notes) or open a remote session."""
    form = await auth.form_data(request)
    auth.check_csrf(web, form)
    here = RedirectResponse(f"/incidents/{incident_id}", status_code=303)
    try:
        if action == "ack":
            user = await auth.gate(incidents_api.acknowledge, web.principal)
            await incidents_api.acknowledge(incident_id, session, user, None)
        elif action == "assign":
            user = await auth.gate(incidents_api.assign, web.principal)
            body = IncidentAssign(user=form.get("user") or user.name, note=form.get("note", ""))
            await incidents_api.assign(incident_id, body, session, user)
        elif action == "resolve":
            user = await auth.gate(incidents_api.resolve, web.principal)
            resolve = IncidentResolve.model_validate(
                {
                    "channel": form.get("channel") or None,
                    "cause": form.get("cause", ""),
                    "resolution": form.get("resolution", ""),
                }
            )
            await incidents_api.resolve(incident_id, resolve, session, user)
        elif action == "session":
            user = await auth.gate(sessions_api.open_session, web.principal)
            incident = await incidents_api.get_incident(
                incident_id, session, await auth.gate(incidents_api.get_incident, user)
            )
            opened = await sessions_api.open_session(
                sessions_api.SessionCreate(
                    device_id=incident.device_id, incident_id=incident_id, reason=form.get("reason", "")
                ),
                runtime,
                user,
            )
            return RedirectResponse(f"/sessions/{opened.id}", status_code=303)
        else:
            raise InvalidInput(
                f"action: {action!r} is not one of ack, assign, resolve, session", field="action"
            )
    except ValidationError as exc:
        raise _invalid(exc) from None
    return here


# --- remote session console -------------------------------------------------------------


def _wants_json(request: Request) -> bool:
    """The console's script posts with ``Accept: application/json``; a plain form gets pages."""
    return "application/json" in request.headers.get("accept", "")


def _as_json(exc: ServerError) -> JSONResponse:
    return JSONResponse({"detail": exc.message, "field": exc.field}, status_code=exc.status)


def _invalid(exc: ValidationError) -> InvalidInput:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    return InvalidInput(f"{field}: {first['msg']}", field=field)


@router.get("/sessions/{session_id}", response_class=HTMLResponse)
async def session_view(
    session_id: str, request: Request, session: SessionDep, runtime: RuntimeDep, web: WebUser
) -> Response:
    """The console: header, the device's catalogue as forms, live output, history, close, report."""
    user = await auth.gate(sessions_api.get_session, web.principal)
    remote = await sessions_api.get_session(session_id, runtime, user)
    report = await sessions_api.session_report(
        session_id, runtime, await auth.gate(sessions_api.session_report, user), format="json"
    )
    device = await access.check_device(session, user, remote.device_id)
    now = clock.now()
    may_run = await auth.allowed(sessions_api.session_command, user)
    blocked = (
        console.session_blocker(remote, user.name, user.role is Role.ADMIN, now)
        if may_run
        else f"role {user.role.value!r} may not send commands"
    )
    consent_given = (
        remote.consent_by is not None
        and remote.consent_expires_at is not None
        and remote.consent_expires_at > now
    )
    forms = console.action_forms(device.inventory, session_blocked=blocked, consent_given=consent_given)
    needs_consent = any(f.policy == "needs_consent" for f in forms)
    files = await console.fetched_files(runtime.commands, report["commands"])
    return await _page(
        request,
        "session.html",
        web,
        remote=remote,
        report=report,
        device=device,
        forms=forms,
        blocked=blocked,
        consent_given=consent_given,
        files=files,
        can_download=bool(files) and await auth.allowed(commands_api.command_file, user),
        can_ask_consent=blocked is None and needs_consent and not consent_given,
        can_close=may_run
        and not SessionState(remote.state).terminal
        and (user.name == remote.owner or user.role is Role.ADMIN),
        seconds_left=(
            max(0, int((remote.expires_at - now).total_seconds()))
            if remote.expires_at is not None and remote.state == SessionState.ACTIVE.value
            else None
        ),
    )


@router.post("/sessions/{session_id}/run")
async def session_run(
    session_id: str, request: Request, session: SessionDep, runtime: RuntimeDep, web: WebUser
) -> Response:
    """Run one action of the catalogue: the form's arguments typed and checked against the
    action's schema, then ``POST /sessions/{id}/commands`` (policy checked before signing)."""
    form = await auth.form_data(request)
    try:
        auth.check_csrf(web, form)
        user = await auth.gate(sessions_api.session_command, web.principal)
        remote = await sessions_api.get_session(session_id, runtime, user)
        device = await access.check_device(session, user, remote.device_id)
        action = form.get("action", "")
        entry = catalogue_of(device).actions.get(action) or {}
        args = console.parse_args(form, entry.get("args_schema") or {})
        try:
            body = sessions_api.SessionCommandCreate(action=action, args=args)
        except ValidationError as exc:
            raise _invalid(exc) from None
        command = await sessions_api.session_command(session_id, body, runtime, user, Response())
    except ServerError as exc:
        if _wants_json(request) and not isinstance(exc, Unauthorized):
            return _as_json(exc)
        raise
    if _wants_json(request):
        return JSONResponse(
            {
                "id": command.id,
                "action": command.action,
                "state": command.state,
                "stream": f"/commands/{command.id}/stream",
                "cancel": f"/commands/{command.id}/cancel",
                "file": command.action == FILE_FETCH,  # output is base64: count it, do not show it
            },
            status_code=201,
        )
    return RedirectResponse(f"/sessions/{session_id}#cmd-{command.id}", status_code=303)


@router.get("/commands/{command_id}/stream")
async def command_stream(command_id: str, request: Request, runtime: RuntimeDep, web: WebUser) -> Response:
    """``GET /api/v1/commands/{id}/stream`` for the signed-in browser (EventSource cannot send
    a bearer token): the same endpoint, called with the cookie's principal."""
    user = await auth.gate(commands_api.stream_command, web.principal)
    last = _int(request.headers.get("last-event-id"), "Last-Event-ID")
    return await commands_api.stream_command(command_id, runtime, user, last)


@router.get("/commands/{command_id}/file")
async def command_file_download(command_id: str, runtime: RuntimeDep, web: WebUser) -> Response:
    """The file a ``file.fetch`` brought back, for the signed-in browser (a link cannot send a
    bearer token): ``GET /api/v1/commands/{id}/file`` itself, so the same role and device scope,
    and the same size and sha256 check (409 page with the reason when incomplete or altered)."""
    user = await auth.gate(commands_api.command_file, web.principal)
    answer: Response = await commands_api.command_file(command_id, runtime, user)
    return answer


@router.post("/commands/{command_id}/cancel")
async def command_cancel(command_id: str, request: Request, runtime: RuntimeDep, web: WebUser) -> Response:
    """Ask the device to stop a running command (``POST /api/v1/commands/{id}/cancel``)."""
    form = await auth.form_data(request)
    try:
        auth.check_csrf(web, form)
        user = await auth.gate(commands_api.cancel_command, web.principal)
        detail = await commands_api.cancel_command(command_id, runtime, user)
    except ServerError as exc:
        if _wants_json(request) and not isinstance(exc, Unauthorized):
            return _as_json(exc)
        raise
    if _wants_json(request):
        return JSONResponse({"id": detail.id, "state": detail.state}, status_code=202)
    back = f"/sessions/{detail.session_id}" if detail.session_id else f"/devices/{detail.device_id}"
    return RedirectResponse(back, status_code=303)


@router.post("/sessions/{session_id}/{action}")
async def session_action(
    session_id: str, action: str, request: Request, runtime: RuntimeDep, web: WebUser
) -> Response:
    """Request the local operator's consent, or close the session with its outcome."""
    form = await auth.form_data(request)
    auth.check_csrf(web, form)
    if action == "consent":
        user = await auth.gate(sessions_api.request_consent, web.principal)
        await sessions_api.request_consent(session_id, runtime, user)
    elif action == "close":
        user = await auth.gate(sessions_api.close_session, web.principal)
        fixed = {"yes": True, "no": False}.get(form.get("fixed", ""))
        try:
            body = sessions_api.SessionClose(outcome=form.get("outcome", ""), fixed=fixed)
        except ValidationError as exc:
            raise _invalid(exc) from None
        await sessions_api.close_session(session_id, body, runtime, user)
    else:
        raise InvalidInput(f"action: {action!r} is not one of consent, close", field="action")
    return RedirectResponse(f"/sessions/{session_id}", status_code=303)


@router.get("/sessions/{session_id}/report.md")
async def session_report_download(session_id: str, runtime: RuntimeDep, web: WebUser) -> Response:
    """The session report as a Markdown download (``GET /sessions/{id}/report?format=markdown``)."""
    user = await auth.gate(sessions_api.session_report, web.principal)
    answer: Response = await sessions_api.session_report(session_id, runtime, user, format="markdown")
    answer.headers["Content-Disposition"] = content_disposition(sessions_api.report_filename(session_id))
    return answer


# --- audit --------------------------------------------------------------------------------


@router.get("/audit", response_class=HTMLResponse)
async def audit_view(request: Request, session: SessionDep, web: WebUser) -> Response:
    user = await auth.gate(audit_api.list_audit, web.principal, "_user")
    params = request.query_params
    page = max(1, _int(params.get("page"), "page") or 1)
    entries = await audit_api.list_audit(
        session=session,
        _user=user,
        actor=params.get("actor") or None,
        action=params.get("action") or None,
        target=params.get("target") or None,
        since=params.get("since") or None,  # the API route parses and names a bad one
        until=params.get("until") or None,
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
    )
    rest = {k: v for k, v in params.items() if v and k != "page"}
    return await _page(
        request,
        "audit.html",
        web,
        entries=entries,
        params=params,
        page=page,
        pages=max(1, -(-entries.total // PAGE_SIZE)),
        rest=urlencode(rest),
        today=date.today().isoformat(),
    )

"""One device (``GET /devices/{id}`` and what hangs off it, for people): facts, the state
timeline over 1-90 days, consumable and wear forecasts, telemetry charts, incidents, events and
inventory — each from the service the API's device endpoints call, within the caller's scope
(``server.base.access``: another customer's device is 404)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server import clock, fleet
from server.api.deps import RuntimeDep, SessionDep
from server.api.sessions import SessionCreate
from server.base import access, permissions
from server.base.permissions import Capability
from server.db.models import Customer, Device, Site, StateInterval
from server.incidents import service as incident_service
from server.incidents.service import IncidentFilter
from server.maintenance import forecast as forecast_service
from server.web import auth
from server.web.auth import WebUser
from server.web.profile import diagnostics, profile
from server.web.rendering import int_param, invalid, json_script, page_router, render, when

__all__ = ["TELEMETRY_METRICS", "TELEMETRY_POINTS", "router"]

router = page_router()

TELEMETRY_METRICS = 12
"""Charts on the device page at most (the first metrics by name); the API has them all."""
TELEMETRY_POINTS = 2000
"""Newest samples per metric and window: enough for a 90-day chart, bounded page weight."""


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
                "title": f"{interval.state}: {when(a)} to {when(b)}",
            }
        )
    return out


async def _telemetry(
    session: AsyncSession, device_id: str, start: datetime
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per metric, the window's samples (``fleet.list_telemetry``, as ``GET /devices/{id}/
    telemetry``; oldest first) for uPlot; and the metrics not charted (beyond
    :data:`TELEMETRY_METRICS`). The device's scope is checked by the caller."""
    metrics = await forecast_service.device_metrics(session, device_id)
    series = []
    for metric in metrics[:TELEMETRY_METRICS]:
        samples = await fleet.list_telemetry(
            session, device_id, metric=metric, since=start, limit=TELEMETRY_POINTS
        )
        if not samples:
            continue
        samples.reverse()  # the service answers newest first
        series.append(
            {
                "metric": metric,
                "x": [s.ts.timestamp() for s in samples],
                "y": [s.value for s in samples],
                "truncated": len(samples) == TELEMETRY_POINTS,
            }
        )
    return series, metrics[TELEMETRY_METRICS:]


async def _intervals(
    session: AsyncSession, device_id: str, start: datetime, end: datetime
) -> list[StateInterval]:
    """The device's equipment states overlapping [start, end), oldest first."""
    return list(
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


@router.get("/devices/{device_id}", response_class=HTMLResponse)
async def device_view(
    device_id: str, request: Request, session: SessionDep, runtime: RuntimeDep, web: WebUser
) -> Response:
    user = permissions.check(web.principal, Capability.READ_FLEET)
    device: Device = await access.check_device(session, user, device_id)
    days = min(90, max(1, int_param(request.query_params.get("days"), "days") or 7))
    end = clock.now()
    start = end - timedelta(days=days)
    intervals = await _intervals(session, device_id, start, end)
    events, _ = await fleet.list_events(session, device_id, limit=20)
    incidents, _ = await incident_service.list_incidents(
        session, IncidentFilter(device_id=device_id), limit=20
    )
    telemetry, uncharted = await _telemetry(session, device_id, start)
    forecasts = await forecast_service.device_forecast(session, device_id, runtime.settings.maintenance)
    customer = await session.get(Customer, device.customer_id) if device.customer_id is not None else None
    site = await session.get(Site, device.site_id) if device.site_id is not None else None
    return await render(
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
        profile=profile(device.inventory),
        diagnostics=diagnostics(device.inventory),
        customer=customer,
        site=site,
        can_session=permissions.allows(user, Capability.RUN_SESSIONS),
        telemetry=json_script(telemetry),
        metrics=[s["metric"] for s in telemetry],
        uncharted=uncharted,
        forecasts=sorted(forecasts, key=lambda f: (f.eta is None, f.eta or end, f.metric)),
    )


@router.post("/devices/{device_id}/session")
async def open_session(device_id: str, request: Request, runtime: RuntimeDep, web: WebUser) -> Response:
    """Open a remote session on the device (``POST /sessions``: the session service checks the
    role, the scope and the device's state) and go to its console, where the session's actions are
    run; with ``action`` (one of the diagnostics the page offers) the session's reason names it."""
    form = await auth.form_data(request)
    auth.check_csrf(web, form)
    user = permissions.check(web.principal, Capability.RUN_SESSIONS)
    action = form.get("action") or ""
    reason = form.get("reason") or (f"diagnostic: {action}" if action else "")
    try:
        body = SessionCreate(device_id=device_id, reason=reason)
    except ValidationError as exc:
        raise invalid(exc) from None
    remote = await runtime.session_service.open(user, body.device_id, reason=body.reason)
    return RedirectResponse(f"/sessions/{quote(remote.id)}", status_code=303)

"""The incident queue (``/incidents``, docs/web.md): every incident in the caller's scope,
filtered by state, priority, customer, site, model, fault code, assignee, age and SLA breach,
next deadline first, 50 a page, with each incident's service-level clock; its CSV
(``/incidents.csv``, the same filters, every page); and bulk acknowledge / assign
(``POST /incidents/bulk``) — per incident the same scope check and the same incident service
as the single-item actions, so each one is audited and timelined as they are. The assignee is
chosen from the technicians who may work on the incident's customer; an incident the chosen
technician may not reach is skipped and named, as is one already acknowledged."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import QueryParams

from server import clock
from server.api.deps import RuntimeDep, SessionDep
from server.api.service_schemas import IncidentAssign
from server.base import access, permissions
from server.base.permissions import Capability
from server.base.users import Principal
from server.db.models import Device, Incident, Role
from server.errors import Conflict, Forbidden, InvalidInput, NotFound
from server.incidents import service as incident_service
from server.runtime import Runtime
from server.web import auth
from server.web.auth import WebUser
from server.web.csv_export import EXPORT_LIMIT, csv_response
from server.web.pages.incidents import reach_incident
from server.web.paging import PAGE_SIZE, Paging
from server.web.queries import filter_options
from server.web.queue import AGES, QUEUE_STATES, QueueQuery, SlaTargets, assignable, queue_page
from server.web.rendering import (
    choice_param,
    int_param,
    known_params,
    page_router,
    placement_params,
    render,
)

__all__ = ["BULK_ACTIONS", "BULK_MAX", "SELECT_PREFIX", "parse_queue", "router"]

router = page_router()

BULK_ACTIONS = ("ack", "assign")
BULK_MAX = 200
"""Incidents at most in one bulk action (a page holds 50)."""
SELECT_PREFIX = "sel."
"""Form fields of the selected incidents: ``sel.<id>`` (one field each: the form parser keeps
the last value of a repeated name)."""
CSV_HEADER = (
    "id",
    "status",
    "priority",
    "device",
    "model",
    "customer",
    "site",
    "fault_code",
    "codes",
    "kind",
    "effect",
    "assigned_to",
    "detected",
    "acknowledged",
    "restored",
    "resolved",
    "channel",
    "sla_waiting_for",
    "sla_due",
    "sla_ack_breached",
    "sla_restore_breached",
    "symptom",
)


QUEUE_PARAMS = (
    "state",
    "priority",
    "customer",
    "site",
    "model",
    "fault",
    "assignee",
    "age",
    "sla",
    "page",
    "format",
)
"""The query parameters of the queue and its CSV (``format=csv`` on the page is its CSV)."""


def parse_queue(params: Mapping[str, str], *, limit: int = PAGE_SIZE) -> QueueQuery:
    """The queue's filters from a query string, each checked (422 naming the field and the
    accepted values: an unknown state or age is refused, never ignored — and so is an unknown
    parameter)."""
    known_params(params, QUEUE_PARAMS)
    priority = choice_param(params.get("priority"), "priority", ("1", "2", "3", "4"))
    assignee = params.get("assignee") or None
    return QueueQuery(
        state=choice_param(params.get("state"), "state", QUEUE_STATES) or "active",
        priority=None if priority is None else int(priority),
        **placement_params(params),
        fault=(params.get("fault") or "").strip()[:256] or None,
        assignee=None if assignee is None else ("" if assignee == "-" else assignee[:128]),
        age=choice_param(params.get("age"), "age", AGES),
        breached=choice_param(params.get("sla"), "sla", ("breached",)) is not None,
        limit=limit,
    )


async def _distinct(session: AsyncSession, column: Any, scope: Any) -> list[str]:
    """The values of an incident ``column`` in the caller's scope (a filter's choices), at most 200."""
    query = (
        select(column)
        .join(Device, Device.id == Incident.device_id)
        .where(column.is_not(None), *([] if scope is None else [scope]))
        .distinct()
        .order_by(column)
        .limit(200)
    )
    return [str(value) for value in await session.scalars(query)]


async def _queue_context(
    query: Mapping[str, str], session: AsyncSession, runtime: Runtime, user: Principal
) -> dict[str, Any]:
    paging = Paging(query)
    where = replace(parse_queue(query, limit=paging.size), offset=paging.offset)
    scope_of = await access.scope_for(session, user)
    scope = access.device_condition(scope_of)
    targets = SlaTargets.of(runtime.settings.incidents)
    rows, total = await queue_page(session, where, scope=scope, targets=targets, now=clock.now())
    customers, sites, models = await filter_options(session, scope)
    can_act = permissions.allows(user, Capability.ACT_ON_INCIDENTS)
    return {
        "rows": rows,
        "where": where,
        **paging.context(total),
        "states": QUEUE_STATES,
        "ages": list(AGES),
        "customers": customers,
        "sites": sites,
        "models": models,
        "faults": await _distinct(session, Incident.fault_code, scope),
        "assignees": await _distinct(session, Incident.assigned_to, scope),
        "targets": targets,
        "can_act": can_act,
        "technicians": (
            await assignable(session, {row.device.customer_id for row in rows}, every=False)
            if can_act and rows
            else []
        ),
        "unplaced_only": scope_of.customer_ids is not None
        and not scope_of.customer_ids
        and user.role is Role.TECHNICIAN,
        "csv_url": paging.export("/incidents.csv"),
        "notice": None,
    }


@router.get("/incidents", response_class=HTMLResponse)
async def queue_view(request: Request, session: SessionDep, runtime: RuntimeDep, web: WebUser) -> Response:
    user = permissions.check(web.principal, Capability.READ_INCIDENTS)
    fmt = choice_param(request.query_params.get("format"), "format", ("html", "csv"))
    if fmt == "csv":  # what a person tries first; the export link is /incidents.csv
        return await queue_csv(request, session, runtime, web)
    return await render(
        request, "queue.html", web, **await _queue_context(request.query_params, session, runtime, user)
    )


@router.get("/incidents.csv")
async def queue_csv(request: Request, session: SessionDep, runtime: RuntimeDep, web: WebUser) -> Response:
    """Every incident the page's filters match (all pages, at most :data:`EXPORT_LIMIT`)."""
    user = permissions.check(web.principal, Capability.READ_INCIDENTS)
    where = parse_queue(request.query_params, limit=EXPORT_LIMIT)  # every page, from the first
    scope = access.device_condition(await access.scope_for(session, user))
    now = clock.now()
    rows, _ = await queue_page(
        session, where, scope=scope, targets=SlaTargets.of(runtime.settings.incidents), now=now
    )
    return csv_response(
        f"incidents-{now:%Y%m%d-%H%M}.csv",
        CSV_HEADER,
        (
            (
                r.incident.id,
                r.incident.status,
                r.incident.priority,
                r.device.id,
                r.device.model,
                r.customer,
                r.site,
                r.incident.fault_code,
                r.incident.codes or [],
                r.incident.kind,
                r.incident.effect,
                r.incident.assigned_to,
                r.incident.t_detect,
                r.incident.t_ack,
                r.incident.t_restored,
                r.incident.t_resolved,
                r.incident.channel,
                r.sla.waiting_for,
                r.sla.due,
                r.sla.ack_breached,
                r.sla.restore_breached,
                r.incident.symptom,
            )
            for r in rows
        ),
    )


def _selected(form: Mapping[str, str]) -> list[int]:
    ids = []
    for key, value in form.items():
        if key.startswith(SELECT_PREFIX) and value:
            ids.append(int_param(key[len(SELECT_PREFIX) :], "selection") or 0)
    if not ids:
        raise InvalidInput("selection: choose at least one incident", field="selection")
    if len(ids) > BULK_MAX:
        raise InvalidInput(f"selection: at most {BULK_MAX} incidents at once", field="selection")
    return sorted(set(ids))


async def _bulk_one(
    session: AsyncSession, user: Principal, action: str, incident_id: int, assignee: str
) -> str | None:
    """One incident of a bulk action through the incident service; why it was skipped, or None."""
    try:
        incident = await reach_incident(session, user, incident_id)
        if action == "ack":
            await incident_service.acknowledge(session, incident_id, user, text="bulk")
            return None
        device = await session.get(Device, incident.device_id)
        customer_id = device.customer_id if device is not None else None
        if assignee not in await assignable(session, {customer_id}):
            return f"{assignee} may not work on this incident's customer"
        await incident_service.assign(session, incident_id, user, user=assignee, text="bulk")
        return None
    except (Conflict, NotFound, Forbidden) as exc:
        await session.rollback()
        return exc.message


@router.post("/incidents/bulk", response_class=HTMLResponse)
async def queue_bulk(request: Request, session: SessionDep, runtime: RuntimeDep, web: WebUser) -> Response:
    """Acknowledge or assign the selected incidents, each as its single-item action; then the
    queue (with the same filters, carried in ``back``) with what was done and what skipped."""
    form = await auth.form_data(request)
    auth.check_csrf(web, form)
    user = permissions.check(web.principal, Capability.ACT_ON_INCIDENTS)
    action = form.get("action", "")
    if action not in BULK_ACTIONS:
        raise InvalidInput(f"action: {action!r} is not one of {', '.join(BULK_ACTIONS)}", field="action")
    ids = _selected(form)
    assignee = ""
    if action == "assign":
        try:
            assignee = IncidentAssign(user=form.get("user", ""), note="").user
        except ValidationError as exc:
            raise InvalidInput("user: choose the technician to assign", field="user") from exc
        if not assignee:
            raise InvalidInput("user: choose the technician to assign", field="user")
    done, skipped = [], []
    for incident_id in ids:
        why = await _bulk_one(session, user, action, incident_id, assignee)
        if why is None:
            done.append(incident_id)
        else:
            skipped.append((incident_id, why))
    context = await _queue_context(QueryParams(form.get("back", "")), session, runtime, user)
    verb = "Acknowledged" if action == "ack" else f"Assigned to {assignee}"
    context["notice"] = {"verb": verb, "done": done, "skipped": skipped}
    return await render(request, "queue.html", web, **context)

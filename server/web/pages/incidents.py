"""One incident (``GET /incidents/{id}`` for people): facts, timeline (sentences with links:
``server.web.timeline_text``), similar past incidents, its remote sessions; and its actions —
acknowledge, assign, resolve, open a remote session — through the incident and session services
the API's endpoints call, after the same role check (the permissions table) and the same device
scope (``server.base.access``). Forms are checked against the API's own request schemas, so a
bad value is the API's 422."""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from server.api.deps import RuntimeDep, SessionDep
from server.api.service_schemas import (
    IncidentAssign,
    IncidentDetailPublic,
    IncidentEntryPublic,
    IncidentPublic,
    IncidentResolve,
)
from server.api.sessions import SessionCreate
from server.base import access, permissions
from server.base.permissions import Capability
from server.base.users import Principal
from server.db.models import Channel, Device, Incident, RemoteSession
from server.errors import InvalidInput
from server.incidents import service as incident_service
from server.runtime import Runtime
from server.sessions.service import SessionFilter, list_sessions
from server.web import auth
from server.web.audit_text import command_ids
from server.web.auth import WebSession, WebUser
from server.web.pages.knowledge import similar_for, suggestions_for
from server.web.queries import command_sessions
from server.web.rendering import invalid, page_router, render
from server.web.timeline_text import timeline_sentence

__all__ = ["ACTIONS", "reach_incident", "router"]

router = page_router()

ACTIONS = ("ack", "assign", "resolve", "session")
REMOTE_SESSIONS = 20
"""The incident's remote sessions listed on its page, newest first."""


async def reach_incident(session: AsyncSession, user: Principal, incident_id: int) -> Incident:
    """The incident if its device is in the caller's scope (404 for a customer, 403 otherwise)."""
    incident = await incident_service.get_incident(session, incident_id)
    await access.check_device(session, user, incident.device_id, via=("incident", incident_id))
    return incident


async def _detail(session: AsyncSession, incident: Incident) -> IncidentDetailPublic:
    """The incident as ``GET /incidents/{id}`` answers it: with its device's model, customer
    and site, and its timeline."""
    device = await session.get(Device, incident.device_id)
    public = IncidentPublic.model_validate(incident)
    if device is not None:
        public.model, public.customer_id, public.site_id = device.model, device.customer_id, device.site_id
    out = IncidentDetailPublic.model_validate(public.model_dump())
    out.timeline = [
        IncidentEntryPublic.model_validate(entry)
        for entry in await incident_service.list_timeline(session, incident.id)
    ]
    return out


@router.get("/incidents/{incident_id}", response_class=HTMLResponse)
async def incident_view(incident_id: int, request: Request, session: SessionDep, web: WebUser) -> Response:
    user = permissions.check(web.principal, Capability.READ_INCIDENTS)
    reached = await reach_incident(session, user, incident_id)
    detail = await _detail(session, reached)
    sessions = await command_sessions(session, command_ids(entry.detail for entry in detail.timeline))
    see_sessions = permissions.allows(user, Capability.READ_SESSIONS)
    timeline = [
        (e, timeline_sentence(detail.id, detail.device_id, e, sessions, session_links=see_sessions))
        for e in detail.timeline
    ]
    remote_sessions: list[RemoteSession] = []
    if see_sessions:
        remote_sessions, _ = await list_sessions(
            session, user, SessionFilter(incident_id=incident_id), limit=REMOTE_SESSIONS
        )
    return await render(
        request,
        "incident.html",
        web,
        incident=detail,
        timeline=timeline,
        suggestions=await suggestions_for(session, user, incident_id),
        similar=await similar_for(session, user, reached),
        remote_sessions=remote_sessions,
        channels=[c.value for c in Channel],
        can_act=permissions.allows(user, Capability.ACT_ON_INCIDENTS),
        can_session=permissions.allows(user, Capability.RUN_SESSIONS),
    )


async def _open_session(
    incident_id: int, form: dict[str, str], session: AsyncSession, runtime: Runtime, web: WebSession
) -> str:
    """Open a remote session on the incident's device (``POST /sessions`` with the incident);
    the new session's id."""
    user = permissions.check(web.principal, Capability.RUN_SESSIONS)
    incident = await reach_incident(session, permissions.check(user, Capability.READ_INCIDENTS), incident_id)
    body = SessionCreate(device_id=incident.device_id, incident_id=incident_id, reason=form.get("reason", ""))
    remote = await runtime.session_service.open(
        user, body.device_id, incident_id=body.incident_id, reason=body.reason, time_limit_s=body.time_limit_s
    )
    return remote.id


@router.post("/incidents/{incident_id}/{action}")
async def incident_action(
    incident_id: int, action: str, *, request: Request, session: SessionDep, runtime: RuntimeDep, web: WebUser
) -> Response:
    """Acknowledge, assign, resolve (with channel and notes) or open a remote session."""
    form = await auth.form_data(request)
    auth.check_csrf(web, form)
    if action not in ACTIONS:
        raise InvalidInput(f"action: {action!r} is not one of {', '.join(ACTIONS)}", field="action")
    try:
        if action == "session":
            opened = await _open_session(incident_id, form, session, runtime, web)
            return RedirectResponse(f"/sessions/{opened}", status_code=303)
        user = permissions.check(web.principal, Capability.ACT_ON_INCIDENTS)
        if action == "ack":
            await reach_incident(session, user, incident_id)
            await incident_service.acknowledge(session, incident_id, user, text="")
        elif action == "assign":
            assign = IncidentAssign(user=form.get("user") or user.name, note=form.get("note", ""))
            await reach_incident(session, user, incident_id)
            await incident_service.assign(session, incident_id, user, user=assign.user, text=assign.note)
        else:
            await _resolve(incident_id, form, session, user)
    except ValidationError as exc:
        raise invalid(exc) from None
    return RedirectResponse(f"/incidents/{incident_id}", status_code=303)


async def _resolve(incident_id: int, form: dict[str, str], session: AsyncSession, user: Principal) -> None:
    """Resolve with the form's channel (empty: what the evidence says), cause and resolution,
    checked as ``POST /incidents/{id}/resolve`` checks its body."""
    body = IncidentResolve.model_validate(
        {
            "channel": form.get("channel") or None,
            "cause": form.get("cause", ""),
            "resolution": form.get("resolution", ""),
        }
    )
    await reach_incident(session, user, incident_id)
    await incident_service.resolve(
        session,
        incident_id,
        user,
        channel=body.channel,
        cause=body.cause,
        resolution=body.resolution,
        onsite_at=body.onsite_at,
        visits=body.visits,
        external=body.external,
        article_id=body.article_id,
        draft_article=body.draft_article,
        article_fixed=body.article_fixed,
    )

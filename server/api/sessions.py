"""Remote sessions (docs/sessions.md): open, list, read, run commands in, ask consent, close,
report. Writes: technician (own sessions, devices in scope) and admin; reads also ops."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from server import commands
from server.api.commands import MAX_WAIT_S
from server.api.deps import RuntimeDep, SessionDep, require_role
from server.api.download import content_disposition
from server.api.params import Count, Id
from server.api.schemas import ActionName, CommandDetailPublic, CommandReplyPublic, Page
from server.base.users import Principal
from server.db.models import RemoteSession, Role, SessionState
from server.db.types import utcnow
from server.runtime import Runtime
from server.sessions.report import render_markdown
from server.sessions.service import SessionFilter, SessionService, list_sessions

__all__ = ["report_filename", "router", "service"]

router = APIRouter(tags=["sessions"])

Technician = Annotated[Principal, require_role(Role.TECHNICIAN)]
Reader = Annotated[Principal, require_role(Role.TECHNICIAN, Role.OPS)]
SessionIdPath = Annotated[str, Path(max_length=64, description="Session id (ses_…)")]


def service(runtime: Runtime) -> SessionService:
    """The runtime's session service (the composition root builds it once)."""
    return runtime.session_service


def report_filename(session_id: str) -> str:
    """The Markdown report's file name (the API shows it inline, the console downloads it)."""
    return f"session-{session_id}-{utcnow():%Y%m%d}.md"


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    incident_id: Id | None = Field(default=None, description="The incident this session works on")
    reason: Annotated[str, StringConstraints(max_length=2000)] = ""
    time_limit_s: float | None = Field(
        default=None,
        gt=0,
        description="How long the session may stay active (default sessions.default_time_limit)",
    )


class SessionCommandCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: ActionName
    args: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0, le=86400)
    wait_s: float = Field(
        default=0, ge=0, le=MAX_WAIT_S, description="Hold the answer until finished, at most this long"
    )


class SessionClose(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Annotated[str, StringConstraints(max_length=8000)] = ""
    fixed: bool | None = None


class SessionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    device_id: str
    incident_id: int | None
    owner: str
    reason: str
    state: str
    requires_consent: bool
    all_commands_need_consent: bool
    time_limit_s: float
    created_at: datetime
    consent_requested_at: datetime | None
    consent_command_id: str | None
    consent_by: str | None
    consent_expires_at: datetime | None
    activated_at: datetime | None
    expires_at: datetime | None
    ended_at: datetime | None
    ended_by: str | None
    outcome: str
    fixed: bool | None
    queue_position: int | None = None


async def _public(svc: SessionService, remote: RemoteSession) -> SessionPublic:
    public = SessionPublic.model_validate(remote)
    public.queue_position = await svc.queue_position(remote)
    return public


@router.post("/sessions", status_code=201, response_model=SessionPublic)
async def open_session(body: SessionCreate, runtime: RuntimeDep, user: Technician) -> SessionPublic:
    """Open a session: ``active`` at once, ``awaiting_consent`` on an attended device, or
    ``requested`` (with ``queue_position``) behind the session holding the device."""
    svc = service(runtime)
    remote = await svc.open(
        user, body.device_id, incident_id=body.incident_id, reason=body.reason, time_limit_s=body.time_limit_s
    )
    return await _public(svc, remote)


@router.get("/sessions", response_model=Page[SessionPublic])
async def get_sessions(
    *,
    session: SessionDep,
    runtime: RuntimeDep,
    user: Reader,
    device: Annotated[str | None, Query(max_length=64)] = None,
    state: SessionState | None = None,
    owner: Annotated[str | None, Query(max_length=128)] = None,
    incident: Annotated[Id | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[Count, Query()] = 0,
) -> Page[SessionPublic]:
    where = SessionFilter(
        device_id=device, state=state.value if state else None, owner=owner, incident_id=incident
    )
    rows, total = await list_sessions(session, user, where, limit=limit, offset=offset)
    svc = service(runtime)
    return Page(items=[await _public(svc, row) for row in rows], total=total, limit=limit, offset=offset)


@router.get("/sessions/{session_id}", response_model=SessionPublic)
async def get_session(session_id: SessionIdPath, runtime: RuntimeDep, user: Reader) -> SessionPublic:
    svc = service(runtime)
    return await _public(svc, await svc.get(user, session_id))


@router.post(
    "/sessions/{session_id}/commands",
    status_code=201,
    response_model=CommandDetailPublic,
    responses={200: {"model": CommandDetailPublic, "description": "with wait_s: the finished command"}},
)
async def session_command(
    session_id: SessionIdPath,
    body: SessionCommandCreate,
    runtime: RuntimeDep,
    user: Technician,
    response: Response,
) -> CommandDetailPublic:
    """A command in the session (its owner or an admin, while active). The owner's policy as the
    device advertised it is checked before signing: unknown action 422, forbidden 403, consent
    missing 409. Follow it with ``GET /commands/{id}/stream``."""
    command = await service(runtime).run_command(
        user, session_id, body.action, body.args, timeout_s=body.timeout_s
    )
    if body.wait_s > 0:
        command = await runtime.commands.wait_for_result(command.id, body.wait_s)
        response.status_code = 200
    async with runtime.sessions() as session:
        replies = await commands.list_replies(session, command.id)
    detail = CommandDetailPublic.model_validate(command)
    detail.replies = [CommandReplyPublic.model_validate(reply) for reply in replies]
    return detail


@router.post("/sessions/{session_id}/consent", response_model=SessionPublic)
async def request_consent(session_id: SessionIdPath, runtime: RuntimeDep, user: Technician) -> SessionPublic:
    """Ask the local operator to approve ``needs_consent`` actions in this active session."""
    svc = service(runtime)
    return await _public(svc, await svc.request_consent(user, session_id))


@router.post("/sessions/{session_id}/close", response_model=SessionPublic)
async def close_session(
    session_id: SessionIdPath, body: SessionClose, runtime: RuntimeDep, user: Technician
) -> SessionPublic:
    """End the session (owner or admin) with an outcome; the report is frozen."""
    svc = service(runtime)
    return await _public(svc, await svc.close(user, session_id, outcome=body.outcome, fixed=body.fixed))


@router.get(
    "/sessions/{session_id}/report",
    responses={200: {"content": {"application/json": {}, "text/markdown": {}}}},
)
async def session_report(
    session_id: SessionIdPath,
    runtime: RuntimeDep,
    user: Reader,
    format: Annotated[Literal["json", "markdown"], Query()] = "json",
) -> Any:
    """The investigation report: header, timeline, every command with its output, outcome.
    ``?format=markdown`` for the document to send the customer."""
    report = await service(runtime).report(user, session_id)
    if format == "markdown":
        return PlainTextResponse(
            render_markdown(report),
            media_type="text/markdown; charset=utf-8",
            headers={
                "Content-Disposition": content_disposition(report_filename(session_id), disposition="inline")
            },
        )
    return report

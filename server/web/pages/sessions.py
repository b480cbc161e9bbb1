"""The remote session console (``/sessions/{id}``, docs/web.md): header, the device's action
catalogue as forms, live output, history, close, report — through the session service the
API's ``/sessions`` endpoints call, after the same role check (the permissions table). Forms
are checked against the API's request schemas; a run's arguments with the agent's own checker
first (``server.web.console``)."""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from pydantic import ValidationError

from server import clock
from server.api.deps import RuntimeDep, SessionDep
from server.api.download import content_disposition
from server.api.sessions import SessionClose, SessionCommandCreate, SessionPublic, report_filename
from server.base import access, permissions
from server.base.permissions import Capability
from server.commands.files import FILE_FETCH
from server.commands.policy import catalogue_of
from server.db.models import RemoteSession, Role, SessionState
from server.errors import InvalidInput, ServerError, Unauthorized
from server.sessions.report import render_markdown
from server.sessions.service import SessionService
from server.web import auth, console
from server.web.auth import WebUser
from server.web.rendering import as_json, invalid, page_router, render, wants_json

__all__ = ["router", "session_public"]

router = page_router()


async def session_public(svc: SessionService, remote: RemoteSession) -> SessionPublic:
    """The session as ``GET /sessions/{id}`` answers it, with its place in the device's queue."""
    public = SessionPublic.model_validate(remote)
    public.queue_position = await svc.queue_position(remote)
    return public


@router.get("/sessions/{session_id}", response_class=HTMLResponse)
async def session_view(
    session_id: str, request: Request, session: SessionDep, runtime: RuntimeDep, web: WebUser
) -> Response:
    """The console: header, the device's catalogue as forms, live output, history, close, report."""
    user = permissions.check(web.principal, Capability.READ_SESSIONS)
    svc = runtime.session_service
    remote = await session_public(svc, await svc.get(user, session_id))
    report = await svc.report(user, session_id)
    device = await access.check_device(session, user, remote.device_id)
    now = clock.now()
    may_run = permissions.allows(user, Capability.RUN_SESSIONS)
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
    return await render(
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
        can_download=bool(files) and permissions.allows(user, Capability.SEND_COMMANDS),
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
    action's schema, then the session service (policy checked before signing), as
    ``POST /sessions/{id}/commands``."""
    form = await auth.form_data(request)
    try:
        auth.check_csrf(web, form)
        user = permissions.check(web.principal, Capability.RUN_SESSIONS)
        svc = runtime.session_service
        remote = await svc.get(user, session_id)
        device = await access.check_device(session, user, remote.device_id)
        action = form.get("action", "")
        entry = catalogue_of(device).actions.get(action) or {}
        args = console.parse_args(form, entry.get("args_schema") or {})
        try:
            body = SessionCommandCreate(action=action, args=args)
        except ValidationError as exc:
            raise invalid(exc) from None
        command = await svc.run_command(user, session_id, body.action, body.args, timeout_s=body.timeout_s)
    except ServerError as exc:
        if wants_json(request) and not isinstance(exc, Unauthorized):
            return as_json(exc)
        raise
    if wants_json(request):
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


@router.get("/sessions/{session_id}/report.md")
async def session_report_download(session_id: str, runtime: RuntimeDep, web: WebUser) -> Response:
    """The session report as a Markdown download (``GET /sessions/{id}/report?format=markdown``
    as an attachment)."""
    user = permissions.check(web.principal, Capability.READ_SESSIONS)
    report = await runtime.session_service.report(user, session_id)
    return PlainTextResponse(
        render_markdown(report),
        media_type="text/markdown; charset=utf-8",
        headers={"Content-Disposition": content_disposition(report_filename(session_id))},
    )


@router.post("/sessions/{session_id}/{action}")
async def session_action(
    session_id: str, action: str, request: Request, runtime: RuntimeDep, web: WebUser
) -> Response:
    """Request the local operator's consent, or close the session with its outcome."""
    form = await auth.form_data(request)
    auth.check_csrf(web, form)
    svc = runtime.session_service
    if action == "consent":
        user = permissions.check(web.principal, Capability.RUN_SESSIONS)
        await svc.request_consent(user, session_id)
    elif action == "close":
        user = permissions.check(web.principal, Capability.RUN_SESSIONS)
        fixed = {"yes": True, "no": False}.get(form.get("fixed", ""))
        try:
            body = SessionClose(outcome=form.get("outcome", ""), fixed=fixed)
        except ValidationError as exc:
            raise invalid(exc) from None
        await svc.close(user, session_id, outcome=body.outcome, fixed=body.fixed)
    else:
        raise InvalidInput(f"action: {action!r} is not one of consent, close", field="action")
    return RedirectResponse(f"/sessions/{session_id}", status_code=303)

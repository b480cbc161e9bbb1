"""A command from the session console (``/commands/{id}/…`` for the signed-in browser: an
EventSource or a download link cannot send a bearer token): follow it live, download the file
a ``file.fetch`` brought back, cancel it. Each goes to the command service the API's endpoints
call, after the same role check (the permissions table) and the same device scope."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse

from server.api.deps import RuntimeDep
from server.api.download import content_disposition
from server.base import access, permissions
from server.base.permissions import Capability
from server.base.users import Principal
from server.commands.sse import event_text
from server.db.models import Command
from server.errors import ServerError, Unauthorized
from server.runtime import Runtime
from server.web import auth
from server.web.auth import WebUser
from server.web.rendering import as_json, int_param, page_router, wants_json

__all__ = ["reach_command", "router"]

router = page_router()


async def reach_command(runtime: Runtime, user: Principal, command_id: str) -> Command:
    """The command if its device is in the caller's scope (404 unknown, 403/404 out of scope)."""
    command = await runtime.commands.get(command_id)
    async with runtime.sessions() as session:
        await access.check_device(session, user, command.device_id, via=("command", command_id))
    return command


@router.get("/commands/{command_id}/stream")
async def command_stream(command_id: str, request: Request, runtime: RuntimeDep, web: WebUser) -> Response:
    """The command's replies as Server-Sent Events, as ``GET /api/v1/commands/{id}/stream``
    sends them; resumes after ``Last-Event-ID``."""
    user = permissions.check(web.principal, Capability.SEND_COMMANDS)
    last = int_param(request.headers.get("last-event-id"), "Last-Event-ID")
    await reach_command(runtime, user, command_id)

    async def events() -> AsyncIterator[str]:
        async for item in runtime.commands.stream(command_id, after_seq=last):
            yield event_text(item)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/commands/{command_id}/file")
async def command_file_download(command_id: str, runtime: RuntimeDep, web: WebUser) -> Response:
    """The file a ``file.fetch`` brought back, as ``GET /api/v1/commands/{id}/file``: the same
    role and device scope, the same size and sha256 check (409 page with the reason when it is
    incomplete or altered)."""
    user = permissions.check(web.principal, Capability.SEND_COMMANDS)
    await reach_command(runtime, user, command_id)
    fetched = await runtime.commands.fetch_file(command_id)
    return Response(
        fetched.content,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": content_disposition(fetched.name),
            "X-Content-SHA256": fetched.sha256,
        },
    )


@router.post("/commands/{command_id}/cancel")
async def command_cancel(command_id: str, request: Request, runtime: RuntimeDep, web: WebUser) -> Response:
    """Ask the device to stop a running command (as ``POST /api/v1/commands/{id}/cancel``)."""
    form = await auth.form_data(request)
    try:
        auth.check_csrf(web, form)
        user = permissions.check(web.principal, Capability.SEND_COMMANDS)
        await reach_command(runtime, user, command_id)
        command = await runtime.commands.cancel(user, command_id)
    except ServerError as exc:
        if wants_json(request) and not isinstance(exc, Unauthorized):
            return as_json(exc)
        raise
    if wants_json(request):
        return JSONResponse({"id": command.id, "state": command.state}, status_code=202)
    back = f"/sessions/{command.session_id}" if command.session_id else f"/devices/{command.device_id}"
    return RedirectResponse(back, status_code=303)

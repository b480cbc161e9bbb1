"""Commands: send one to a device (technician/admin), read it back with its replies (admin,
technician, ops, provisioning — not customers), always within the caller's device scope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from server import commands
from server.api.deps import RuntimeDep, SessionDep, require_role
from server.api.devices import DeviceIdPath
from server.api.download import content_disposition
from server.api.params import Count, Seq
from server.api.schemas import CommandCreate, CommandDetailPublic, CommandPublic, CommandReplyPublic, Page
from server.base import access
from server.base.users import Principal
from server.commands.sse import event_text
from server.db.models import Command, Role
from server.db.types import utcnow

__all__ = ["MAX_WAIT_S", "router"]

router = APIRouter(tags=["commands"])

MAX_WAIT_S = 300.0
"""The longest an HTTP request with ``wait: true`` is held open."""

Technician = Annotated[Principal, require_role(Role.TECHNICIAN)]
Reader = Annotated[Principal, require_role(Role.TECHNICIAN, Role.OPS, Role.PROVISIONING)]


async def _detail(runtime: RuntimeDep, command: Command) -> CommandDetailPublic:
    async with runtime.sessions() as session:
        replies = await commands.list_replies(session, command.id)
    detail = CommandDetailPublic.model_validate(command)
    detail.replies = [CommandReplyPublic.model_validate(reply) for reply in replies]
    return detail


@router.post(
    "/devices/{device_id}/commands",
    status_code=201,
    response_model=CommandDetailPublic,
    responses={200: {"model": CommandDetailPublic, "description": "with wait=true: the finished command"}},
)
async def create_command(
    *, device_id: DeviceIdPath, body: CommandCreate, runtime: RuntimeDep, user: Technician, response: Response
) -> CommandDetailPublic:
    """Sign, record and publish a command. With ``wait`` the answer comes once the command is
    finished, or at its deadline (at most 300 s)."""
    async with runtime.sessions() as session:
        await access.check_device(session, user, device_id)
    command = await runtime.commands.issue(
        user, device_id, body.action, body.args, timeout_s=body.timeout_s, session_id=body.session_id
    )
    if body.wait:
        remaining = (command.deadline_at - utcnow()).total_seconds() + runtime.settings.command_sweep_interval
        command = await runtime.commands.wait_for_result(command.id, min(MAX_WAIT_S, max(0.0, remaining) + 1))
        response.status_code = 200
    return await _detail(runtime, command)


@router.get("/commands/{command_id}", response_model=CommandDetailPublic)
async def get_command(
    command_id: Annotated[str, Path(max_length=64)], runtime: RuntimeDep, user: Reader
) -> CommandDetailPublic:
    command = await runtime.commands.get(command_id)
    async with runtime.sessions() as session:
        await access.check_device(session, user, command.device_id, via=("command", command_id))
    return await _detail(runtime, command)


@router.get("/devices/{device_id}/commands", response_model=Page[CommandPublic])
async def list_device_commands(
    *,
    device_id: DeviceIdPath,
    session: SessionDep,
    user: Reader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[Count, Query()] = 0,
) -> Page[CommandPublic]:
    await access.check_device(session, user, device_id)
    rows, total = await commands.list_device_commands(session, device_id, limit=limit, offset=offset)
    return Page(
        items=[CommandPublic.model_validate(row) for row in rows], total=total, limit=limit, offset=offset
    )


# -- streaming, output, files, cancel (remote sessions, docs/sessions.md) ----------------------

_Operator = Annotated[Principal, require_role(Role.TECHNICIAN)]
_OutputReader = Annotated[Principal, require_role(Role.TECHNICIAN, Role.OPS)]
_CommandIdPath = Annotated[str, Path(max_length=64)]


async def _reachable(runtime: RuntimeDep, user: Principal, command_id: str) -> Command:
    command = await runtime.commands.get(command_id)
    async with runtime.sessions() as session:
        await access.check_device(session, user, command.device_id, via=("command", command_id))
    return command


@router.get(
    "/commands/{command_id}/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def stream_command(
    command_id: _CommandIdPath,
    runtime: RuntimeDep,
    user: _Operator,
    last_event_id: Annotated[Seq | None, Header()] = None,
) -> StreamingResponse:
    """The command's replies as Server-Sent Events in device order (``event`` = reply type:
    accepted, progress, output, result, error…; ``id`` = device_seq; ``data`` = the reply),
    then ``event: end`` with the terminal state. Resume with ``Last-Event-ID``."""
    await _reachable(runtime, user, command_id)

    async def events() -> AsyncIterator[str]:
        async for item in runtime.commands.stream(command_id, after_seq=last_event_id):
            yield event_text(item)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/commands/{command_id}/output", response_class=PlainTextResponse)
async def command_output(
    command_id: _CommandIdPath, runtime: RuntimeDep, user: _OutputReader
) -> PlainTextResponse:
    """The command's output text, its chunks re-assembled in order (so far, while it runs)."""
    await _reachable(runtime, user, command_id)
    return PlainTextResponse(await runtime.commands.output(command_id))


@router.get(
    "/commands/{command_id}/file",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        409: {"description": "incomplete or mismatched"},
    },
)
async def command_file(command_id: _CommandIdPath, runtime: RuntimeDep, user: _Operator) -> Response:
    """The file a succeeded ``file.fetch`` brought back, checked against its size and sha256."""
    await _reachable(runtime, user, command_id)
    fetched = await runtime.commands.fetch_file(command_id)
    return Response(
        fetched.content,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": content_disposition(fetched.name),
            "X-Content-SHA256": fetched.sha256,
        },
    )


@router.post("/commands/{command_id}/cancel", status_code=202, response_model=CommandDetailPublic)
async def cancel_command(
    command_id: _CommandIdPath, runtime: RuntimeDep, user: _Operator
) -> CommandDetailPublic:
    """Ask the device to stop the command (a signed ``command.cancel``); it ends ``cancelled``."""
    await _reachable(runtime, user, command_id)
    return await _detail(runtime, await runtime.commands.cancel(user, command_id))

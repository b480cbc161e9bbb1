"""Commands: send one to a device (technician/admin), read it back with its replies."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from server.api.deps import CurrentUser, RuntimeDep, SessionDep, require_role
from server.api.devices import DeviceIdPath
from server.api.schemas import CommandCreate, CommandDetailPublic, CommandPublic, CommandReplyPublic, Page
from server.db.models import Command, Role
from server.db.types import utcnow
from server.services import commands
from server.services.users import Principal

__all__ = ["MAX_WAIT_S", "router"]

router = APIRouter(tags=["commands"])

MAX_WAIT_S = 300.0
"""The longest an HTTP request with ``wait: true`` is held open."""

Technician = Annotated[Principal, require_role(Role.TECHNICIAN)]


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
    command_id: Annotated[str, Path(max_length=64)], runtime: RuntimeDep, _user: CurrentUser
) -> CommandDetailPublic:
    return await _detail(runtime, await runtime.commands.get(command_id))


@router.get("/devices/{device_id}/commands", response_model=Page[CommandPublic])
async def list_device_commands(
    *,
    device_id: DeviceIdPath,
    session: SessionDep,
    _user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[CommandPublic]:
    rows, total = await commands.list_device_commands(session, device_id, limit=limit, offset=offset)
    return Page(
        items=[CommandPublic.model_validate(row) for row in rows], total=total, limit=limit, offset=offset
    )

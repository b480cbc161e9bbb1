"""``service.status`` / ``service.restart`` for the services the owner allow-listed
(``policy.services``), through a small :class:`ServiceManager` interface.

The default manager drives systemd with ``systemctl`` as an argv list (never a shell, the unit
name validated by the settings and checked against the allow-list). An equipment plugin may
offer its own (``service_manager()``), e.g. for a controller that is not a systemd unit.
``service.restart`` is disruptive: only an exact policy entry enables it, and only inside the
maintenance windows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from agent.errors import ActionArgumentError, ActionError
from agent.plugin import ActionContext, ActionResult, ActionSpec

__all__ = ["ServiceManager", "SystemdManager", "service_actions"]


class ServiceManager(Protocol):
    async def status(self, name: str) -> dict[str, Any]:
        """At least ``active`` (bool) and ``state`` (text); anything else is shown as is."""
        ...

    async def restart(self, name: str) -> str:
        """Restart ``name``; return a short message. Raise ActionError when it failed."""
        ...


_SHOW = ("LoadState", "ActiveState", "SubState", "MainPID", "ActiveEnterTimestamp", "Description")


class SystemdManager:
    def __init__(self, systemctl: str = "systemctl", *, timeout: float = 20.0) -> None:
        self.systemctl = systemctl
        self.timeout = timeout

    async def _run(self, *argv: str) -> tuple[int, str, str]:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.systemctl,
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise ActionError(f"cannot run {self.systemctl}: {exc.strerror or exc}") from exc
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await proc.communicate()
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def status(self, name: str) -> dict[str, Any]:
        code, out, err = await self._run("show", "--no-pager", f"--property={','.join(_SHOW)}", "--", name)
        if code != 0:
            raise ActionError(f"systemctl show {name} failed: {err.strip() or f'exit status {code}'}")
        props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return {
            "active": props.get("ActiveState") == "active",
            "state": f"{props.get('ActiveState', '?')} ({props.get('SubState', '?')})",
            "load": props.get("LoadState", ""),
            "main_pid": int(props.get("MainPID", "0") or 0),
            "since": props.get("ActiveEnterTimestamp", ""),
            "description": props.get("Description", ""),
        }

    async def restart(self, name: str) -> str:
        code, _, err = await self._run("restart", "--no-ask-password", "--", name)
        if code != 0:
            raise ActionError(
                f"systemctl restart {name} failed: {err.strip() or f'exit status {code}'} "
                "(the agent's user needs the right to restart this unit, e.g. a polkit rule)"
            )
        return f"{name} restarted"


def service_actions(allowed: Sequence[str], manager: ServiceManager) -> list[ActionSpec]:
    allowed = list(allowed)

    def checked(args: Mapping[str, Any]) -> str:
        name = str(args["name"])
        if not allowed:
            raise ActionArgumentError("no services are allowed on this device (policy.services is empty)")
        if name not in allowed:
            raise ActionArgumentError(f"service {name!r} is not in policy.services ({', '.join(allowed)})")
        return name

    async def status(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        name = checked(args)
        info = await manager.status(name)
        return ActionResult(
            ok=bool(info.get("active")),
            output=f"{name}: {info.get('state', '?')}",
            data={"name": name, **info},
        )

    async def restart(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        name = checked(args)
        await ctx.progress(0.1, f"restarting {name}")
        message = await manager.restart(name)
        info = await manager.status(name)
        ok = bool(info.get("active"))
        return ActionResult(
            ok=ok,
            output=f"{message}; now {info.get('state', '?')}",
            data={"name": name, **info},
        )

    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 255}},
        "required": ["name"],
        "additionalProperties": False,
    }
    return [
        ActionSpec(
            "service.status",
            status,
            "State of an allow-listed service (policy.services).",
            timeout=25.0,
            args_schema=schema,
        ),
        ActionSpec(
            "service.restart",
            restart,
            "Restart an allow-listed service (policy.services).",
            disruptive=True,
            timeout=60.0,
            args_schema=schema,
        ),
    ]

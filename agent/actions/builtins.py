"""Built-in diagnostics: ``ping``, ``metrics.snapshot``, ``logs.tail``, ``agent.info``.

All read-only. ``logs.tail`` is limited to ``policy.log_paths``. There is no shell action,
and there never will be one among the built-ins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from agent.actions.logs import LogAccess
from agent.plugin import ActionContext, ActionResult, ActionSpec
from protocol import format_ts

__all__ = ["BUILTIN_ACTION_NAMES", "builtin_actions"]

BUILTIN_ACTION_NAMES = ("ping", "metrics.snapshot", "logs.tail", "agent.info")


def builtin_actions(
    *,
    metrics: Callable[[], Awaitable[Mapping[str, float]]],
    info: Callable[[], Mapping[str, Any]],
    logs: LogAccess,
) -> list[ActionSpec]:
    """The built-in action specs, bound to the runtime's metrics, self-description and log policy."""

    async def ping(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        return ActionResult(ok=True, output="pong", data={"device_time": format_ts(ctx.now())})

    async def snapshot(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        values = dict(sorted((await metrics()).items()))
        text = "\n".join(f"{name} {value:g}" for name, value in values.items())
        return ActionResult(ok=True, output=text, data={"metrics": values})

    async def tail(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        result = await asyncio.to_thread(logs.tail, str(args["path"]), int(args.get("lines", 100)))
        return ActionResult(ok=True, output=result.text, data=result.data())

    async def agent_info(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        data = dict(info())
        text = "\n".join(f"{key}: {value}" for key, value in data.items())
        return ActionResult(ok=True, output=text, data=data)

    no_args: Mapping[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
    return [
        ActionSpec("ping", ping, "Answer pong with the device's clock.", timeout=5.0, args_schema=no_args),
        ActionSpec(
            "metrics.snapshot",
            snapshot,
            "Every current metric (system and equipment).",
            timeout=15.0,
            args_schema=no_args,
        ),
        ActionSpec(
            "logs.tail",
            tail,
            "Last lines of an allow-listed log file.",
            timeout=15.0,
            args_schema={
                "type": "object",
                "properties": {
                    "path": {"type": "string", "maxLength": 4096},
                    "lines": {"type": "integer", "minimum": 1},
                },
                "required": ["path"],
                "additionalProperties": False,
            },
        ),
        ActionSpec(
            "agent.info",
            agent_info,
            "Agent version, plugins, actions, outbox depth, uptime.",
            timeout=5.0,
            args_schema=no_args,
        ),
    ]

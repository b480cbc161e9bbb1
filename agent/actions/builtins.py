"""Built-in actions: the four basic diagnostics (``ping``, ``metrics.snapshot``, ``logs.tail``,
``agent.info``) and, with :func:`device_actions`, ``network.check``, ``disk.usage``,
``service.status`` / ``service.restart``, ``file.fetch``, ``config.get`` / ``config.set`` /
``config.undo`` and ``selftest`` — each limited by its own allow-list in the owner's policy.

There is no shell action, and there never will be one among the built-ins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.actions.disk import disk_usage_action
from agent.actions.files import file_fetch_action
from agent.actions.logs import AllowedPaths, LogAccess
from agent.actions.network import network_check_action
from agent.actions.selftest import selftest_action
from agent.actions.services import ServiceManager, SystemdManager, service_actions
from agent.actions.settings_file import ConfigFile, config_actions
from agent.config import PolicySettings
from agent.plugin import ActionContext, ActionResult, ActionSpec, EquipmentPlugin
from protocol import format_ts

__all__ = ["BUILTIN_ACTION_NAMES", "builtin_actions", "device_actions"]

BUILTIN_ACTION_NAMES = (
    "ping",
    "metrics.snapshot",
    "logs.tail",
    "agent.info",
    "network.check",
    "disk.usage",
    "service.status",
    "service.restart",
    "file.fetch",
    "config.get",
    "config.set",
    "config.undo",
    "selftest",
)


def device_actions(
    policy: PolicySettings,
    *,
    data_dir: Path,
    plugins: Sequence[EquipmentPlugin] = (),
    service_manager: ServiceManager | None = None,
) -> list[ActionSpec]:
    """The built-ins beyond the basic four, bound to the owner's allow-lists."""
    logs = AllowedPaths(policy.log_paths, what="log paths", setting="policy.log_paths")
    fetch = AllowedPaths(policy.fetch_paths, what="fetch paths", setting="policy.fetch_paths")
    config = ConfigFile(policy.config_file, policy.config_keys, Path(data_dir) / "config-journal.jsonl")
    return [
        network_check_action(policy.network_hosts),
        disk_usage_action([logs, fetch]),
        *service_actions(policy.services, service_manager or SystemdManager()),
        file_fetch_action(fetch, max_bytes=policy.max_fetch_bytes),
        *config_actions(config),
        selftest_action(plugins),
    ]


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

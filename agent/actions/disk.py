"""``disk.usage``: free space per mount point (psutil), or for one allow-listed path."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import psutil

from agent.actions.logs import AllowedPaths
from agent.errors import ActionArgumentError
from agent.plugin import ActionContext, ActionResult, ActionSpec

__all__ = ["disk_usage_action"]


def _usage(mountpoint: str, device: str = "", fstype: str = "") -> dict[str, Any]:
    usage = psutil.disk_usage(mountpoint)
    return {
        "mountpoint": mountpoint,
        "device": device,
        "fstype": fstype,
        "total": usage.total,
        "used": usage.used,
        "free": usage.free,
        "percent": usage.percent,
    }


def _collect(path: str | None, allowed: list[AllowedPaths]) -> list[dict[str, Any]]:
    partitions = psutil.disk_partitions(all=False)
    if path is None:
        out = []
        for part in partitions:
            try:
                out.append(_usage(part.mountpoint, part.device, part.fstype))
            except OSError:
                continue  # e.g. a mount we may not stat
        return out
    mounts = {p.mountpoint: p for p in partitions}
    if path in mounts:
        part = mounts[path]
        return [_usage(part.mountpoint, part.device, part.fstype)]
    problems = []
    for paths in allowed:
        try:
            target = paths.check(path)
        except ActionArgumentError as exc:
            problems.append(str(exc))
            continue
        return [_usage(str(target))]
    raise ActionArgumentError(
        f"path {path!r} is neither a mount point nor inside an allowed path: " + "; ".join(problems)
    )


def disk_usage_action(allowed: list[AllowedPaths]) -> ActionSpec:
    """``allowed``: the path lists a technician may already read (log and fetch paths)."""

    async def handler(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        path = args.get("path")
        rows = await asyncio.to_thread(_collect, None if path is None else str(path), allowed)
        lines = [
            f"{r['mountpoint']}: {r['percent']:.1f} % used, {r['free'] / 2**30:.2f} GiB free "
            f"of {r['total'] / 2**30:.2f} GiB"
            for r in rows
        ]
        return ActionResult(ok=True, output="\n".join(lines), data={"mounts": rows})

    return ActionSpec(
        "disk.usage",
        handler,
        "Disk space per mount point, or for one mount point or allow-listed path.",
        timeout=15.0,
        args_schema={
            "type": "object",
            "properties": {"path": {"type": "string", "maxLength": 4096}},
            "additionalProperties": False,
        },
    )

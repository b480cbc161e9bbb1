"""``network.check``: can this device resolve and reach the hosts it depends on?

Only ``policy.network_hosts`` (``host:port``) are tested: a technician cannot turn the device
into a port scanner. Per host: the resolved addresses, the time to resolve and to open a TCP
connection (closed again at once, nothing is sent), or the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

from agent.errors import ActionArgumentError
from agent.plugin import ActionContext, ActionResult, ActionSpec

__all__ = ["network_check_action", "split_host_port"]


def split_host_port(entry: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` → (host, port); the entry was validated by the settings."""
    host, _, port = entry.rpartition(":")
    return host.strip("[]"), int(port)


async def _check(target: str, limit: float) -> dict[str, Any]:
    host, port = split_host_port(target)
    loop = asyncio.get_running_loop()
    result: dict[str, Any] = {"target": target, "host": host, "port": port, "addresses": [], "ok": False}
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        result["error"] = f"DNS: {exc or 'timed out'}"
        return result
    result["resolve_ms"] = round((time.perf_counter() - started) * 1000, 3)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    result["addresses"] = addresses
    errors = []
    for address in addresses:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limit):
                _, writer = await asyncio.open_connection(address, port)
        except (OSError, TimeoutError) as exc:
            errors.append(
                f"{address}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc or 'timed out'}"
            )
            continue
        result["connect_ms"] = round((time.perf_counter() - started) * 1000, 3)
        result["connected_to"] = address
        result["ok"] = True
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return result
    result["error"] = "TCP: " + "; ".join(errors)
    return result


def network_check_action(allowed: Sequence[str]) -> ActionSpec:
    allowed = list(allowed)

    async def handler(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        wanted = list(args.get("hosts") or allowed)
        if not allowed:
            raise ActionArgumentError("no hosts to check on this device (policy.network_hosts is empty)")
        refused = [h for h in wanted if not isinstance(h, str) or h not in allowed]
        if refused:
            raise ActionArgumentError(
                f"not in policy.network_hosts: {', '.join(map(str, refused))} (allowed: {', '.join(allowed)})"
            )
        limit = float(args.get("timeout", 3.0))
        results = await asyncio.gather(*(_check(h, limit) for h in wanted))
        lines = [
            f"{r['target']}: ok, {r['connect_ms']:.1f} ms ({r['connected_to']})"
            if r["ok"]
            else f"{r['target']}: FAILED, {r['error']}"
            for r in results
        ]
        return ActionResult(
            ok=all(r["ok"] for r in results), output="\n".join(lines), data={"hosts": results}
        )

    return ActionSpec(
        "network.check",
        handler,
        "DNS resolution and TCP reachability of the allow-listed hosts (policy.network_hosts).",
        timeout=30.0,
        args_schema={
            "type": "object",
            "properties": {
                "hosts": {"type": "array", "items": {"type": "string"}, "maxItems": 32},
                "timeout": {"type": "number", "minimum": 0.1, "maximum": 10},
            },
            "additionalProperties": False,
        },
    )

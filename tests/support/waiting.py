"""Waiting for a condition that another task or process makes true, with a deadline.

    await eventually(lambda: agent.outbox_depth() == 0, what="outbox drained")
    body = await eventually(fetch_page, timeout=30)       # async checks too; returns the value

Polling is for state that lives elsewhere (a database written by another process, a broker);
within one process, prefer awaiting the event itself.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["eventually"]

T = TypeVar("T")


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str | None = None,
) -> T:
    """Call ``check`` (sync or async) until it returns something truthy; return that value.

    Raises AssertionError naming ``what`` and the last value seen once ``timeout`` seconds
    have passed — also when a single call of ``check`` hangs.
    """
    last: object = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = check()
                value: T = await result if inspect.isawaitable(result) else result  # type: ignore[assignment]
                last = value
                if value:
                    return value
                await asyncio.sleep(interval)
    except TimeoutError:
        label = what or getattr(check, "__qualname__", repr(check))
        raise AssertionError(f"not true after {timeout:g}s: {label} (last value: {last!r})") from None

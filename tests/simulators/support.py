"""Fakes shared by the simulator tests: an event sink that records, a clock that only moves
when slept on, an action context; and the statistical tolerance the fault-rate tests use."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from protocol import EquipmentState, Severity

__all__ = ["T0", "FakeClock", "FakeContext", "FakeSink", "within"]

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


@dataclass
class FakeSink:
    events: list[dict[str, Any]] = field(default_factory=list)
    states: list[tuple[EquipmentState, str]] = field(default_factory=list)

    def emit_event(
        self,
        event: str,
        *,
        code: str | None = None,
        severity: Severity = Severity.INFO,
        detail: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> None:
        self.events.append(
            {"event": event, "code": code, "severity": severity, "detail": detail, "data": dict(data or {})}
        )

    def set_state(self, state: EquipmentState, reason: str = "") -> None:
        self.states.append((state, reason))

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.current = now
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.current += timedelta(seconds=seconds)
        await asyncio.sleep(0)


@dataclass
class FakeContext:
    clock: FakeClock
    device_id: str = "sim-printer-test"
    command_id: str = "cmd-00000001"
    issuer: str = "tina"
    session_id: str | None = None
    progress_calls: list[tuple[float, str]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def now(self) -> datetime:
        return self.clock.now()

    async def progress(self, fraction: float, message: str = "") -> None:
        self.progress_calls.append((fraction, message))

    async def output(self, text: str) -> None:
        self.outputs.append(text)


def within(observed: float, expected: float, sd: float) -> bool:
    """Within five standard deviations. The RNG is seeded, so the outcome is fixed (no flakes);
    a model whose rate is wrong by a factor (half, double) lands far outside."""
    return abs(observed - expected) <= 5 * sd

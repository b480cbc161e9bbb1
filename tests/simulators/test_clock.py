"""The scaled clock of simulated equipment."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from simulators.clock import ScaledClock


async def test_scaled_clock_runs_faster_and_sleeps_shorter() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = ScaledClock(1000.0, start=start)
    began = time.monotonic()
    await clock.sleep(50.0)  # 50 simulated seconds: 0.05 s of real time
    real = time.monotonic() - began
    assert real < 1.0
    assert clock.now() - start >= timedelta(seconds=50)


def test_scaled_clock_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="speed"):
        ScaledClock(0)
    with pytest.raises(ValueError, match="timezone"):
        ScaledClock(2, start=datetime(2026, 1, 1))

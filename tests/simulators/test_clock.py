"""The clocks of simulated equipment: scaled (real time x speed) and stepped (reproducible runs)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from server import clock as server_clock
from server.db.types import utcnow
from simulators.clock import EQUIPMENT, PEOPLE, ScaledClock, SteppedClock, StepTimeout
from tests.simulators.support import T0


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


# -- the stepped clock of reproducible runs ------------------------------------------------------


async def test_stepped_time_moves_only_when_advanced() -> None:
    clock = SteppedClock(T0)
    woke: list[datetime] = []

    async def sleeper() -> None:
        await clock.sleep(30.0)
        woke.append(clock.now())

    task = asyncio.create_task(sleeper(), name="sleeper")
    await clock.settle([task])
    await asyncio.sleep(0.05)  # real time passes: simulated time does not
    assert clock.now() == T0
    assert not woke
    assert clock.next_due() == T0 + timedelta(seconds=30)
    clock.advance_to(T0 + timedelta(seconds=29))
    assert await clock.wake_due(EQUIPMENT) == 0  # not due yet
    clock.advance_to(T0 + timedelta(seconds=30))
    assert await clock.wake_due(EQUIPMENT) == 1
    assert task.done()
    assert woke == [T0 + timedelta(seconds=30)]
    assert clock.next_due() is None
    await clock.sleep(0)  # no time to wait: returns at once
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance_to(T0)


async def test_sleepers_due_together_wake_in_name_order_whatever_order_they_slept_in() -> None:
    orders = []
    for names in (["b", "a", "c"], ["c", "b", "a"]):
        clock = SteppedClock(T0)
        log: list[str] = []

        async def step(clock: SteppedClock = clock, log: list[str] = log) -> None:
            for _ in range(3):
                await clock.sleep(60.0, phase=PEOPLE)
                log.append(asyncio.current_task().get_name())  # type: ignore[union-attr]

        tasks = [asyncio.create_task(step(), name=n) for n in names]
        await clock.settle(tasks)
        while (due := clock.next_due()) is not None:
            clock.advance_to(due)
            await clock.wake_due(PEOPLE)
        assert all(t.done() for t in tasks)
        assert clock.now() == T0 + timedelta(minutes=3)
        orders.append(log)
    assert orders[0] == orders[1] == ["a", "b", "c"] * 3


async def test_one_at_a_time_a_woken_task_finishes_its_step_before_the_next_wakes() -> None:
    clock = SteppedClock(T0)
    log: list[str] = []

    async def person(name: str) -> None:
        await clock.sleep(10.0, phase=PEOPLE)
        log.append(f"{name} starts")
        await asyncio.sleep(0.02)  # real work (an API call): the others must wait for it
        log.append(f"{name} done")

    tasks = [asyncio.create_task(person(n), name=n) for n in ("x", "y")]
    await clock.settle(tasks)
    clock.advance_to(T0 + timedelta(seconds=10))
    assert await clock.wake_due(PEOPLE) == 2
    assert log == ["x starts", "x done", "y starts", "y done"]


async def test_phases_are_woken_separately() -> None:
    clock = SteppedClock(T0)
    tasks = [
        asyncio.create_task(clock.sleep(5.0, phase=EQUIPMENT), name="equipment"),
        asyncio.create_task(clock.sleep(5.0, phase=PEOPLE), name="person"),
    ]
    await clock.settle(tasks)
    assert clock.sleepers(EQUIPMENT) == clock.sleepers(PEOPLE) == 1
    clock.advance_to(T0 + timedelta(seconds=5))
    assert await clock.wake_due(EQUIPMENT, one_at_a_time=False) == 1
    await asyncio.sleep(0)
    assert tasks[0].done()
    assert not tasks[1].done()
    assert await clock.wake_due(PEOPLE) == 1
    await asyncio.sleep(0)
    assert tasks[1].done()
    with pytest.raises(ValueError, match="phase"):
        await clock.sleep(1.0, phase=7)


async def test_a_cancelled_sleeper_is_forgotten() -> None:
    clock = SteppedClock(T0)
    task = asyncio.create_task(clock.sleep(5.0), name="gone")
    await clock.settle([task])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.next_due() is None
    assert clock.sleepers() == 0


async def test_a_task_that_waits_on_something_else_is_named_in_the_timeout() -> None:
    clock = SteppedClock(T0, settle_limit=0.1)
    never = asyncio.Event()

    async def stuck() -> None:
        await clock.sleep(1.0, phase=PEOPLE)
        await never.wait()  # neither the clock nor real work that ends

    task = asyncio.create_task(stuck(), name="stuck-person")
    await clock.settle([task])
    clock.advance_to(T0 + timedelta(seconds=1))
    with pytest.raises(StepTimeout, match="stuck-person"):
        await clock.wake_due(PEOPLE)
    task.cancel()
    with pytest.raises(ValueError, match="timezone"):
        SteppedClock(datetime(2026, 1, 1))


def test_the_server_clock_can_follow_a_stepped_clock() -> None:
    clock = SteppedClock(T0)
    try:
        server_clock.configure(clock)
        assert utcnow() == T0
        clock.advance_to(T0 + timedelta(hours=1))
        assert utcnow() == T0 + timedelta(hours=1)
    finally:
        server_clock.configure(None)
    assert abs((utcnow() - datetime.now(UTC)).total_seconds()) < 5

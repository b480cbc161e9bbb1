"""One device's garbage must not bury the log (server/ingest/log_throttle.py): counted exactly,
logged once a minute per device with what was held back."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.ingest.log_throttle import LogThrottle
from tests.server import factory as f
from tests.server.test_ingest import run_consumer


def test_one_line_per_key_per_interval_with_the_count_held_back() -> None:
    now = [0.0]
    throttle = LogThrottle(60.0, clock=lambda: now[0])
    assert throttle.allow("a") == 0
    assert [throttle.allow("a") for _ in range(5)] == [None] * 5
    assert throttle.allow("b") == 0  # other devices are not held back by a's flood
    now[0] = 61.0
    assert throttle.allow("a") == 5


def test_the_key_table_is_bounded() -> None:
    now = [0.0]
    throttle = LogThrottle(1.0, max_keys=100, clock=lambda: now[0])
    for n in range(100):
        throttle.allow(f"d{n}")
    now[0] = 5.0
    throttle.allow("new")
    assert len(throttle._last) == 1  # the bound is the point of this test


async def test_a_malformed_flood_is_counted_exactly_and_logged_once_per_device(
    sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="server.ingest.consumer")
    flood = [f.inbound(topic="fc/v1/d/dev-flood/up/event", payload=b"not json") for _ in range(500)]
    other = [f.inbound(topic="fc/v1/d/dev-other/up/event", payload=b"{")]
    good = [f.inbound(f.telemetry("dev-other", 1))]
    stats, _ = await run_consumer(sessions, flood + other + good)
    assert stats.malformed == {"not_json": 501}
    assert stats.stored == 1
    lines = [r.getMessage() for r in caplog.records if "dropped malformed" in r.getMessage()]
    assert len([line for line in lines if "dev-flood" in line]) == 1
    assert len([line for line in lines if "dev-other" in line]) == 1

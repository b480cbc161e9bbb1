"""Figures an operations manager believes (issue 15, item 8), in real headless Chromium: one
duration rule on tiles and charts (never "0.0 h" beside "0.04 h"), a weekly total drawn as bars,
a one-week period's axis spanning that week (not two years), and the as-of time shown, with the
data dated after it named and one click away instead of silently left out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from server.db.models import Device, Incident, StateInterval
from server.db.types import utcnow
from server.runtime import Runtime
from server.web.rendering import duration
from tests.web.seed import Seeded
from tests.web.test_browser import CHROMIUM, async_api, browser, live, screenshot, shots, signed_in

__all__ = ["browser", "live", "shots"]  # the fixtures, imported from the browser tests

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]
assert async_api  # playwright present (importorskip in test_browser)

QUIET_WEEK = {"from": "2026-06-01", "to": "2026-06-08"}
"""A week after the generated history: only what a test adds is in it."""
SHORT_DOWN_S = 150.0
"""2.5 minutes of downtime: "0.0 h" on the old tile, "0.04 h" on the old chart."""


async def _short_outage(runtime: Runtime, device_id: str) -> None:
    """The device runs through the quiet week but for 150 s down on its Wednesday; the
    generated history's intervals still open end before that week."""
    week = datetime(2026, 6, 1, tzinfo=UTC)
    down = week + timedelta(days=2, hours=10)
    async with runtime.sessions() as session:
        for still_open in await session.scalars(select(StateInterval).where(StateInterval.end.is_(None))):
            still_open.end = max(still_open.start, week - timedelta(days=7))
        for state, start, end in (
            ("running", week, down),
            ("down", down, down + timedelta(seconds=SHORT_DOWN_S)),
            ("running", down + timedelta(seconds=SHORT_DOWN_S), week + timedelta(days=7)),
        ):
            session.add(StateInterval(device_id=device_id, state=state, start=start, end=end))
        await session.commit()


async def test_one_duration_rule_on_tiles_and_charts(
    live: tuple[str, Seeded, Runtime], browser: object, shots: list[Path]
) -> None:
    base_url, seeded, runtime = live
    await _short_outage(runtime, seeded.devices[seeded.customers[0]][0])
    page = await signed_in(browser, base_url, "olga")
    await page.goto(f"{base_url}/?from={QUIET_WEEK['from']}&to={QUIET_WEEK['to']}")  # type: ignore[attr-defined]
    tile = page.locator('li.tile[data-kpi="downtime_s"] .value')  # type: ignore[attr-defined]
    assert await tile.inner_text() == "2.5 min"
    await page.wait_for_selector("#charts[data-drawn=true]")  # type: ignore[attr-defined]
    chart = page.locator("#chart-downtime")  # type: ignore[attr-defined]
    assert json.loads(await chart.get_attribute("data-labels")) == ["2.5 min"]  # the week's bar
    assert await page.locator("#top-models .bar-value").first.inner_text() == "2.5 min"  # type: ignore[attr-defined]
    # The page's formatter is the server's rule, value for value.
    samples = [
        0,
        0.4,
        12,
        59.4,
        60,
        144,
        150,
        599,
        3599,
        3600,
        4500,
        47.9 * 3600,
        2 * 86400,
        1234 * 86400,
        -150,
    ]
    shown = await page.evaluate("(xs) => xs.map((x) => window.fleetcareFormat.duration(x))", samples)  # type: ignore[attr-defined]
    assert shown == [duration(x) for x in samples]
    await screenshot(page, shots, "dashboard-short-outage", full=True)


async def test_a_weekly_total_is_a_bar_and_one_week_spans_its_week(
    live: tuple[str, Seeded, Runtime], browser: object
) -> None:
    base_url, seeded, runtime = live
    await _short_outage(runtime, seeded.devices[seeded.customers[0]][0])
    page = await signed_in(browser, base_url, "olga")
    await page.goto(f"{base_url}/?from={QUIET_WEEK['from']}&to={QUIET_WEEK['to']}")  # type: ignore[attr-defined]
    await page.wait_for_selector("#charts[data-drawn=true]")  # type: ignore[attr-defined]
    start = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
    end = datetime(2026, 6, 8, tzinfo=UTC).timestamp()
    for chart_id, style in (
        ("chart-downtime", "bars"),
        ("chart-channels", "bars"),
        ("chart-selfres", "steps"),
    ):
        chart = page.locator(f"#{chart_id}")  # type: ignore[attr-defined]
        assert await chart.get_attribute("data-style") == style, chart_id
        lo, hi = (
            float(await chart.get_attribute("data-x-min")),
            float(await chart.get_attribute("data-x-max")),
        )
        assert start - 86400 <= lo <= start, chart_id  # the period, padded by less than a day
        assert end <= hi <= end + 86400, chart_id


async def test_the_as_of_is_shown_and_later_data_is_named_not_dropped_silently(
    live: tuple[str, Seeded, Runtime], browser: object, shots: list[Path]
) -> None:
    base_url, seeded, runtime = live
    device_id = seeded.devices[seeded.customers[0]][1]
    ahead = utcnow() + timedelta(days=10)  # a simulated fleet's clock ahead of the server's
    async with runtime.sessions() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        session.add(
            Incident(
                device_id=device_id,
                kind="fault",
                severity="error",
                effect="down",
                t_fault=ahead,
                t_detect=ahead,
            )
        )
        session.add(StateInterval(device_id=device_id, state="down", start=ahead, end=None))
        await session.commit()
    page = await signed_in(browser, base_url, "olga")
    await page.goto(f"{base_url}/")  # type: ignore[attr-defined]
    as_of = datetime.fromisoformat(await page.locator("#as-of").get_attribute("datetime"))  # type: ignore[attr-defined]
    assert abs((as_of - utcnow()).total_seconds()) < 60  # now, by default
    later = page.locator("#later-data")  # type: ignore[attr-defined]
    assert await later.get_attribute("data-incidents") == "1"
    assert await later.get_attribute("data-intervals") == "1"
    await screenshot(page, shots, "dashboard-as-of")
    await later.get_by_role("link").click()
    await page.wait_for_selector("#as-of-future")  # type: ignore[attr-defined]
    moved = datetime.fromisoformat(await page.locator("#as-of").get_attribute("datetime"))  # type: ignore[attr-defined]
    assert ahead <= moved <= ahead + timedelta(seconds=2)
    assert await page.locator("#later-data").count() == 0  # type: ignore[attr-defined]
    tile = page.locator('li.tile[data-kpi="downtime_s"]')  # type: ignore[attr-defined]
    assert float(await tile.get_attribute("data-value")) > 0  # the future outage is counted now


async def test_a_bad_as_of_names_the_field(live: tuple[str, Seeded, Runtime], browser: object) -> None:
    base_url, _, _ = live
    page = await signed_in(browser, base_url, "olga")
    answer = await page.goto(f"{base_url}/?as_of=yesterday")  # type: ignore[attr-defined]
    assert answer.status == 422
    assert "as_of" in await page.locator("main").inner_text()  # type: ignore[attr-defined]

"""The incident queue in real headless Chromium (issue 15, item 2): a technician opens it from
the navigation, narrows it to the overdue P1, selects the page with one click and acknowledges
it in bulk; the queue comes back with the same filters and what was done."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from server.db.models import Incident
from server.runtime import Runtime
from tests.web.seed import Seeded
from tests.web.test_browser import CHROMIUM, async_api, browser, live, screenshot, shots, signed_in
from tests.web.test_queue import queued_incident

__all__ = ["browser", "live", "shots"]  # the fixtures, imported from the browser tests

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]
assert async_api  # playwright present (importorskip in test_browser)


async def test_a_technician_filters_the_queue_and_acknowledges_in_bulk(
    live: tuple[str, Seeded, Runtime], browser: object, shots: list[Path]
) -> None:
    base_url, seeded, runtime = live
    mine = seeded.devices[seeded.customers[0]]
    late = [await queued_incident(runtime, d, priority=1, age=timedelta(hours=3)) for d in mine[:2]]
    calm = await queued_incident(runtime, mine[2], priority=4, age=timedelta(minutes=2))
    page = await signed_in(browser, base_url, "tina")
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Incidents").click()  # type: ignore[attr-defined]
    await page.wait_for_url(f"{base_url}/incidents")  # type: ignore[attr-defined]
    await page.get_by_label("Fault code").fill("Q-TEST")  # type: ignore[attr-defined]
    await page.get_by_label("Priority").select_option("1")  # type: ignore[attr-defined]
    await page.get_by_role("button", name="Filter").click()  # type: ignore[attr-defined]
    await page.wait_for_url("**/incidents?*priority=1*")  # type: ignore[attr-defined]
    rows = page.locator("tr[data-incident]")  # type: ignore[attr-defined]
    assert sorted(int(i) for i in await rows.evaluate_all("rs => rs.map(r => r.dataset.incident)")) == late
    assert await page.locator("tr.breached").count() == 2  # type: ignore[attr-defined]
    await screenshot(page, shots, "incident-queue", full=True)
    await page.get_by_label("Select every incident on this page").check()  # type: ignore[attr-defined]
    assert await page.locator("input[data-select]:checked").count() == 2  # type: ignore[attr-defined]
    await page.get_by_role("button", name="Acknowledge selected").click()  # type: ignore[attr-defined]
    result = page.locator("#bulk-result")  # type: ignore[attr-defined]
    await result.wait_for()
    assert "Acknowledged: 2 incidents" in await result.inner_text()
    assert await page.get_by_label("Priority").input_value() == "1"  # type: ignore[attr-defined]
    async with runtime.sessions() as session:
        states = {i: (await session.get(Incident, i)).status for i in (*late, calm)}  # type: ignore[union-attr]
    assert states == {late[0]: "acknowledged", late[1]: "acknowledged", calm: "open"}

"""The console in real headless Chromium (Debian's ``chromium``, driven by Playwright): sign in,
the dashboard's tiles equal ``/api/v1/kpis`` for the same period, the fleet table filters
without a reload, a customer cannot see another customer's device. Screenshots of each page go
to a temp dir, and to ``$FLEETCARE_SCREENSHOTS`` (e.g. docs/screenshots) when set."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import V1, bearer, running_server, server_settings
from tests.web.seed import PASSWORD, PERIOD, Seeded, seed

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (scripts/system-deps.sh)"
    ),
]

async_api = pytest.importorskip("playwright.async_api", reason="needs playwright (the dev extra)")


@pytest.fixture
async def site(db_url: str) -> AsyncIterator[tuple[str, Seeded]]:
    if "postgres" in db_url:
        pytest.skip("the browser tests run on SQLite; the pages' SQL is covered on both by test_pages")
    async with running_server(server_settings(db_url, incidents={"enabled": False})) as (app, base_url):
        yield base_url, await seed(app.state.runtime)


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    async with async_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> list[Path]:
    """Where screenshots go: the test's temp dir, and $FLEETCARE_SCREENSHOTS when set."""
    dirs = [tmp_path]
    if os.environ.get("FLEETCARE_SCREENSHOTS"):
        dirs.append(Path(os.environ["FLEETCARE_SCREENSHOTS"]))
    for each in dirs:
        each.mkdir(parents=True, exist_ok=True)
    return dirs


async def screenshot(page: object, shots: list[Path], name: str) -> None:
    for each in shots:
        await page.screenshot(path=str(each / f"{name}.png"))  # type: ignore[attr-defined]


async def signed_in(browser: object, base_url: str, name: str) -> object:
    page = await browser.new_page(viewport={"width": 1280, "height": 860})  # type: ignore[attr-defined]
    await page.goto(f"{base_url}/login")
    await page.get_by_label("User name").fill(name)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base_url}/")
    return page


async def test_dashboard_matches_the_kpi_api(
    site: tuple[str, Seeded], browser: object, shots: list[Path]
) -> None:
    base_url, _ = site
    page = await signed_in(browser, base_url, "olga")
    await page.goto(f"{base_url}/?from={PERIOD['from']}&to={PERIOD['to']}")  # type: ignore[attr-defined]
    async with httpx.AsyncClient(base_url=base_url) as client:
        login = await client.post(f"{V1}/auth/login", json={"username": "olga", "password": PASSWORD})
        api = await client.get(f"{V1}/kpis", params=PERIOD, headers=bearer(login.json()["token"]))
    kpis = api.json()["rows"][0]["kpis"]
    assert kpis["incidents"] > 0
    for name in ("availability", "downtime_s", "mtrs_mean_s", "self_resolution_rate", "dispatches_avoided"):
        tile = page.locator(f'li.tile[data-kpi="{name}"]')  # type: ignore[attr-defined]
        raw = await tile.get_attribute("data-value")
        assert float(raw) == pytest.approx(kpis[name]), name
        assert kpis_definition_shown(await tile.get_attribute("title"))
    chart = page.locator("#chart-downtime canvas")  # type: ignore[attr-defined]
    await chart.first.wait_for()  # uPlot drew the weekly chart from the vendored file
    await screenshot(page, shots, "dashboard")


def kpis_definition_shown(title: str | None) -> bool:
    return bool(title and len(title) > 10)


async def test_fleet_filters_without_reload(
    site: tuple[str, Seeded], browser: object, shots: list[Path]
) -> None:
    base_url, seeded = site
    page = await signed_in(browser, base_url, "olga")
    await page.goto(f"{base_url}/fleet")  # type: ignore[attr-defined]
    total = page.locator("#fleet-total")  # type: ignore[attr-defined]
    assert await total.inner_text() == "40"
    await screenshot(page, shots, "fleet")
    one = seeded.devices[seeded.customers[1]][0]
    await page.evaluate("window.__same_page = true")  # type: ignore[attr-defined]
    await page.get_by_label("Search").fill(one)  # type: ignore[attr-defined]
    await page.wait_for_function("document.getElementById('fleet-total').textContent === '1'")  # type: ignore[attr-defined]
    assert await page.locator("tbody tr").first.get_attribute("data-device") == one  # type: ignore[attr-defined]
    assert await page.evaluate("window.__same_page === true")  # type: ignore[attr-defined]  # htmx: no reload
    assert one in page.url  # type: ignore[attr-defined]  # the filter is in the address (shareable)
    await page.get_by_role("link", name=one).click()  # type: ignore[attr-defined]
    await page.wait_for_url(f"{base_url}/devices/{one}")  # type: ignore[attr-defined]
    await screenshot(page, shots, "device")


async def test_customer_cannot_see_another_customers_device(
    site: tuple[str, Seeded], browser: object, shots: list[Path]
) -> None:
    base_url, seeded = site
    mine, other = (seeded.devices[c] for c in seeded.customers[:2])
    page = await signed_in(browser, base_url, "carl")
    answer = await page.goto(f"{base_url}/devices/{other[0]}")  # type: ignore[attr-defined]
    assert answer.status == 404
    await screenshot(page, shots, "not-found")
    await page.goto(f"{base_url}/fleet")  # type: ignore[attr-defined]
    rows = await page.locator("tbody tr[data-device]").evaluate_all(  # type: ignore[attr-defined]
        "rows => rows.map(r => r.dataset.device)"
    )
    assert set(rows) == set(mine)
    assert await page.get_by_role("link", name="Audit log").count() == 0  # type: ignore[attr-defined]

"""The console in real headless Chromium (Debian's ``chromium``, driven by Playwright): sign in,
the dashboard's tiles equal ``/api/v1/kpis`` for the same period, the fleet table filters
without a reload, a customer cannot see another customer's device, and a technician clears a
simulated printer's paper jam from the remote session console (real agent, real Mosquitto),
after which the dashboard's self-resolution rate moves; a technician sees similar past jams on
the incident, fetches the printer's log from the console and downloads it intact (sha256),
and an admin filters the audit log to that technician. Screenshots of each page — and what each
role sees — go to a temp dir, and to ``$FLEETCARE_SCREENSHOTS`` (e.g. docs/screenshots) when set."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from agent import AgentRuntime
from certs import PkiDir
from server import customers
from server.commands.policy import catalogue_of
from server.db.models import Customer, Device, Incident, TelemetrySample
from server.runtime import Runtime
from simulators.printer import PrinterPlugin
from tests.agent.support import device_settings
from tests.support.broker import MosquittoBroker, unique_device
from tests.support.server import V1, bearer, running_server, server_settings
from tests.support.waiting import eventually
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


async def screenshot(page: object, shots: list[Path], name: str, *, full: bool = False) -> None:
    for each in shots:
        await page.screenshot(path=str(each / f"{name}.png"), full_page=full)  # type: ignore[attr-defined]


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
    await page.wait_for_selector("#charts[data-drawn=true]")  # type: ignore[attr-defined]  # every chart loaded
    async with httpx.AsyncClient(base_url=base_url) as client:
        token = bearer(login.json()["token"])
        weekly = (await client.get(f"{V1}/kpis", params={**PERIOD, "group_by": "week"}, headers=token)).json()
        by_model = (
            await client.get(f"{V1}/kpis", params={**PERIOD, "group_by": "model"}, headers=token)
        ).json()
    totals = await page.locator("#chart-channels").get_attribute("data-totals")  # type: ignore[attr-defined]
    assert [int(t) for t in json.loads(totals)] == [row["kpis"]["resolved"] for row in weekly["rows"]]
    assert await page.locator("#chart-channels canvas").count() >= 1  # type: ignore[attr-defined]
    worst = max(by_model["rows"], key=lambda row: row["kpis"]["downtime_s"] or 0)
    first = page.locator("#top-models li").first  # type: ignore[attr-defined]
    assert await first.get_attribute("data-label") == worst["group"]["label"]
    assert await page.locator("#top-fault-codes li[data-label]").count() > 0  # type: ignore[attr-defined]
    await screenshot(page, shots, "dashboard", full=True)


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


TONER = "printer.toner.black.percent"


@pytest.fixture
async def live(db_url: str) -> AsyncIterator[tuple[str, Seeded, Runtime]]:
    """As ``site``, with the runtime (to add telemetry)."""
    if "postgres" in db_url:
        pytest.skip("the browser tests run on SQLite; the pages' SQL is covered on both by test_pages")
    async with running_server(server_settings(db_url, incidents={"enabled": False})) as (app, base_url):
        yield base_url, await seed(app.state.runtime), app.state.runtime


async def _wearing(runtime: Runtime, device_id: str, now: datetime) -> None:
    """Ten days of a toner falling and a drum wearing: charts, and forecasts with a date."""
    async with runtime.sessions() as session:
        for i in range(40):
            ts = now - timedelta(days=10) + timedelta(hours=6 * i)
            session.add(TelemetrySample(device_id=device_id, metric=TONER, ts=ts, value=90.0 - 1.2 * i))
            session.add(
                TelemetrySample(
                    device_id=device_id, metric="printer.drum.wear.percent", ts=ts, value=40.0 + 0.5 * i
                )
            )
        await session.commit()


async def test_customer_sees_only_their_equipment(
    live: tuple[str, Seeded, Runtime], browser: object, shots: list[Path]
) -> None:
    base_url, seeded, runtime = live
    mine, other = (seeded.devices[c] for c in seeded.customers[:2])
    await _wearing(runtime, mine[1], datetime.now(UTC))
    page: Any = await signed_in(browser, base_url, "carl")
    answer = await page.goto(f"{base_url}/devices/{other[0]}")
    assert answer.status == 404
    await screenshot(page, shots, "not-found")
    await page.goto(f"{base_url}/fleet")
    rows = await page.locator("tbody tr[data-device]").evaluate_all("rows => rows.map(r => r.dataset.device)")
    assert set(rows) == set(mine)
    assert await page.locator("#fleet-total").inner_text() == str(len(mine))
    async with runtime.sessions() as session:
        theirs = await session.get(Customer, seeded.customers[0])
    assert theirs is not None
    shown = await page.locator("tbody tr[data-device] td.customer").all_inner_texts()
    assert set(shown) == {theirs.name}
    assert await page.get_by_role("link", name="Audit log").count() == 0
    await screenshot(page, shots, "customer-fleet")
    await page.get_by_role("link", name=mine[1], exact=True).click()
    await page.wait_for_url(f"{base_url}/devices/{mine[1]}")
    await page.locator(".chart.telemetry canvas").first.wait_for()
    assert await page.locator(f'#forecasts tr[data-metric="{TONER}"]').get_attribute("data-eta")
    await screenshot(page, shots, "customer-device", full=True)


async def test_device_telemetry_zooms_and_resets_and_shows_forecasts(
    live: tuple[str, Seeded, Runtime], browser: object, shots: list[Path]
) -> None:
    base_url, seeded, runtime = live
    device_id = seeded.devices[seeded.customers[0]][0]
    now = datetime.now(UTC)
    await _wearing(runtime, device_id, now)
    page = await signed_in(browser, base_url, "olga")
    await page.goto(f"{base_url}/devices/{device_id}?days=30")  # type: ignore[attr-defined]
    chart = page.locator(f'.chart.telemetry[data-metric="{TONER}"]')  # type: ignore[attr-defined]
    await chart.locator("canvas").first.wait_for()
    assert await chart.get_attribute("data-points") == "40"
    full = (
        float(await chart.get_attribute("data-view-min")),
        float(await chart.get_attribute("data-view-max")),
    )
    over = chart.locator(".u-over")
    await over.scroll_into_view_if_needed()  # below the system profile: the mouse acts in the viewport
    box = await over.bounding_box()
    assert box is not None
    await page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)  # type: ignore[attr-defined]
    await page.mouse.down()  # type: ignore[attr-defined]
    await page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2, steps=5)  # type: ignore[attr-defined]
    await page.mouse.up()  # type: ignore[attr-defined]
    zoomed = (
        float(await chart.get_attribute("data-view-min")),
        float(await chart.get_attribute("data-view-max")),
    )
    assert full[0] < zoomed[0] < zoomed[1] < full[1]  # drag-to-zoom narrowed the time axis
    await screenshot(page, shots, "device-zoomed")
    reset = chart.locator("xpath=following-sibling::button[contains(@class, 'reset-zoom')]")
    await reset.click()
    restored = (
        float(await chart.get_attribute("data-view-min")),
        float(await chart.get_attribute("data-view-max")),
    )
    assert restored == pytest.approx(full)
    eta = await page.locator(f'#forecasts tr[data-metric="{TONER}"]').get_attribute("data-eta")  # type: ignore[attr-defined]
    assert eta
    assert datetime.fromisoformat(eta) > now
    await page.goto(f"{base_url}/devices/{device_id}?days=30")  # type: ignore[attr-defined]
    await page.locator(".chart.telemetry canvas").first.wait_for()  # type: ignore[attr-defined]
    await screenshot(page, shots, "device", full=True)


async def _focused(page: object) -> dict[str, Any]:
    """What has the keyboard focus: its label or text, and whether the focus is visible."""
    info: dict[str, Any] = await page.evaluate(  # type: ignore[attr-defined]
        """() => {
          const el = document.activeElement;
          const style = getComputedStyle(el);
          const r = el.getBoundingClientRect();
          const label = el.labels && el.labels.length ? el.labels[0].textContent.trim() : el.textContent.trim();
          return {tag: el.tagName.toLowerCase(), label: label, id: el.id,
                  outline: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2,
                  visible: r.width > 0 && r.height > 0 && r.bottom > 0 && r.right > 0
                           && r.top < innerHeight && r.left < innerWidth};
        }"""
    )
    return info


async def _tab(page: object, shift: bool = False) -> dict[str, Any]:
    await page.keyboard.press("Shift+Tab" if shift else "Tab")  # type: ignore[attr-defined]
    return await _focused(page)


async def test_keyboard_signs_in_and_filters_the_fleet_with_visible_focus(
    site: tuple[str, Seeded], browser: object
) -> None:
    base_url, seeded = site
    page = await browser.new_page(viewport={"width": 1280, "height": 860})  # type: ignore[attr-defined]
    await page.goto(f"{base_url}/login?next=/fleet")
    first = await _focused(page)
    assert first["id"] == "username"  # autofocus: ready to type
    back = await _tab(page, shift=True)
    assert back["label"] == "Skip to content"
    assert back["visible"]
    assert back["outline"]
    order = [await _tab(page) for _ in range(3)]
    assert [f["label"] for f in order] == ["User name", "Password", "Sign in"]
    assert all(f["visible"] and f["outline"] for f in order), order
    await page.keyboard.press("Shift+Tab")
    await page.keyboard.press("Shift+Tab")
    await page.keyboard.type("olga")
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{base_url}/fleet")

    seen = []
    for _ in range(20):  # skip link, the menu, sign-out, then the filters
        focus = await _tab(page)
        seen.append(focus)
        if focus["label"] == "Filter":
            break
    labels = [f["label"] for f in seen]
    assert labels[0] == "Skip to content"
    start = labels.index("Search")
    assert labels[start:] == ["Search", "Customer", "Site", "Model", "State", "Status", "Filter"]
    assert labels.index("Dashboard") < labels.index("Fleet") < labels.index("Sign out") < start
    assert all(f["visible"] and f["outline"] for f in seen), seen
    one = seeded.devices[seeded.customers[1]][0]
    for _ in range(len(labels) - start - 1):
        await page.keyboard.press("Shift+Tab")  # back to the search field
    assert (await _focused(page))["label"] == "Search"
    await page.keyboard.type(one)
    await page.wait_for_function("document.getElementById('fleet-total').textContent === '1'")
    assert (await _focused(page))["label"] == "Search"  # the table refreshed; the focus stayed


# -- the technician's remote session, with a real agent on a real broker ---------------------

INCIDENTS = {"fault_debounce": 0.3, "offline_grace": 5.0, "offline_flap_window": 1.0, "sweep_interval": 0.1}


@dataclass
class Jam:
    base_url: str
    runtime: Runtime
    device_id: str
    printer: PrinterPlugin
    log: Path  # a file the device's policy lets file.fetch read


def _printer_log(path: Path) -> Path:
    """A printer's service log of a few days (several file.fetch chunks), for the download."""
    start = datetime(2026, 11, 18, 6, 0, tzinfo=UTC)
    lines = []
    for i in range(900):
        ts = (start + timedelta(minutes=5 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        if i % 97 == 41:
            lines.append(f"{ts} WARN  feeder: paper jam at duplex unit (sensor S7), job {1800 + i} held")
        elif i % 97 == 43:
            lines.append(f"{ts} INFO  feeder: jam cleared, job {1798 + i} resumed")
        else:
            lines.append(
                f"{ts} INFO  engine: {12000 + 7 * i} pages, fuser {180 + i % 4} C, toner {92 - i // 40} %"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def printer_log() -> Iterator[Path]:
    """The printer's log, at a short device-like path (tmp_path's would fill the page)."""
    with tempfile.TemporaryDirectory(prefix="simprint-") as spool:
        yield _printer_log(Path(spool) / "log" / "printer.log")


@pytest.fixture
async def jammed(
    tmp_path: Path, db_url: str, pki: PkiDir, broker: MosquittoBroker, printer_log: Path
) -> AsyncIterator[Jam]:
    """The server (uvicorn, MQTT connected, incidents on) with the seeded history, and a
    simulated printer on its agent whose catalogue has reached the server; its policy lets
    ``file.fetch`` read its log."""
    if "postgres" in db_url:
        pytest.skip("the browser tests run on SQLite; the pages' SQL is covered on both by test_pages")
    settings = server_settings(
        db_url, pki=pki, broker=broker, command_sweep_interval=0.1, incidents=INCIDENTS
    )
    device_id = unique_device(pki, "jam")
    printer = PrinterPlugin(device_id, {"jam_rate_per_hour": 0, "seed": 1})
    agent_settings = device_settings(
        tmp_path,
        pki,
        broker,
        device_id,
        telemetry_interval=0.5,
        policy={
            "allowed_actions": ["ping", "selftest", "printer.status", "printer.clear_jam", "file.fetch"],
            "consent_actions": [],
            "forbidden_actions": ["logs.tail"],
            "fetch_paths": [str(printer_log.parent)],
        },
    )
    async with running_server(settings) as (app, base_url):
        runtime: Runtime = app.state.runtime
        assert runtime.link is not None
        await asyncio.wait_for(runtime.link.wait_connected(), 15)
        seeded = await seed(runtime)
        async with AgentRuntime(agent_settings, plugins=[printer]) as agent:
            await agent.wait_connected()
            await eventually(lambda: _advertises(runtime, device_id, "printer.clear_jam"), what="catalogue")
            async with runtime.sessions() as session:  # tina's customer: on her dashboard
                change = customers.DeviceAssignment(customer_id=seeded.customers[0])
                await customers.assign_device(session, device_id, change, actor="test")
                await session.commit()
            await eventually(lambda: printer.attached, what="printer running")
            yield Jam(base_url, runtime, device_id, printer, printer_log)


async def _advertises(runtime: Runtime, device_id: str, action: str) -> bool:
    async with runtime.sessions() as session:
        device = await session.get(Device, device_id)
    return device is not None and action in catalogue_of(device).actions


async def _incident(runtime: Runtime, device_id: str, status: str) -> Incident | None:
    async with runtime.sessions() as session:
        found: Incident | None = await session.scalar(
            select(Incident).where(Incident.device_id == device_id, Incident.status == status)
        )
        return found


async def _tiles(page: object) -> dict[str, float | None]:
    values = {}
    for name in ("self_resolution_rate", "resolved_remote"):
        raw = await page.locator(f'[data-kpi="{name}"]').first.get_attribute("data-value")  # type: ignore[attr-defined]
        values[name] = float(raw) if raw else None
    return values


async def _api_kpis(base_url: str, period: dict[str, str]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url) as client:
        login = await client.post(f"{V1}/auth/login", json={"username": "tina", "password": PASSWORD})
        answer = await client.get(f"{V1}/kpis", params=period, headers=bearer(login.json()["token"]))
    kpis: dict[str, Any] = answer.json()["rows"][0]["kpis"]
    return kpis


async def test_a_technician_clears_a_jam_from_the_console_and_the_dashboard_moves(
    jammed: Jam, browser: object, shots: list[Path]
) -> None:
    base_url, runtime = jammed.base_url, jammed.runtime
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    period = {"from": PERIOD["from"], "to": tomorrow}  # the seeded history and today
    dashboard = f"{base_url}/?from={period['from']}&to={period['to']}"
    page: Any = await signed_in(browser, base_url, "tina")
    await page.goto(dashboard)
    before = await _tiles(page)
    api_before = await _api_kpis(base_url, period)
    assert api_before["resolved"] > 0  # a history to move against
    assert before == {k: pytest.approx(api_before[k]) for k in before}

    assert jammed.printer.inject_fault("PAPER_JAM")
    incident = await eventually(lambda: _incident(runtime, jammed.device_id, "open"), what="jam incident")
    await page.goto(f"{base_url}/incidents/{incident.id}")
    await page.get_by_role("button", name="Open remote session").click()
    await page.wait_for_url(re.compile(r".*/sessions/ses_[\w-]+$"))
    session_url = page.url
    assert await page.locator("#session-state").get_attribute("data-state") == "active"
    forbidden = page.locator('form[data-action="logs.tail"]')
    assert await forbidden.locator("[data-policy]").get_attribute("data-policy") == "forbidden"
    assert await forbidden.get_by_role("button").is_disabled()  # the owner's policy, with its reason
    assert "forbids" in await page.locator('form[data-action="logs.tail"] .why').inner_text()

    await page.get_by_role("button", name="Run selftest").click()
    state = page.locator("#run-state")
    await page.wait_for_function("document.getElementById('run-state').dataset.state !== ''")
    assert await state.get_attribute("data-state") == "failed"  # the self-test finds the jam
    assert "jam" in (await page.locator("#run-output").inner_text()).lower()
    await page.wait_for_function(  # the history is refreshed in place, no reload
        "document.querySelectorAll('#history tr[data-command]').length === 1"
    )

    await page.get_by_role("button", name="Run printer.clear_jam").click()
    await page.wait_for_function(
        "document.getElementById('run-state').dataset.state !== ''"
        " && document.querySelectorAll('#history tr[data-command]').length === 2"
    )
    assert await state.get_attribute("data-state") == "succeeded"
    assert await page.locator("#run-cancel").is_disabled()
    await page.evaluate("window.scrollTo(0, 0)")
    await screenshot(page, shots, "session-jam-cleared")

    resolved = await eventually(
        lambda: _incident(runtime, jammed.device_id, "resolved"), what="incident resolved"
    )
    assert (resolved.id, resolved.channel) == (incident.id, "remote")
    await page.get_by_label("Outcome (goes into the report)").fill(
        "Cleared the jam remotely; self-test found it."
    )
    await page.get_by_label("Fixed", exact=True).check()
    await page.get_by_role("button", name="Close session").click()
    await page.wait_for_function("document.getElementById('session-state').dataset.state === 'closed'")
    assert page.url == session_url
    report = await page.request.get(f"{session_url}/report.md")
    assert report.ok
    text = await report.text()
    for needle in ("printer.clear_jam", "selftest", jammed.device_id, "Cleared the jam remotely"):
        assert needle in text, needle

    await page.goto(f"{base_url}/incidents/{incident.id}")
    assert await page.locator("#incident-status").get_attribute("data-status") == "resolved"
    assert await page.locator("#incident-resolved").get_attribute("data-channel") == "remote"
    session_path = session_url.removeprefix(base_url)
    assert await page.locator(f'ul.sessions a[href="{session_path}"]').count() == 1  # its sessions list
    assert await page.locator(f'a[href^="{session_path}"]').count() > 1  # and the timeline's sentences
    await screenshot(page, shots, "incident-resolved")

    await page.goto(dashboard)
    after = await _tiles(page)
    api_after = await _api_kpis(base_url, period)
    assert after == {k: pytest.approx(api_after[k]) for k in after}
    assert api_after["resolved"] == api_before["resolved"] + 1
    assert after["resolved_remote"] == (before["resolved_remote"] or 0) + 1
    self_resolved_before = (before["self_resolution_rate"] or 0.0) * api_before["resolved"]
    assert after["self_resolution_rate"] == pytest.approx((self_resolved_before + 1) / api_after["resolved"])
    assert after["self_resolution_rate"] != pytest.approx(before["self_resolution_rate"])


ARTICLES = (
    {
        "title": "Paper jam at the duplex unit: clear it remotely",
        "symptom": "paper jam at duplex unit, printing stopped",
        "cause": "a sheet caught at sensor S7 after a tray change",
        "resolution": "run selftest to locate the jam, then printer.clear_jam; check the log for repeats",
        "actions": [{"action": "selftest"}, {"action": "printer.clear_jam"}],
    },
    {
        "title": "Repeated duplex jams: replace the pickup roller",
        "symptom": "paper jam at duplex unit several times a day",
        "cause": "worn pickup roller",
        "resolution": "field visit: replace the pickup roller (part PR-40) and run a test page",
        "actions": [],
    },
)


async def _past_jams(jam: Jam, token: str) -> list[int]:
    """Published articles for the printer's jams and past jams of the same printer they solved:
    what the incident page shows a technician as similar past incidents."""
    auth = bearer(token)
    async with jam.runtime.sessions() as session:
        device = await session.get(Device, jam.device_id)
        assert device is not None
        assert device.model
        model = device.model
    past = []
    async with httpx.AsyncClient(base_url=jam.base_url) as client:
        for n, body in enumerate(ARTICLES):
            created = await client.post(
                f"{V1}/knowledge/articles",
                json={**body, "models": [model], "fault_codes": ["PAPER_JAM"], "customer_safe": False},
                headers=auth,
            )
            assert created.status_code == 201, created.text
            article = created.json()["id"]
            published = await client.post(f"{V1}/knowledge/articles/{article}/publish", headers=auth)
            assert published.status_code == 200, published.text
            for days in (9, 4) if n == 0 else (16,):
                incident = await _jam_days_ago(jam, days)
                resolved = await client.post(
                    f"{V1}/incidents/{incident}/resolve",
                    json={
                        "channel": "remote" if n == 0 else "field",
                        "cause": body["cause"],
                        "resolution": body["resolution"],
                        "article_id": article,
                    },
                    headers=auth,
                )
                assert resolved.status_code == 200, resolved.text
                past.append(incident)
    return past


async def _jam_days_ago(jam: Jam, days: int) -> int:
    t_fault = datetime.now(UTC) - timedelta(days=days, hours=2)
    async with jam.runtime.sessions() as session:
        incident = Incident(
            device_id=jam.device_id,
            kind="fault",
            severity="error",
            effect="down",
            fault_code="PAPER_JAM",
            codes=["PAPER_JAM"],
            t_fault=t_fault,
            t_detect=t_fault + timedelta(seconds=20),
        )
        session.add(incident)
        await session.commit()
        return incident.id


async def test_a_technician_fetches_a_device_file_and_downloads_it_intact(
    jammed: Jam, browser: object, shots: list[Path]
) -> None:
    base_url, runtime = jammed.base_url, jammed.runtime
    async with httpx.AsyncClient(base_url=base_url) as client:
        login = await client.post(f"{V1}/auth/login", json={"username": "tina", "password": PASSWORD})
    past = await _past_jams(jammed, login.json()["token"])
    assert jammed.printer.inject_fault("PAPER_JAM")
    incident = await eventually(lambda: _incident(runtime, jammed.device_id, "open"), what="jam incident")
    page: Any = await signed_in(browser, base_url, "tina")
    await page.goto(f"{base_url}/incidents/{incident.id}")
    suggestions = page.locator("#suggestions article.suggestion")
    assert await suggestions.count() == len(ARTICLES)
    shown = await page.locator("#suggestions [data-past]").evaluate_all(
        "links => links.map(a => +a.dataset.past)"
    )
    assert sorted(shown) == sorted(past)  # the past jams each article solved, linked
    await screenshot(page, shots, "incident", full=True)

    await page.get_by_role("button", name="Open remote session").click()
    await page.wait_for_url(re.compile(r".*/sessions/ses_[\w-]+$"))
    fetch = page.locator('form[data-action="file.fetch"]')
    await fetch.get_by_label("Path").fill(str(jammed.log))
    await fetch.get_by_role("button", name="Run file.fetch").click()
    link = page.locator("#fetched-files a.download")  # under the output, once the server checked it
    await link.wait_for()
    assert await page.locator("#run-state").get_attribute("data-state") == "succeeded"
    output = await page.locator("#run-output").inner_text()
    expected = hashlib.sha256(jammed.log.read_bytes()).hexdigest()
    assert expected in output  # the device's own summary line, not the base64 chunks
    assert len(output) < 500
    assert await page.locator("#fetched-files .fetched").get_attribute("data-sha256") == expected
    assert await link.inner_text() == "Download printer.log"
    assert await page.locator(f'#history a[href="{await link.get_attribute("href")}"]').count() == 1

    async with page.expect_download() as started:
        await link.click()
    download = await started.value
    assert download.suggested_filename == "printer.log"
    saved = Path(await download.path())
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == expected
    assert saved.read_bytes() == jammed.log.read_bytes()

    await page.get_by_role("button", name="Run selftest").click()  # the download stays at hand
    await page.wait_for_function(
        "document.getElementById('run-state').dataset.state !== ''"
        " && document.querySelectorAll('#history tr[data-command]').length === 2"
    )
    assert "jam" in (await page.locator("#run-output").inner_text()).lower()
    assert await link.inner_text() == "Download printer.log"
    await page.set_viewport_size({"width": 1280, "height": 940})  # the output and the file in view
    await page.evaluate("window.scrollTo(0, 0)")
    await screenshot(page, shots, "session")

    # the admin's view of what happened: the audit log, filtered to the technician and today
    admin: Any = await signed_in(browser, base_url, "ada")
    await admin.get_by_role("link", name="Audit log").click()
    await admin.get_by_label("Actor").fill("user:tina")
    await admin.get_by_label("Since").fill(datetime.now(UTC).date().isoformat())
    await admin.get_by_role("button", name="Filter").click()
    await admin.wait_for_url(re.compile(r".*/audit\?actor=user%3Atina&.*since="))
    actors = await admin.locator("#audit-entries tr[data-action] td.actor").all_inner_texts()
    actions = await admin.locator("#audit-entries tr[data-action]").evaluate_all(
        "rows => rows.map(r => r.dataset.action)"
    )
    async with httpx.AsyncClient(base_url=base_url) as client:
        login = await client.post(f"{V1}/auth/login", json={"username": "ada", "password": PASSWORD})
        api = await client.get(
            f"{V1}/audit",
            # a date alone is a naive datetime to this endpoint (a 500): say midnight UTC
            params={"actor": "user:tina", "since": f"{datetime.now(UTC).date()}T00:00:00Z", "limit": 50},
            headers=bearer(login.json()["token"]),
        )
    assert actions == [entry["action"] for entry in api.json()["items"]]
    assert set(actors) == {"user:tina"}
    assert "command.sent" in actions  # the selftest and the file.fetch, each signed and audited
    await screenshot(admin, shots, "admin-audit")

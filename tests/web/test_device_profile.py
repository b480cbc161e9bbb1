"""The device page as the system profile (issue 15, item 3), in real headless Chromium: the
inventory read as hardware, firmware, software, configuration and network (the JSON only
behind a disclosure), customer and site with their criticality, and the actions right there —
a technician opens a session or a diagnostic the device's policy allows; a customer gets
neither."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.db.models import Customer, Device, Site
from server.runtime import Runtime
from server.web.profile import diagnostics, profile
from tests.web.seed import Seeded
from tests.web.test_browser import CHROMIUM, async_api, browser, live, screenshot, shots, signed_in

__all__ = ["browser", "live", "shots"]  # the fixtures, imported from the browser tests

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]
assert async_api

GIB = 1024**3
INVENTORY = {  # as agent/inventory.py sends it (trimmed)
    "seq": 1,
    "ts": "2026-03-01T08:00:00Z",
    "equipment": {
        "kind": "imaging",
        "vendor": "Simulated",
        "model": "SimRad DR-500",
        "serial": "DR5-1",
        "firmware": "7.3.0",
    },
    "system": {
        "hostname": "rad-01",
        "os": "Linux",
        "os_version": "6.1",
        "arch": "x86_64",
        "cpu_count": 2,
        "memory_total": 8 * GIB,
        "disk_total": 256 * GIB,
        "python": "3.11.7",
        "boot_time": "2026-03-01T07:00:00Z",
    },
    "agent": {
        "version": "0.1.0",
        "plugins": ["sim-imaging"],
        "attended": False,
        "catalogue": [
            {"name": "ping", "description": "Round trip.", "disruptive": False, "policy": "allowed"},
            {
                "name": "imaging.status",
                "description": "Tube and detector.",
                "disruptive": False,
                "policy": "allowed",
            },
            {
                "name": "service.restart",
                "description": "Restart a service.",
                "disruptive": True,
                "policy": "allowed",
            },
            {
                "name": "file.fetch",
                "description": "Copy a file.",
                "disruptive": False,
                "policy": "needs_consent",
            },
        ],
    },
    "site": "Test Hospital/Radiology",
    "config": {
        "telemetry_interval": 1800.0,
        "allowed_actions": ["ping", "imaging.status"],
        "faults": {"sim": []},
    },
}


def test_profile_sections_read_the_agents_inventory() -> None:
    sections = profile(INVENTORY)
    assert list(sections) == ["Hardware", "Firmware", "Software", "Configuration", "Network"]
    hardware = dict(sections["Hardware"])
    assert hardware["Serial"] == "DR5-1"
    assert (
        hardware["Memory"].startswith("8192.0 MiB")
        or "GiB" in hardware["Memory"]
        or "8,589,934,592" in hardware["Memory"]
    )
    assert dict(sections["Firmware"]) == {"Equipment firmware": "7.3.0"}
    assert dict(sections["Configuration"])["Telemetry every"] == "1800 s"
    assert dict(sections["Network"])["Host name"] == "rad-01"
    assert [d["name"] for d in diagnostics(INVENTORY)] == [
        "ping",
        "imaging.status",
    ]  # not disruptive, no consent
    assert profile({"custom": {"a": 1}, "note": "x"}) == {"Other": [("custom.a", "1"), ("note", "x")]}
    assert profile(None) == {}


async def _prepare(runtime: Runtime, device_id: str) -> tuple[str, str]:
    async with runtime.sessions() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        assert device.customer_id is not None
        device.inventory = INVENTORY
        device.online, device.state = True, "running"
        customer = await session.get(Customer, device.customer_id)
        assert customer is not None
        customer.criticality = 4
        site = Site(customer_id=customer.id, name="Radiology", criticality=5)
        session.add(site)
        await session.flush()
        device.site_id = site.id
        await session.commit()
        return customer.name, site.name


async def test_the_device_page_is_a_profile_with_actions(
    live: tuple[str, Seeded, Runtime], browser: object, shots: list[Path]
) -> None:
    base_url, seeded, runtime = live
    device_id = seeded.devices[seeded.customers[0]][0]
    customer_name, _ = await _prepare(runtime, device_id)
    page = await signed_in(browser, base_url, "tina")  # technician of the first customer
    await page.goto(f"{base_url}/devices/{device_id}")  # type: ignore[attr-defined]
    hardware = page.locator('table.profile-section[data-section="hardware"]')  # type: ignore[attr-defined]
    assert "DR5-1" in await hardware.inner_text()
    for section in ("firmware", "software", "configuration", "network"):
        assert await page.locator(f'table.profile-section[data-section="{section}"]').count() == 1, section  # type: ignore[attr-defined]
    assert not await page.locator("pre.inventory").is_visible()  # type: ignore[attr-defined]  # the JSON only on demand
    assert customer_name in await page.locator("#device-customer").inner_text()  # type: ignore[attr-defined]
    assert await page.locator("#device-customer .crit").get_attribute("data-criticality") == "4"  # type: ignore[attr-defined]
    assert await page.locator("#device-site .crit").get_attribute("data-criticality") == "5"  # type: ignore[attr-defined]
    offered = await page.locator("form[data-diagnostic]").evaluate_all(
        "fs => fs.map(f => f.dataset.diagnostic)"
    )  # type: ignore[attr-defined]
    assert offered == ["ping", "imaging.status"]
    await screenshot(page, shots, "device-profile", full=True)
    await page.locator('form[data-diagnostic="ping"] button').click()  # type: ignore[attr-defined]
    await page.wait_for_url(f"{base_url}/sessions/**")  # type: ignore[attr-defined]
    assert "diagnostic: ping" in await page.locator("main").inner_text()  # type: ignore[attr-defined]


async def test_a_customer_sees_the_profile_but_no_actions(
    live: tuple[str, Seeded, Runtime], browser: object
) -> None:
    base_url, seeded, runtime = live
    device_id = seeded.devices[seeded.customers[0]][0]
    await _prepare(runtime, device_id)
    page = await signed_in(browser, base_url, "carl")
    await page.goto(f"{base_url}/devices/{device_id}")  # type: ignore[attr-defined]
    assert await page.locator("table.profile-section").count() == 5  # type: ignore[attr-defined]
    assert await page.locator("#device-actions").count() == 0  # type: ignore[attr-defined]
    csrf = await page.locator('form.signout input[name="csrf"]').get_attribute("value")  # type: ignore[attr-defined]
    refused = await page.request.post(  # type: ignore[attr-defined]
        f"{base_url}/devices/{device_id}/session", form={"csrf": csrf, "reason": "x"}, max_redirects=0
    )
    assert refused.status == 403

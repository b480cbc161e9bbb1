"""``fleetcare demo`` end to end: broker, server and a small fleet; the API sees the devices and
a ping reaches one of them and comes back; the admin signs in to the web console with the
password the banner prints (a new one at every start)."""

from __future__ import annotations

import asyncio
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from server.demo import Demo, DemoConfig, running_demo
from server.embedded_broker import mosquitto_binary
from tests.web.support import csrf_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEVICES = 3


def printed_password(demo: Demo) -> str:
    """The console line of the banner names the console's URL and the admin's password."""
    found = re.search(r"^  console +(\S+)  \(sign in as admin, password (\S+)\)$", demo.banner(), re.M)
    assert found, demo.banner()
    assert found.group(1) == f"{demo.api_url}/"
    password = (demo.config.workdir / "admin.password").read_text(encoding="utf-8")
    assert password == f"{found.group(2)}\n"
    assert stat.S_IMODE((demo.config.workdir / "admin.password").stat().st_mode) == 0o600
    return found.group(2)


async def sign_in_to_the_console(api_url: str, password: str, *, refused: str) -> None:
    """The sign-in form at the API's URL: ``refused`` is turned away, ``password`` gets in."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as browser:
        form = await browser.get("/login")
        assert form.status_code == 200
        wrong = await browser.post(
            "/login", data={"csrf": csrf_of(form.text), "username": "admin", "password": refused}
        )
        assert wrong.status_code == 401
        assert "Wrong user name or password." in wrong.text
        answer = await browser.post(
            "/login", data={"csrf": csrf_of(wrong.text), "username": "admin", "password": password}
        )
        assert answer.status_code == 303, answer.text
        page = await browser.get(answer.headers["location"])
        assert page.status_code == 200
        assert re.search(r'class="who">\s*admin\b', page.text), page.text


@pytest.mark.parametrize("broker", ["mosquitto", "amqtt"])
async def test_demo_lists_the_fleet_and_pings_a_device(broker: str, tmp_path: Path) -> None:
    if broker == "mosquitto" and mosquitto_binary() is None:
        pytest.skip("mosquitto binary not found")
    config = DemoConfig(
        workdir=tmp_path / "demo",
        devices=DEVICES,
        api_port=0,
        broker=broker,  # type: ignore[arg-type]
        telemetry_interval=1.0,
        jam_rate_per_hour=0.0,
    )
    async with asyncio.timeout(90):
        async with running_demo(config) as demo:
            assert demo.broker.kind == broker
            assert demo.token in demo.banner()
            password = printed_password(demo)
            await sign_in_to_the_console(demo.api_url, password, refused="not the password")
            headers = {"Authorization": f"Bearer {demo.token}"}
            async with httpx.AsyncClient(base_url=demo.api_url, headers=headers, timeout=30) as api:
                listed: set[str] = set()
                while listed != set(demo.fleet.device_ids):  # ingest is asynchronous: until all arrived
                    response = await api.get("/api/v1/devices")
                    assert response.status_code == 200
                    listed = {d["id"] for d in response.json()["items"] if d["online"]}
                    await asyncio.sleep(0.1)
                target = demo.fleet.device_ids[-1]
                response = await api.post(
                    f"/api/v1/devices/{target}/commands",
                    json={"action": "ping", "wait": True, "timeout_s": 20},
                )
                assert response.status_code == 200, response.text
                command = response.json()
                assert command["state"] == "succeeded", command
                assert command["ok"] is True
                assert command["output"] == "pong"
                detail = await api.get(f"/api/v1/devices/{target}")
                assert detail.json()["model"] == "SimPrint 4000"
        # Everything stopped in order: a second run in the same work directory reuses the PKI.
        assert (config.workdir / "pki" / "ca.crt").exists()
        async with running_demo(config) as again:
            assert again.token != demo.token
            # a new password at every start; the last one no longer works
            assert printed_password(again) != password
            await sign_in_to_the_console(again.api_url, again.password, refused=password)


async def test_the_demo_shows_a_business_on_the_first_visit(tmp_path: Path) -> None:
    """A month of history ready when the banner prints (issue 15, item 6): customers and sites
    with criticality, KPIs over the month with the time covered, forecasts with a trend, a
    knowledge base whose articles were used, nothing dated after the start — and the printer the
    clear-jam line names is jammed, so the line does what it says."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto binary not found")
    config = DemoConfig(
        workdir=tmp_path / "demo",
        devices=6,
        api_port=0,
        telemetry_interval=1.0,
        jam_rate_per_hour=0.0,
        seed=4,
    )
    async with asyncio.timeout(120):
        async with running_demo(config) as demo:
            start = demo.history.start
            assert start is not None
            assert demo.history.incidents > 0
            assert f"{demo.history.incidents} incidents since" in demo.banner()
            jammed = demo.jammed
            assert jammed is not None
            assert f"/devices/{jammed}/commands" in demo.banner()
            headers = {"Authorization": f"Bearer {demo.token}"}
            async with httpx.AsyncClient(base_url=demo.api_url, headers=headers, timeout=30) as api:
                customers = (await api.get("/api/v1/customers")).json()["items"]
                assert {c["name"]: c["criticality"] for c in customers} == {
                    "St. Mary's Hospital": 5,
                    "Harbor Law Offices": 3,
                    "City Library": 2,
                }
                period = {
                    "from": start.date().isoformat(),
                    "to": (start.date() + timedelta(days=28)).isoformat(),
                }
                report = (await api.get("/api/v1/kpis", params=period)).json()
                figures = report["rows"][0]["kpis"]
                assert figures["coverage"] > 0.9, figures  # not "coverage 0.07 %"
                assert figures["resolved"] > 0
                assert figures["mtrs_mean_s"] is not None
                incidents = (await api.get("/api/v1/incidents", params={"limit": 1000})).json()["items"]
                assert incidents
                assert max(datetime.fromisoformat(i["t_detect"]) for i in incidents) <= datetime.now(UTC)
                forecasts = (await api.get(f"/api/v1/devices/{demo.fleet.device_ids[0]}/forecast")).json()
                toner = [f for f in forecasts if f["metric"].startswith("printer.toner.")]
                assert toner
                assert all(f["status"] != "insufficient_data" for f in toner), toner
                hits = (await api.get("/api/v1/knowledge/search", params={"q": "paper jam"})).json()
                assert any(h["kind"] == "article" for h in hits), hits
                articles = (await api.get("/api/v1/knowledge/articles")).json()["items"]
                assert sum(a["use_count"] for a in articles) > 0
                while (await api.get(f"/api/v1/devices/{jammed}")).json()["state"] != "down":
                    await asyncio.sleep(0.2)
                cleared = await api.post(
                    f"/api/v1/devices/{jammed}/commands",
                    json={"action": "printer.clear_jam", "wait": True, "timeout_s": 20},
                )
                assert cleared.json()["ok"] is True, cleared.text
        async with running_demo(config) as again:  # the same work directory: history kept, not doubled
            assert again.history.start is None
            async with httpx.AsyncClient(base_url=again.api_url, headers=headers, timeout=30) as api:
                again_headers = {"Authorization": f"Bearer {again.token}"}
                listed = await api.get("/api/v1/incidents", params={"limit": 1000}, headers=again_headers)
                assert len(listed.json()["items"]) >= len(incidents)
                assert len((await api.get("/api/v1/customers", headers=again_headers)).json()["items"]) == 3

"""``fleetcare demo`` end to end: broker, server and a small fleet; the API sees the devices and
a ping reaches one of them and comes back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from server.demo import DemoConfig, running_demo
from server.embedded_broker import mosquitto_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEVICES = 3


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

"""KPIs end to end: two simulated printers (the real ``PrinterPlugin``) on real agent runtimes
jam through a real Mosquitto (mutual TLS) into the real server; one jam is cleared by a
technician's ``printer.clear_jam``, the other at the machine. ``GET /kpis`` then reports each
printer's unplanned downtime as its incident's t_fault → t_restored, and the resolution rates.
Debounce and sweep are shortened so the test runs in seconds."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent import AgentRuntime
from certs import PkiDir
from simulators.printer import PAPER_JAM, PrinterPlugin
from tests.support.broker import MosquittoBroker, unique_device
from tests.support.e2e import Fleet, agent_settings, fleet_server
from tests.support.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

INCIDENTS = {"fault_debounce": 0.5, "offline_grace": 1.0, "offline_flap_window": 1.0, "sweep_interval": 0.1}
TOLERANCE_S = 0.05


@contextlib.asynccontextmanager
async def printer_agent(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker, fleet: Fleet, model: str
) -> AsyncIterator[tuple[str, PrinterPlugin]]:
    """A connected agent running a printer that only jams when told to (its own ``model``, so
    the KPI report can be grouped per printer); yields once the server knows its catalogue."""
    device_id = unique_device(pki, "kpi")
    plugin = PrinterPlugin(device_id, {"seed": 1, "jam_rate_per_hour": 0.0, "model": model})
    settings = agent_settings(
        tmp_path, pki, broker, device_id, policy={"allowed_actions": ["printer.clear_jam"]}
    )
    async with AgentRuntime(settings, plugins=[plugin]) as agent:
        await agent.wait_connected()
        await eventually(lambda: plugin.attached, what=f"{device_id}: printer running")

        async def catalogue() -> Any:
            device = await fleet.device(device_id)
            inventory = (device or {}).get("inventory") or {}
            return inventory.get("config", {}).get("faults")

        faults = await eventually(catalogue, what=f"{device_id}: fault catalogue in the inventory")
        assert [(f["code"], f["effect"]) for f in faults] == [(PAPER_JAM.code, "down")]
        yield device_id, plugin


async def incidents(fleet: Fleet, device_id: str, **query: str) -> list[dict[str, Any]]:
    page = await fleet.get("/incidents", device=device_id, **query)
    return list(page["items"])


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_remote_and_auto_resolved_jams_give_downtime_and_resolution_rates(
    tmp_path: Path, db_url: str, pki: PkiDir, broker: MosquittoBroker
) -> None:
    start = datetime.now(UTC) - timedelta(minutes=1)
    async with (
        fleet_server(db_url, pki, broker, command_sweep_interval=0.1, incidents=INCIDENTS) as fleet,
        printer_agent(tmp_path, pki, broker, fleet, "SimPrint KPI-R") as (remote_id, remote_printer),
        printer_agent(tmp_path, pki, broker, fleet, "SimPrint KPI-A") as (auto_id, auto_printer),
    ):
        assert remote_printer.inject_fault(PAPER_JAM.code)
        assert auto_printer.inject_fault(PAPER_JAM.code)
        for device_id in (remote_id, auto_id):  # past the debounce: incidents, not transient faults
            (opened,) = await eventually(
                lambda device_id=device_id: incidents(fleet, device_id), what=f"{device_id}: incident"
            )
            assert (opened["status"], opened["codes"]) == ("open", [PAPER_JAM.code])

        command = await fleet.command(remote_id, "printer.clear_jam", wait=True, timeout_s=30)
        assert command["state"] == "succeeded", command
        assert auto_printer.clear_fault(PAPER_JAM.code)  # cleared at the machine: nobody acted

        resolved: dict[str, dict[str, Any]] = {}
        for device_id in (remote_id, auto_id):
            (incident,) = await eventually(
                lambda device_id=device_id: incidents(fleet, device_id, status="resolved"),
                what=f"{device_id}: incident resolved",
            )
            resolved[device_id] = await fleet.get(f"/incidents/{incident['id']}")
        assert remote_printer.jam is None
        assert auto_printer.jam is None

        report = await fleet.get(
            "/kpis",
            **{"from": start.isoformat(), "to": (datetime.now(UTC) + timedelta(minutes=1)).isoformat()},
        )
        by_model = await fleet.get(
            "/kpis",
            group_by="model",
            **{"from": start.isoformat(), "to": (datetime.now(UTC) + timedelta(minutes=1)).isoformat()},
        )

    assert (resolved[remote_id]["channel"], resolved[remote_id]["remote_used"]) == ("remote", True)
    assert (resolved[auto_id]["channel"], resolved[auto_id]["remote_used"]) == ("auto", False)

    downtime = {row["group"]["key"]: row["kpis"]["downtime_s"] for row in by_model["rows"]}
    for device_id, model in ((remote_id, "SimPrint KPI-R"), (auto_id, "SimPrint KPI-A")):
        incident = resolved[device_id]
        down = (ts(incident["t_restored"]) - ts(incident["t_fault"])).total_seconds()
        assert down > INCIDENTS["fault_debounce"]
        assert downtime[model] == pytest.approx(down, abs=TOLERANCE_S), (model, downtime, down)

    (fleet_row,) = report["rows"]
    kpis = fleet_row["kpis"]
    assert kpis["devices"] == 2
    assert kpis["downtime_s"] == pytest.approx(sum(downtime.values()), abs=TOLERANCE_S)
    assert (kpis["incidents"], kpis["resolved"], kpis["open_at_end"]) == (2, 2, 0)
    assert (kpis["resolved_remote"], kpis["resolved_auto"]) == (1, 1)
    assert kpis["remote_resolution_rate"] == pytest.approx(0.5)
    assert kpis["auto_recovery_rate"] == pytest.approx(0.5)
    assert kpis["self_resolution_rate"] == pytest.approx(1.0)

"""``fleetcare sim replay`` end to end: a simulated imaging unit (real agent, real Mosquitto with
mutual TLS, real server) records a fault sequence; the replay reads it back from the API and
re-lives it on ``<id>-replica`` under the real agent runtime. The replica's event history at
the server must show the same fault codes in the same order with the same relative timing, and a
technician's remote fix must really clear a replayed fault on the replica."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent import AgentRuntime
from certs import PkiDir
from server.db.models import Role
from simulators.imaging import ImagingPlugin
from simulators.replay import Recording, ReplayError, Replica, fetch_recording
from tests.support.broker import MosquittoBroker, unique_device
from tests.support.e2e import Fleet, agent_settings, fleet_server
from tests.support.server import bearer, create_token, running_server, server_settings
from tests.support.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TIMING_TOLERANCE_S = (
    0.4  # scheduling jitter (doubled at speed 2) of two agents and a server on a shared 2-core machine
)
CRASH, PACS = "ACQ_SERVICE_CRASH", "PACS_UNREACHABLE"
FIX = "imaging.restart_acquisition"  # fixes a crash with the catalogue's 90 %


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def fault_events(fleet: Fleet, device_id: str, count: int) -> list[dict[str, Any]]:
    """The device's fault.raised / fault.cleared events, oldest first, once ``count`` are stored."""

    async def stored() -> list[dict[str, Any]]:
        page = await fleet.events(device_id, limit=1000)
        items = [e for e in page["items"] if e["type"] in ("fault.raised", "fault.cleared")]
        return sorted(items, key=lambda e: e["seq"]) if len(items) >= count else []

    return await eventually(stored, what=f"{device_id}: {count} fault events stored")


@contextlib.asynccontextmanager
async def imaging_unit(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker, fleet: Fleet
) -> AsyncIterator[tuple[str, ImagingPlugin]]:
    """A connected imaging unit with no random faults, once the server has its inventory."""
    device_id = unique_device(pki, "rec")
    plugin = ImagingPlugin(device_id, {"seed": 3, "fault_rate_multiplier": 0.0})
    async with AgentRuntime(agent_settings(tmp_path, pki, broker, device_id), plugins=[plugin]) as agent:
        await agent.wait_connected()
        await eventually(lambda: plugin.attached, what="imaging unit running")

        async def inventory() -> Any:
            return ((await fleet.device(device_id)) or {}).get("inventory")

        await eventually(inventory, what="inventory stored")
        yield device_id, plugin


async def record(
    fleet: Fleet, device_id: str, steps: list[tuple[float, str, str]], plugin: ImagingPlugin
) -> Recording:
    """Play ``steps`` (pause seconds, raise|clear, code) on the unit; read them back via the API."""
    since = datetime.now(UTC) - timedelta(seconds=1)
    for pause, what, code in steps:
        await asyncio.sleep(pause)
        assert (plugin.inject_fault if what == "raise" else plugin.clear_fault)(code)
    await fault_events(fleet, device_id, len(steps))
    fleet.client.headers.update(fleet.ops_auth)
    return await fetch_recording(fleet.client, device_id, since, datetime.now(UTC) + timedelta(seconds=1))


async def test_replica_reproduces_the_recorded_fault_sequence(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker, db_url: str
) -> None:
    steps = [(0.0, "raise", CRASH), (1.0, "raise", PACS), (1.5, "clear", CRASH), (1.0, "clear", PACS)]
    async with fleet_server(db_url, pki, broker) as fleet, imaging_unit(tmp_path, pki, broker, fleet) as unit:
        device_id, plugin = unit
        recording = await record(fleet, device_id, steps, plugin)
        assert recording.kind == "imaging"
        assert recording.samples, "telemetry recorded with the faults"

        async with Replica(
            recording, pki, broker.host, broker.port, data_root=tmp_path / "replica", speed=2.0
        ) as replica:
            await asyncio.wait_for(replica.wait_replayed(), 20)
            replayed = await fault_events(fleet, replica.replica_id, len(steps))
            replica_device = await fleet.device(replica.replica_id)
        original = await fault_events(fleet, device_id, len(steps))

    assert replica.replica_id == f"{device_id}-replica"
    assert replica_device is not None
    assert replica_device["inventory"]["equipment"]["kind"] == "imaging"
    assert [(e["type"], e["code"]) for e in replayed] == [(e["type"], e["code"]) for e in original]
    assert [(e["type"], e["code"]) for e in original] == [
        ("fault.raised", CRASH),
        ("fault.raised", PACS),
        ("fault.cleared", CRASH),
        ("fault.cleared", PACS),
    ]
    # device time: the replica's clock runs at the replay speed, so its offsets are the recorded ones
    first_original, first_replayed = ts(original[0]["ts"]), ts(replayed[0]["ts"])
    for before, after in zip(original, replayed, strict=True):
        recorded = (ts(before["ts"]) - first_original).total_seconds()
        reproduced = (ts(after["ts"]) - first_replayed).total_seconds()
        assert abs(reproduced - recorded) < TIMING_TOLERANCE_S, (before["code"], recorded, reproduced)


async def test_a_remote_fix_clears_a_replayed_fault_on_the_replica(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker, db_url: str
) -> None:
    async with fleet_server(db_url, pki, broker) as fleet, imaging_unit(tmp_path, pki, broker, fleet) as unit:
        device_id, plugin = unit
        recording = await record(fleet, device_id, [(0.0, "raise", CRASH), (0.3, "clear", CRASH)], plugin)

        async with Replica(
            recording,
            pki,
            broker.host,
            broker.port,
            data_root=tmp_path / "replica",
            speed=4.0,
            keep_faults=True,
        ) as replica:
            await asyncio.wait_for(replica.wait_replayed(), 20)
            assert replica.progress().active_faults == (CRASH,), (
                "the recorded clearing was left to the technician"
            )
            await fault_events(fleet, replica.replica_id, 1)
            for _attempt in range(5):  # each attempt clears it with 90 %
                command = await fleet.command(replica.replica_id, FIX, wait=True, timeout_s=20)
                if command["state"] == "succeeded":
                    break
            assert command["state"] == "succeeded", command
            events = await fault_events(fleet, replica.replica_id, 2)

    cleared = events[-1]
    assert (cleared["type"], cleared["code"]) == ("fault.cleared", CRASH)
    assert cleared["data"]["cleared_by"] == "remote"
    assert cleared["data"]["action"] == FIX
    assert replica.progress().active_faults == ()


async def test_no_data_is_a_clear_error(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker, db_url: str
) -> None:
    async with fleet_server(db_url, pki, broker) as fleet, imaging_unit(tmp_path, pki, broker, fleet) as unit:
        device_id, _plugin = unit
        fleet.client.headers.update(fleet.ops_auth)
        long_ago = datetime(2020, 1, 1, tzinfo=UTC)
        with pytest.raises(ReplayError, match="no events or telemetry between"):
            await fetch_recording(fleet.client, device_id, long_ago, long_ago + timedelta(hours=1))
        with pytest.raises(ReplayError, match="not found"):
            await fetch_recording(fleet.client, "no-such-device", long_ago, datetime.now(UTC))


async def test_the_command_replays_into_the_replica(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker, db_url: str
) -> None:
    """``fleetcare sim replay … --exit`` over HTTP, as an operator runs it."""
    settings = server_settings(db_url, pki=pki, broker=broker)
    async with running_server(settings) as (app, base_url):
        runtime = app.state.runtime
        token = await create_token(runtime, f"ops-{tmp_path.name[-6:]}", Role.OPS)
        async with httpx.AsyncClient(base_url=base_url, headers=bearer(token)) as client:
            fleet = Fleet(client, runtime, "nobody", bearer(token), bearer(token))
            async with imaging_unit(tmp_path, pki, broker, fleet) as (device_id, plugin):
                recording = await record(
                    fleet, device_id, [(0.0, "raise", CRASH), (0.4, "clear", CRASH)], plugin
                )
            since, until = (recording.since.isoformat(), recording.until.isoformat())
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fleetcare.cli", "sim", "replay", device_id, "--from", since, "--to", until,
                "--url", base_url, "--token", token, "--pki", str(pki.root),
                "--broker", f"{broker.host}:{broker.port}", "--data", str(tmp_path / "cli-replica"),
                "--speed", "4", "--exit",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _out, err = await asyncio.wait_for(proc.communicate(), 40)
            assert proc.returncode == 0, err.decode()
            assert "1 faults raised, 1 cleared" in err.decode()
            replayed = await fault_events(fleet, f"{device_id}-replica", 2)
    assert [(e["type"], e["code"]) for e in replayed] == [("fault.raised", CRASH), ("fault.cleared", CRASH)]

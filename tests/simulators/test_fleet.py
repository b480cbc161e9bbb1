"""The fleet runner and ``fleetcare sim run`` against the in-process embedded broker."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
import typer

from agent.link import LinkState
from certs import PkiDir
from server.embedded_broker import EmbeddedBroker
from simulators.cli import parse_broker
from simulators.fleet import SimulatedFleet, device_ids
from tests.agent.support import closed_port

pytestmark = pytest.mark.integration

TIMEOUT = 20.0
REPO = Path(__file__).resolve().parents[2]


def server_tls(pki: PkiDir) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_cert))
    ctx.load_cert_chain(pki.server_client_cert, pki.server_client_key)
    return ctx


@pytest.fixture
async def amqtt_broker(pki: PkiDir, tmp_path: Path) -> AsyncIterator[EmbeddedBroker]:
    async with asyncio.timeout(TIMEOUT), EmbeddedBroker(pki, tmp_path / "broker", prefer="amqtt") as broker:
        yield broker


def test_device_ids_are_numbered_and_valid() -> None:
    assert device_ids("sim", 3) == ["sim-0001", "sim-0002", "sim-0003"]
    assert device_ids("p", 12345)[-1] == "p-12345"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("localhost:1883", ("localhost", 1883)), ("broker", ("broker", 8883)), ("[::1]:8884", ("::1", 8884))],
)
def test_parse_broker(value: str, expected: tuple[str, int]) -> None:
    assert parse_broker(value) == expected


@pytest.mark.parametrize("value", ["host:0", "host:x", ":1883", "[::1"])
def test_parse_broker_refuses_nonsense(value: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_broker(value)


async def test_fleet_runs_real_agents_whose_faults_reach_the_server(
    pki: PkiDir, amqtt_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    prefix = f"fl-{uuid.uuid4().hex[:6]}"
    async with aiomqtt.Client(
        "localhost",
        amqtt_broker.port,
        identifier=f"srv-{prefix}",
        tls_context=server_tls(pki),
        timeout=TIMEOUT,
    ) as server:
        async with asyncio.timeout(TIMEOUT):
            await server.subscribe("fc/v1/d/+/up/#", qos=1)
        fleet = SimulatedFleet(
            pki,
            amqtt_broker.host,
            amqtt_broker.port,
            3,
            prefix=prefix,
            data_root=tmp_path / "agents",
            telemetry_interval=0.5,
            printer_options={"jam_rate_per_hour": 0.0},
            seed=1,
        )
        async with fleet:
            async with asyncio.timeout(TIMEOUT):
                await fleet.wait_connected()
            target = fleet.device_ids[1]
            assert fleet.printers[target].inject_fault("PAPER_JAM")
            seen_inventory: set[str] = set()
            async with asyncio.timeout(TIMEOUT):
                async for message in server.messages:
                    device, kind = message.topic.value.split("/")[3], message.topic.value.split("/")[5]
                    body = json.loads(message.payload)
                    if kind == "inventory":
                        assert body["equipment"]["kind"] == "printer"
                        seen_inventory.add(device)
                    if kind == "event" and body["event"] == "fault.raised":
                        assert device == target
                        assert body["code"] == "PAPER_JAM"
                        break
            assert seen_inventory <= set(fleet.device_ids)
            progress = fleet.progress()
            assert progress.connected == progress.started == 3
            assert progress.sent > 0
            assert progress.failed == 0
        assert all(agent.link_state is not LinkState.CONNECTED for agent in fleet.agents.values())

    # A second run reuses the certificates it issued.
    cert = pki.device_cert(fleet.device_ids[0])
    before = cert.stat().st_mtime_ns
    async with SimulatedFleet(
        pki, amqtt_broker.host, amqtt_broker.port, 1, prefix=prefix, data_root=tmp_path / "agents"
    ) as again:
        async with asyncio.timeout(TIMEOUT):
            await again.wait_connected()
    assert cert.stat().st_mtime_ns == before


def _agent_tasks() -> int:
    return sum(1 for t in asyncio.all_tasks() if t.get_name().startswith("fleet.agent["))


async def test_fleet_start_schedule_is_not_stretched_by_a_busy_loop(pki: PkiDir, tmp_path: Path) -> None:
    """Agent i is due at i x start_interval: after the loop was blocked past every due time, the
    remaining agents start at once (one sleep per agent would start one per interval from then)."""
    fleet = SimulatedFleet(
        pki,
        "127.0.0.1",
        closed_port(),
        5,
        prefix=f"st-{uuid.uuid4().hex[:6]}",
        data_root=tmp_path,
        start_interval=0.4,
    )
    async with asyncio.timeout(TIMEOUT), fleet:
        while _agent_tasks() < 1:  # the schedule has begun
            await asyncio.sleep(0)
        time.sleep(2.0)  # a busy event loop: every start is due meanwhile (0, 0.4 ... 1.6 s)
        for _ in range(3):
            await asyncio.sleep(0)
        assert _agent_tasks() == 5
        while fleet.progress().started < 5:  # each opens its database, then counts as started
            await asyncio.sleep(0.05)


async def test_fleet_admits_at_most_max_connecting_agents_still_connecting(
    pki: PkiDir, tmp_path: Path
) -> None:
    """No broker here: nobody connects, so only the first ``max_connecting`` agents start."""
    fleet = SimulatedFleet(
        pki,
        "127.0.0.1",
        closed_port(),
        5,
        prefix=f"mc-{uuid.uuid4().hex[:6]}",
        data_root=tmp_path,
        start_interval=0.0,
        max_connecting=2,
    )
    async with asyncio.timeout(TIMEOUT), fleet:
        while fleet.progress().started < 2:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert (_agent_tasks(), fleet.progress().started, fleet.progress().connected) == (2, 2, 0)
    with pytest.raises(ValueError, match="max_connecting"):
        SimulatedFleet(pki, "127.0.0.1", 8883, 1, data_root=tmp_path, max_connecting=0)


async def test_fleet_gives_the_loop_enough_threads_for_its_connection_attempts(
    pki: PkiDir, tmp_path: Path
) -> None:
    """Each connection attempt blocks an executor thread during its handshakes: 12 blocking calls
    meet at a barrier only if the default executor has at least 12 threads (2 cores + 4 otherwise)."""
    barrier = threading.Barrier(12)
    fleet = SimulatedFleet(pki, "127.0.0.1", closed_port(), 1, data_root=tmp_path, connect_threads=12)
    async with asyncio.timeout(TIMEOUT), fleet:
        waits = [asyncio.to_thread(barrier.wait, 5.0) for _ in range(12)]
        assert sorted(await asyncio.gather(*waits)) == list(range(12))


def test_fleet_agents_poll_consent_hourly_unless_told_otherwise(pki: PkiDir, tmp_path: Path) -> None:
    """Simulated operators decide in-process; the CLI poll is an explicit option."""
    default = SimulatedFleet(pki, "127.0.0.1", 8883, 1, data_root=tmp_path)
    assert default.settings_for(default.device_ids[0], 0).consent_poll_interval == 3600.0
    polling = SimulatedFleet(pki, "127.0.0.1", 8883, 1, data_root=tmp_path, consent_poll_interval=0.5)
    assert polling.settings_for(polling.device_ids[0], 0).consent_poll_interval == 0.5


async def test_sim_run_stops_cleanly_on_ctrl_c(
    pki: PkiDir, amqtt_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    prefix = f"cli-{uuid.uuid4().hex[:6]}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleetcare.cli",
        "sim",
        "run",
        "--devices",
        "2",
        "--pki",
        str(pki.root),
        "--broker",
        f"{amqtt_broker.host}:{amqtt_broker.port}",
        "--prefix",
        prefix,
        "--data",
        str(tmp_path / "agents"),
        "--interval",
        "0.5",
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    assert process.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                line = (await process.stderr.readline()).decode()
                assert line, "fleetcare sim run ended early:\n" + "".join(lines)
                lines.append(line)
                if line.startswith("2/2 devices connected"):
                    break
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(TIMEOUT):
            rest = (await process.stderr.read()).decode()
            assert await process.wait() == 0, "".join(lines) + rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert "stopping the fleet" in rest
    assert "Traceback" not in rest

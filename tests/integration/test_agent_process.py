"""The agent as an operator runs it: ``fleetcare agent run`` in its own process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from certs import PkiDir
from protocol import Event, Inventory, Status
from tests.agent.support import ServerSide
from tests.support.broker import MosquittoBroker, unique_device

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _write_config(tmp_path: Path, pki: PkiDir, broker: MosquittoBroker, device_id: str) -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
device_id = "{device_id}"
server_key_file = "{pki.signing_pub}"
data_dir = "{tmp_path / "data"}"
telemetry_interval = 60

[broker]
host = "{broker.host}"
port = {broker.port}
keepalive = 5

[tls]
ca_file = "{pki.ca_cert}"
cert_file = "{pki.device_cert(device_id)}"
key_file = "{pki.device_key(device_id)}"

[reconnect]
initial = 0.1
max = 1
"""
    )
    return config


async def _spawn(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleetcare.cli",
        "agent",
        "run",
        "--config",
        str(config),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_agent_last_will_marks_device_offline_when_its_process_dies(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device_id = unique_device(pki, "proc")
    config = _write_config(tmp_path, pki, broker, device_id)
    async with asyncio.timeout(30), ServerSide(broker, pki, device_id) as server:
        proc = await _spawn(config)
        try:
            birth = await server.wait_for(lambda m: isinstance(m, Status) and m.online)
            await server.wait_for(lambda m: isinstance(m, Inventory))
            proc.kill()  # SIGKILL: no goodbye, the TCP connection just dies
            await proc.wait()
            will = await server.wait_for(lambda m: isinstance(m, Status) and not m.online)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert will.reason == "connection lost"
    assert will.ts <= birth.ts  # the will was written at connect time
    # A server that subscribes later finds the device offline (retained).
    async with asyncio.timeout(10), ServerSide(broker, pki, device_id) as late:
        retained = await late.wait_for(lambda m: isinstance(m, Status))
    assert not retained.online


async def test_agent_process_stops_cleanly_on_sigterm_saying_goodbye(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device_id = unique_device(pki, "proc")
    config = _write_config(tmp_path, pki, broker, device_id)
    async with asyncio.timeout(30), ServerSide(broker, pki, device_id) as server:
        proc = await _spawn(config)
        try:
            await server.wait_for(lambda m: isinstance(m, Event) and m.event == "agent.started")
            await server.wait_for(lambda m: isinstance(m, Status) and m.online)
            proc.send_signal(signal.SIGTERM)
            assert proc.stderr is not None
            stderr = (await proc.stderr.read()).decode()
            assert await proc.wait() == 0, stderr
            goodbye = await server.wait_for(lambda m: isinstance(m, Status) and not m.online)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert goodbye.reason == "agent stopped"
    assert f"agent[{device_id}] stopped" in stderr


async def test_agent_process_exits_3_when_its_certificate_is_revoked(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker
) -> None:
    from certs import revoke_device  # noqa: PLC0415

    device_id = unique_device(pki, "proc")
    revoke_device(pki, device_id)
    broker.reload()
    config = _write_config(tmp_path, pki, broker, device_id)
    config.write_text(config.read_text().replace("keepalive = 5", "keepalive = 5\nconnect_timeout = 3"))
    async with asyncio.timeout(30):
        proc = await _spawn(config)
        try:
            assert proc.stderr is not None
            stderr = (await proc.stderr.read()).decode()
            assert await proc.wait() == 3, stderr
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert "CERTIFICATE_REVOKED" in stderr
    assert "stopping (reconnect.on_fatal = stop)" in stderr

"""Chaos with real processes and ``kill -9`` (issue 13): nothing acknowledged is lost, nothing is
doubled, every message counted in a :class:`tests.chaos.counts.Ledger` that prints its line.

1. The broker is SIGKILLed and stays down DOWN_SECONDS (60 s, the issue's figure) while 100
   agents (two fleet processes, tests/chaos/support_processes.py) publish 1,000 msg/s in total
   to a server process; then it restarts and every outbox drains into the database.
2. A real agent process, offline, writing its outbox back to back, is SIGKILLed at random
   moments, and twice kills itself inside an append (FLEETCARE_AGENT_CRASH_POINT=
   outbox_mid_write:<n>, agent/outbox.py): the SQLite file passes ``integrity_check`` every
   time, the seq never goes back, and once online every message the outbox committed is stored
   once.
3. The server process kills itself between a batch's commit and its acknowledgement
   (FLEETCARE_SERVER_CRASH_POINT=after_commit_before_ack, server/ingest/consumer.py), three
   times in a row, then runs clean: every message stored once, events, telemetry and incidents
   not doubled.

Each test prints its ledger line and its wall time (docs/testing.md, "Chaos: process kills").
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import protocol
from agent import AgentRuntime
from certs import PkiDir
from protocol import Severity, UpKind
from tests.chaos.counts import Ledger
from tests.chaos.support_processes import ChaosServer, stored_counts
from tests.support.broker import MosquittoBroker, unique_device
from tests.support.databases import sqlite_url
from tests.support.e2e import PublishLog, agent_settings
from tests.support.equipment import FakePlugin
from tests.support.server import server_settings
from tests.support.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVER_CRASH = {"FLEETCARE_SERVER_CRASH_POINT": "after_commit_before_ack"}
INCIDENTS = {"fault_debounce": 0.0, "sweep_interval": 0.2}


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    """One migrated SQLite file: the process scenarios that are about the agent or the broker
    run on one backend (scenario 3, about the server's commit, runs on both)."""
    from server.db import run_migrations  # noqa: PLC0415

    url = sqlite_url(tmp_path / "fleetcare.db")
    run_migrations(url)
    return url


@pytest.fixture
def stopwatch() -> Iterator[list[float]]:
    started = time.monotonic()
    marks: list[float] = [started]
    yield marks
    print(f"wall time {time.monotonic() - started:.1f} s")


def _samples(payload: bytes) -> int:
    telemetry = protocol.decode(UpKind.TELEMETRY, payload)
    assert isinstance(telemetry, protocol.Telemetry)
    return len(telemetry.samples)


def _ingest_duplicates(log: str) -> int:
    """The ``duplicates`` of the server's last ``ingest stopped`` line (its graceful stop)."""
    found = re.findall(r"ingest stopped: .*?'duplicates': (\d+)", log)
    return int(found[-1]) if found else -1


# -- 3. the server killed between the commit and the acknowledgement -----------------------------


@pytest.mark.timeout(150)
async def test_server_killed_between_commit_and_ack_stores_everything_once(
    db_url: str, pki: PkiDir, broker: MosquittoBroker, tmp_path: Path, stopwatch: list[float]
) -> None:
    ticks, faults, crashes = 300, 10, 3
    device_id = unique_device(pki, "chaos-srv")
    settings = server_settings(
        db_url,
        pki=pki,
        broker=broker,
        incidents=INCIDENTS,
        ingest={"batch_interval": 0.02, "batch_size": 64},
    )
    workdir = tmp_path / "server"
    first = ChaosServer(settings, workdir)
    await asyncio.to_thread(first.start)  # the server's persistent session at the broker
    assert await asyncio.to_thread(first.kill) == -9

    # A known set of messages, all acknowledged by the broker and held for the server's session.
    plugin = FakePlugin("e2e", actions=["record"])
    agent_conf = agent_settings(tmp_path, pki, broker, device_id, telemetry_interval=0.2)
    async with asyncio.timeout(60), AgentRuntime(agent_conf, plugins=[plugin]) as agent:
        log = PublishLog.attach(agent)
        await agent.wait_connected()
        await plugin.running.wait()
        for i in range(ticks):
            plugin.emit("chaos.tick", data={"n": i})
            if i % (ticks // faults) == 0:
                code = f"CRASH-{i // (ticks // faults)}"
                plugin.emit("fault.raised", code=code, severity=Severity.ERROR, data={"effect": "down"})
                plugin.emit("fault.cleared", code=code)
        await asyncio.sleep(0.5)  # a few telemetry batches too
        await agent.drained()
    await asyncio.sleep(0.2)

    stored_at_crash: list[int] = []
    for _ in range(crashes):
        crashing = ChaosServer(settings, workdir, env=SERVER_CRASH)
        await asyncio.to_thread(crashing.start, "exit")
        code = await asyncio.to_thread(crashing.wait_exit, 30)
        assert code == -signal.SIGKILL, crashing.log_tail()
        assert "crash point after_commit_before_ack reached" in crashing.log_tail(400)
        stored_at_crash.append((await stored_counts(db_url, [device_id])).stored)
    assert stored_at_crash[0] > 0, "the crashing server committed nothing: the crash point never ran"

    clean = ChaosServer(settings, workdir)
    await asyncio.to_thread(clean.start)
    try:
        await eventually(
            lambda: _all_stored(db_url, device_id, log.acked),
            timeout=60,
            what="every published message stored",
        )
        await asyncio.sleep(0.5)  # redeliveries still in flight would show up as doubles
    finally:
        assert await asyncio.to_thread(clean.stop) in (0, -15), clean.log_tail()
    counts = await stored_counts(db_url, [device_id])

    published = log.published()
    events = [e for e in published if e.kind is UpKind.EVENT]
    samples = sum(_samples(e.payload) for e in published if e.kind is UpKind.TELEMETRY)
    fault_codes = {f"CRASH-{n}" for n in range(faults)}
    incidents = {code: n for (_, code), n in counts.incidents.items() if code in fault_codes}
    doubled = counts.duplicate_rows()
    doubled["telemetry"] = max(0, counts.telemetry_rows[device_id] - samples)
    doubled["incidents"] = sum(n - 1 for n in incidents.values() if n > 1)

    ledger = Ledger("server kill -9 between commit and ack")
    ledger.sent = len(log.queued)
    ledger.acknowledged = len(log.acked)
    ledger.stored = len(counts.message_seqs[device_id] & log.acked)
    ledger.duplicates = sum(doubled.values())
    ledger.notes["crashes"] = crashes
    ledger.notes["stored at each crash"] = stored_at_crash
    ledger.notes["redeliveries seen as duplicates by the last server"] = _ingest_duplicates(
        clean.log_tail(2000)
    )
    ledger.notes["incidents"] = sum(incidents.values())
    ledger.check()
    assert len(counts.event_rows[device_id]) == len(events)
    assert counts.telemetry_rows[device_id] == samples
    assert incidents == dict.fromkeys(fault_codes, 1), incidents
    assert "Traceback" not in clean.log_tail(2000), clean.log_tail(2000)


async def _all_stored(db_url: str, device_id: str, acked: set[int]) -> bool:
    return acked <= (await stored_counts(db_url, [device_id])).message_seqs[device_id]

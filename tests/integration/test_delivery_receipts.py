"""Delivery receipts: what the broker acknowledged and then lost on a ``kill -9`` still arrives.

The deterministic reproduction: the server is stopped (its persistent session and subscription
were saved by the broker), the agent publishes events and gets their PUBACKs — the broker holds
them in memory for the server's session — and the broker is SIGKILLed before any save. After its
restart the server's session is back without them. Receipts off (the server sends none and the
agent has waited ``outbox_unconfirmed_max_age`` for a first receipt, so it forgets on PUBACK, as
before receipts): they are lost. Receipts on: the agent still has them
(sent, unconfirmed), publishes them again after the reconnection, and everything is stored once —
events, telemetry rows, nothing doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent import AgentRuntime
from certs import PkiDir
from protocol import Severity
from server.db import run_migrations
from tests.chaos.support_processes import SteadyBroker, kill_broker
from tests.support.broker import find_mosquitto, unique_device
from tests.support.databases import sqlite_url
from tests.support.e2e import DatabaseView, PublishLog, agent_settings, outbox_next_seq
from tests.support.equipment import FakePlugin
from tests.support.server import connected_server, server_settings
from tests.support.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

EVENTS = 20


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path / "fleetcare.db")
    run_migrations(url)
    return url


@pytest.fixture
def steady_broker(pki: PkiDir, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Killed and restarted on its port: one no reconnect attempt can take meanwhile."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not found (`make test` installs it; or apt-get install mosquitto)")
    with SteadyBroker(pki, tmp_path_factory.mktemp("broker")) as running:
        yield running


@pytest.mark.parametrize("receipts", [False, True], ids=["receipts-off", "receipts-on"])
async def test_messages_the_broker_acknowledged_and_lost_in_a_kill_9_are_published_again(
    receipts: bool, sqlite_db: str, pki: PkiDir, steady_broker: SteadyBroker, tmp_path: Path
) -> None:
    broker = steady_broker
    device_id = unique_device(pki, "rcpt")
    # Receipts off: an old server, met after the agent's first outbox_unconfirmed_max_age without
    # any receipt (1 s here, an hour by default) — only then does a PUBACK forget the message.
    waiting = {} if receipts else {"outbox_unconfirmed_max_age": 1.0}
    settings = agent_settings(tmp_path, pki, broker, device_id, telemetry_interval=3600, **waiting)
    server = server_settings(
        sqlite_db,
        pki=pki,
        broker=broker,
        client_id=f"fleetcare-rcpt-{uuid.uuid4().hex[:8]}",  # the same session across both runs
        mqtt={"shared_group": None},  # Mosquitto 2.0 persists only plain subscriptions
        ingest={"batch_interval": 0.02, "receipts": receipts, "receipt_interval": 0.1},
    )
    plugin = FakePlugin("rcpt", actions=["record"])
    async with asyncio.timeout(80), DatabaseView(sqlite_db) as db, contextlib.AsyncExitStack() as stack:
        async with connected_server(server) as (_client, runtime):  # subscribed before the agent
            agent = await stack.enter_async_context(AgentRuntime(settings, plugins=[plugin]))
            log = PublishLog.attach(agent)
            await agent.wait_connected()
            await plugin.running.wait()
            await eventually(lambda: _stored(db, device_id, log.acked), what="the start-up messages stored")
            if receipts:
                await eventually(lambda: agent.outbox.confirming, what="the first receipt")
                await eventually(lambda: agent.outbox.unconfirmed() == 0, what="everything confirmed")
            await asyncio.to_thread(broker.stop)  # a clean stop saves the server's session
            await asyncio.to_thread(broker.start)
            assert runtime.link is not None
            await eventually(lambda: runtime.link is not None and runtime.link.connected, what="server back")
            await eventually(lambda: agent.link.connections == 2, what="agent back")
            await eventually(lambda: _stored(db, device_id, log.acked), what="the birth status stored")
            if receipts:
                await eventually(lambda: agent.outbox.unconfirmed() == 0, what="the birth confirmed")
        # the server is gone; its session at the broker queues in memory
        if not receipts:
            await asyncio.sleep(1.2)  # past the wait for a first receipt: PUBACKs forget from now on
        before = set(log.acked)
        kept_before = agent.outbox.unconfirmed()  # receipts off: the start-up ones, still waiting
        for i in range(EVENTS):
            plugin.emit(
                "fault.raised", code=f"HELD-{i}", severity=Severity.ERROR, detail="held by the broker"
            )
        await agent.drained()  # every event acknowledged by the broker
        held = log.acked - before
        assert len(held) == EVENTS
        assert agent.outbox.unconfirmed() == (EVENTS if receipts else kept_before)  # off: forgotten

        await asyncio.to_thread(kill_broker, broker)
        await asyncio.to_thread(broker.start)
        await eventually(lambda: agent.link.connections == 3, what="agent reconnected")
        await agent.drained()  # with receipts: the unconfirmed ones published again
        async with connected_server(server) as (_client, runtime):
            await eventually(lambda: runtime.stats.received > 0, what="the server's backlog")
            if receipts:
                await eventually(lambda: agent.outbox.unconfirmed() == 0, what="everything confirmed")
                await stack.aclose()  # the agent's goodbye status, stored too
                await eventually(lambda: _stored(db, device_id, log.acked), what="every message stored")
            else:
                await asyncio.sleep(1.0)  # what the broker still has for the server has arrived
            stats = runtime.stats.snapshot()
        rows = await db.rows(device_id)

    lost = held - set(rows.message_seqs)
    print(
        f"\nreceipts {'on' if receipts else 'off'}: {len(held)} acknowledged while the server was down, {len(lost)} lost; ingest {stats}"
    )
    if not receipts:
        assert lost == held, "the reproduction no longer loses: the broker saved them after all?"
        return
    log.assert_stored_exactly_once(rows, next_seq=outbox_next_seq(settings))
    assert stats["receipts_sent"] > 0


async def _stored(db: DatabaseView, device_id: str, seqs: set[int]) -> bool:
    return bool(seqs) and seqs <= set((await db.rows(device_id)).message_seqs)

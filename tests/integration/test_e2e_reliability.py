"""End to end, nothing lost and nothing doubled while parts of the system restart.

- the agent restarts while the broker is down: its queued events survive in the disk outbox;
- the server is killed (SIGKILL) or stopped (SIGTERM) while the agent keeps publishing;
- the broker restarts (persistence on) while agent and server run.

"Exactly once" is checked against what the agent itself published: :class:`PublishLog` records
every seq the agent queued and every seq the broker acknowledged, and the server's ``messages``
table (one row per ``(device_id, seq)``), event rows and telemetry rows must match it — no
message missing, none stored twice, and no seq unaccounted for up to the agent's counter.

Where the broker restarts, the server subscribes without ``$share``: Mosquitto 2.0 does not
persist shared subscriptions, so after a restart messages published before the server has
subscribed again are dropped (pinned by ``test_e2e_server_subscription_survives_a_broker_restart``).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from agent import AgentRuntime
from certs import PkiDir
from protocol import Severity
from tests.support.broker import MosquittoBroker, unique_device
from tests.support.e2e import DatabaseView, PublishLog, agent_settings, fleet_server, outbox_next_seq
from tests.support.equipment import FakePlugin
from tests.support.server import ServerProcess, server_settings
from tests.support.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PLAIN = {"shared_group": None}
"""The server's subscription without ``$share``: the one Mosquitto keeps across its restarts."""


async def all_stored(db: DatabaseView, device_id: str, log: PublishLog, timeout: float = 30) -> None:
    missing: dict[int, str] = {}

    async def done() -> bool:
        stored = set((await db.rows(device_id)).message_seqs)
        missing.clear()
        missing.update({seq: log.queued[seq].kind.value for seq in sorted(log.acked - stored)})
        return not missing

    try:
        await eventually(done, timeout=timeout, what="every published message stored")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; published but not stored (seq: kind): {missing}") from None


async def published_more(log: PublishLog, count: int) -> None:
    """Until the broker acknowledged ``count`` more of the agent's messages."""
    target = len(log.acked) + count
    await eventually(lambda: len(log.acked) >= target, what=f"{target} messages published")


async def test_e2e_agent_restart_while_the_broker_is_down_loses_no_queued_event(
    db_url: str, pki: PkiDir, broker: MosquittoBroker, tmp_path: Path
) -> None:
    count = 25
    device_id = unique_device(pki, "e2e-arst")
    settings = agent_settings(tmp_path, pki, broker, device_id, telemetry_interval=1.0)
    async with asyncio.timeout(50), fleet_server(db_url, pki, broker, mqtt=PLAIN) as fleet:
        plugin = FakePlugin("e2e", actions=["record"])
        async with AgentRuntime(settings, plugins=[plugin]) as first:
            await first.wait_connected()
            await eventually(lambda: fleet.device(device_id), what="device registered")
            await plugin.running.wait()
            await asyncio.to_thread(broker.stop)
            await first.link.wait_disconnected()
            for i in range(count):
                plugin.emit("fault.raised", code=f"OUTAGE-{i}", severity=Severity.ERROR, detail="queued")
            assert first.outbox_depth() >= count
        # the agent is gone; its queue is on disk
        async with AgentRuntime(settings, plugins=[FakePlugin("e2e", actions=["record"])]) as second:
            assert second.outbox_depth() >= count
            await asyncio.to_thread(broker.start)
            await second.wait_connected()

            async def arrived() -> dict[str, object] | None:
                page = await fleet.events(device_id, type="fault.raised", limit=1000)
                return page if page["total"] >= count else None

            await eventually(arrived, what=f"{count} queued events stored")
            await second.drained()
        page = await fleet.events(device_id, type="fault.raised", limit=1000)
        stats = await fleet.ingest_stats()

    codes = sorted(e["code"] for e in page["items"])
    assert page["total"] == count
    assert codes == sorted(f"OUTAGE-{i}" for i in range(count))  # each exactly once
    assert len({e["seq"] for e in page["items"]}) == count
    assert stats["malformed_total"] == 0


@pytest.mark.parametrize("how", ["sigkill", "graceful"])
async def test_e2e_server_restart_while_the_agent_publishes_stores_every_message_once(
    how: str, db_url: str, pki: PkiDir, broker: MosquittoBroker, tmp_path: Path
) -> None:
    device_id = unique_device(pki, "e2e-srst")
    settings = agent_settings(tmp_path, pki, broker, device_id, telemetry_interval=0.1)
    server = ServerProcess(server_settings(db_url, pki=pki, broker=broker), tmp_path / "server")
    await asyncio.to_thread(server.start)  # creates the server's persistent session at the broker
    plugin = FakePlugin("e2e", actions=["record"])
    try:
        async with asyncio.timeout(50), DatabaseView(db_url) as db:
            async with AgentRuntime(settings, plugins=[plugin]) as agent:
                log = PublishLog.attach(agent)
                await agent.wait_connected()
                await plugin.running.wait()
                await eventually(
                    lambda: _count(db, device_id, 5), what="the server is storing the agent's messages"
                )
                if how == "sigkill":
                    assert await asyncio.to_thread(server.kill) == -9
                else:
                    assert await asyncio.to_thread(server.stop) in (0, -15), server.log_tail()
                for i in range(10):
                    plugin.emit("fault.raised", code=f"GAP-{i}", severity=Severity.ERROR)
                await published_more(log, 20)  # the broker holds these for the server's session
                await asyncio.to_thread(server.start)
                await published_more(log, 10)
            assert agent.link.connections == 1  # the agent never noticed
            await all_stored(db, device_id, log)
            rows = await db.rows(device_id)
    finally:
        await asyncio.to_thread(server.stop)

    log.assert_stored_exactly_once(rows, next_seq=outbox_next_seq(settings))
    assert set(rows.message_seqs) == log.acked  # no reconnection, so no last will either
    gap_events = [e for e in log.published() if b'"GAP-' in e.payload]
    assert len(gap_events) == 10
    assert "Traceback" not in server.log_tail(400), server.log_tail(400)


async def test_e2e_broker_restart_while_agent_and_server_run_loses_and_doubles_nothing(
    db_url: str, pki: PkiDir, broker: MosquittoBroker, tmp_path: Path
) -> None:
    device_id = unique_device(pki, "e2e-brst")
    settings = agent_settings(tmp_path, pki, broker, device_id, telemetry_interval=0.1)
    plugin = FakePlugin("e2e", actions=["record"])
    async with (
        asyncio.timeout(50),
        fleet_server(db_url, pki, broker, mqtt=PLAIN) as fleet,
        DatabaseView(db_url) as db,
    ):
        async with AgentRuntime(settings, plugins=[plugin]) as agent:
            log = PublishLog.attach(agent)
            await agent.wait_connected()
            await plugin.running.wait()
            await eventually(
                lambda: _count(db, device_id, 5), what="the server is storing the agent's messages"
            )
            await asyncio.to_thread(broker.stop)
            await agent.link.wait_disconnected()
            for i in range(10):
                plugin.emit("fault.raised", code=f"DOWN-{i}", severity=Severity.ERROR)
            await eventually(lambda: agent.outbox_depth() >= 20, what="telemetry queued during the outage")
            await asyncio.to_thread(broker.start)
            await agent.wait_connected()
            assert fleet.runtime.link is not None
            await fleet.runtime.link.wait_connected()
            await published_more(log, 30)
            await agent.drained()
        await all_stored(db, device_id, log)
        rows = await db.rows(device_id)
        stats = await fleet.ingest_stats()

    log.assert_stored_exactly_once(rows, next_seq=outbox_next_seq(settings))
    assert agent.link.connections == 2
    assert len([e for e in log.published() if b'"DOWN-' in e.payload]) == 10
    assert stats["malformed_total"] == 0
    assert fleet.runtime.link.connects >= 2


@pytest.mark.parametrize(
    "shared_group",
    [
        pytest.param(None, id="plain"),
        pytest.param(
            "fleetcare",
            id="shared",
            marks=pytest.mark.xfail(
                strict=True,
                raises=AssertionError,
                reason="Mosquitto 2.0 does not persist shared subscriptions: after a broker restart, "
                "device messages published before the server subscribes again are dropped",
            ),
        ),
    ],
)
async def test_e2e_server_subscription_survives_a_broker_restart(
    shared_group: str | None, db_url: str, pki: PkiDir, broker: MosquittoBroker, tmp_path: Path
) -> None:
    """Server and broker restart together (say, the host rebooted); the agent is back first."""
    device_id = unique_device(pki, "e2e-sub")
    settings = agent_settings(tmp_path, pki, broker, device_id, telemetry_interval=60)
    mqtt = {"shared_group": shared_group, "client_id": f"fleetcare-e2e-{uuid.uuid4().hex[:8]}"}
    plugin = FakePlugin("e2e", actions=["record"])
    async with asyncio.timeout(40), AgentRuntime(settings, plugins=[plugin]) as agent:
        await plugin.running.wait()
        async with fleet_server(db_url, pki, broker, mqtt=mqtt) as fleet:  # creates its session
            await agent.wait_connected()
            await eventually(lambda: fleet.device(device_id), what="device registered")
        # the server is down, its persistent session (and subscription) kept by the broker
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(broker.start)
        await agent.wait_connected()
        plugin.emit("fault.raised", code="WHILE-SERVER-DOWN", severity=Severity.ERROR)
        await agent.drained()  # the broker has it: queued for the server's session, or dropped
        async with fleet_server(db_url, pki, broker, mqtt=mqtt) as fleet:
            plugin.emit("fault.raised", code="SENTINEL", severity=Severity.ERROR)

            async def codes() -> set[str] | None:
                page = await fleet.events(device_id, type="fault.raised")
                found = {e["code"] for e in page["items"]}
                return found if "SENTINEL" in found else None

            # Queued messages are delivered before new ones, and ingested in order: once the
            # sentinel is stored, the earlier message is stored too — or was lost.
            stored = await eventually(codes, what="the sentinel event stored")
    assert "WHILE-SERVER-DOWN" in stored, (
        "lost: published after the broker restart, before the server was back"
    )


async def _count(db: DatabaseView, device_id: str, at_least: int) -> bool:
    return len((await db.rows(device_id)).message_seqs) >= at_least

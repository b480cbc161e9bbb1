"""The runtime without a broker (plaintext to a closed port): everything lands in the outbox; and
its publishing to a real broker (the last test)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent import ActionConflict, AgentRuntime, DataDirInUse, FatalLinkError
from agent.plugin import ActionContext, ActionResult, ActionSpec, EventSink
from certs import PkiDir
from protocol import (
    CommandSigner,
    EquipmentState,
    Event,
    Inventory,
    Reply,
    ReplyType,
    Status,
    Telemetry,
    UpMessage,
    decode_uplink,
    encode,
)
from tests.agent.support import FakePlugin, ManualClock, ServerSide, device_settings, make_settings
from tests.support.broker import MosquittoBroker, unique_device
from tests.support.waiting import eventually


def _messages(runtime: AgentRuntime) -> list[UpMessage]:
    return [decode_uplink(e.topic, e.payload) for e in runtime.outbox.pending(10_000)]


def _of(runtime: AgentRuntime, kind: type[Any]) -> list[Any]:
    return [m for m in _messages(runtime) if isinstance(m, kind)]


async def test_runtime_queues_started_event_inventory_and_telemetry_while_offline(
    tmp_path: Path, server_key_file: Path
) -> None:
    plugin = FakePlugin()
    settings = make_settings(tmp_path, server_key_file=server_key_file, site="Ward 3")
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[plugin]) as runtime:
        await plugin.running.wait()
        messages = _messages(runtime)
    started, inventory, telemetry = messages[0], messages[1], messages[2]
    assert isinstance(started, Event)
    assert started.event == "agent.started"
    assert started.seq == 0
    assert isinstance(inventory, Inventory)
    assert inventory.seq == 1
    assert inventory.equipment.vendor == "Acme"
    assert inventory.site == "Ward 3"
    assert inventory.agent.plugins == ["fake"]
    assert "fake.touch" in inventory.agent.actions
    assert "ping" in inventory.agent.actions
    assert isinstance(telemetry, Telemetry)
    values = {s.metric: s.value for s in telemetry.samples}
    assert values["fake.temperature.celsius"] == 21.5
    assert "system.cpu.percent" not in values  # collect_system_metrics=False


async def test_runtime_collects_system_metrics_when_enabled(tmp_path: Path, server_key_file: Path) -> None:
    settings = make_settings(tmp_path, server_key_file=server_key_file, collect_system_metrics=True)
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[]) as runtime:
        values = await runtime._metrics_now()
    for name in (
        "system.cpu.percent",
        "system.memory.percent",
        "system.memory.used_bytes",
        "system.disk.percent",
    ):
        assert name in values
    assert values["system.uptime.seconds"] > 0


async def test_runtime_sends_telemetry_every_interval_of_its_clock(
    tmp_path: Path, server_key_file: Path
) -> None:
    clock = ManualClock()
    settings = make_settings(tmp_path, server_key_file=server_key_file, telemetry_interval=30)
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[FakePlugin()], clock=clock) as runtime:
        await clock.sleeping.wait()
        assert len(_of(runtime, Telemetry)) == 1
        await clock.advance(29)
        assert len(_of(runtime, Telemetry)) == 1
        await clock.advance(1)
        batches = _of(runtime, Telemetry)
    assert len(batches) == 2
    assert batches[1].ts - batches[0].ts == timedelta(seconds=30)


async def test_runtime_telemetry_keeps_its_schedule_when_woken_late(
    tmp_path: Path, server_key_file: Path
) -> None:
    """A late wake-up (a busy event loop) does not push every later batch back; a whole interval
    late, the schedule restarts from then instead of catching up with a burst."""
    clock = ManualClock()
    settings = make_settings(tmp_path, server_key_file=server_key_file, telemetry_interval=30)
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[FakePlugin()], clock=clock) as runtime:
        await clock.sleeping.wait()
        await clock.advance(42)  # due at 30, woken 12 s late
        assert len(_of(runtime, Telemetry)) == 2
        await clock.advance(17)  # 59 s: the next one is due at 60, not 72
        assert len(_of(runtime, Telemetry)) == 2
        await clock.advance(1)
        assert len(_of(runtime, Telemetry)) == 3
        await clock.advance(75)  # due at 90, woken at 135: more than an interval late
        assert len(_of(runtime, Telemetry)) == 4  # one batch, no burst
        await clock.advance(29)
        assert len(_of(runtime, Telemetry)) == 4
        await clock.advance(1)  # 165 = 135 + 30
        batches = _of(runtime, Telemetry)
    assert [(b.ts - batches[0].ts).total_seconds() for b in batches] == [0, 42, 60, 135, 165]


async def test_runtime_set_state_queues_retained_status_and_state_changed_once(
    tmp_path: Path, server_key_file: Path
) -> None:
    plugin = FakePlugin()
    settings = make_settings(tmp_path, server_key_file=server_key_file)
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[plugin]) as runtime:
        await plugin.running.wait()
        assert plugin.sink is not None
        plugin.sink.set_state(EquipmentState.DOWN, "paper jam")
        plugin.sink.set_state(EquipmentState.DOWN, "paper jam")  # no change: nothing new
        plugin.sink.emit_event("fault.raised", code="E42", detail="jam in tray 2")
        statuses = _of(runtime, Status)
        changes = [e for e in _of(runtime, Event) if e.event == "state.changed"]
        faults = [e for e in _of(runtime, Event) if e.event == "fault.raised"]
        retained = [e.retain for e in runtime.outbox.pending(100) if e.kind.value == "status"]
    assert len(statuses) == 1
    assert statuses[0].online
    assert statuses[0].state is EquipmentState.DOWN
    assert retained == [True]
    assert len(changes) == 1
    assert changes[0].data == {"from": None, "to": "down", "reason": "paper jam"}
    assert faults[0].code == "E42"


async def test_runtime_rejected_command_is_answered_and_audited_and_never_executed(
    tmp_path: Path, server_key_file: Path, signer: CommandSigner
) -> None:
    plugin = FakePlugin()
    settings = make_settings(
        tmp_path, server_key_file=server_key_file, policy={"allowed_actions": ["fake.touch"]}
    )
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[plugin]) as runtime:
        now = runtime.command_clock.now()
        expired = signer.sign(
            device_id="dev-1",
            action="fake.touch",
            issuer="eve",
            ttl=timedelta(seconds=1),
            now=now - timedelta(hours=1),
        )
        good = signer.sign(device_id="dev-1", action="fake.touch", issuer="alice", ttl=timedelta(minutes=1))
        runtime.link.incoming.put_nowait(b"garbage")
        runtime.link.incoming.put_nowait(encode(expired))
        runtime.link.incoming.put_nowait(encode(good))
        await plugin.called.wait()  # commands are inspected in order: the rejections came first
        replies = _of(runtime, Reply)
        rejected_events = [e for e in _of(runtime, Event) if e.event == "command.rejected"]
    assert len(plugin.calls) == 1  # only the good one ran
    assert [(r.command_id, r.type, r.reason) for r in replies if r.type is ReplyType.REJECTED] == [
        (expired.id, ReplyType.REJECTED, "expired")
    ]
    assert [e.data["reason"] for e in rejected_events] == ["malformed", "expired"]
    assert rejected_events[1].data["command_id"] == expired.id
    assert rejected_events[1].data["issuer"] == "eve"
    assert rejected_events[1].data["action"] == "fake.touch"
    assert [r.type for r in replies if r.command_id == good.id][:2] == [ReplyType.ACCEPTED, ReplyType.RESULT]


async def test_runtime_agent_info_and_metrics_snapshot_answer(
    tmp_path: Path, server_key_file: Path, signer: CommandSigner
) -> None:
    plugin = FakePlugin()
    settings = make_settings(tmp_path, server_key_file=server_key_file)
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[plugin]) as runtime:
        info = signer.sign(device_id="dev-1", action="agent.info", issuer="alice", ttl=timedelta(minutes=1))
        snapshot = signer.sign(
            device_id="dev-1", action="metrics.snapshot", issuer="alice", ttl=timedelta(minutes=1)
        )
        done = {info.id: asyncio.Event(), snapshot.id: asyncio.Event()}
        original = runtime._reply

        def spy(command_id: str, type: ReplyType, **fields: Any) -> None:
            original(command_id, type, **fields)
            if type is ReplyType.RESULT:
                done[command_id].set()

        runtime.executor._send = spy
        runtime.link.incoming.put_nowait(encode(info))
        runtime.link.incoming.put_nowait(encode(snapshot))
        await asyncio.gather(*(e.wait() for e in done.values()))
        results = {r.command_id: r for r in _of(runtime, Reply) if r.type is ReplyType.RESULT}
    assert results[info.id].ok
    assert results[info.id].data["plugins"] == ["fake"]
    assert results[info.id].data["link"] in {"connecting", "backing_off"}
    assert results[snapshot.id].data["metrics"]["fake.temperature.celsius"] == 21.5


async def test_runtime_survives_a_crashing_plugin_and_reports_it(
    tmp_path: Path, server_key_file: Path
) -> None:
    class Crashing(FakePlugin):
        async def run(self, sink: EventSink) -> None:
            raise RuntimeError("driver lost the serial port")

    settings = make_settings(tmp_path, server_key_file=server_key_file)
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[Crashing()]) as runtime:
        while not [e for e in _of(runtime, Event) if e.event == "fault.raised"]:
            await asyncio.sleep(0)
        fault = next(e for e in _of(runtime, Event) if e.event == "fault.raised")
        assert runtime.link.state.value in {"connecting", "backing_off"}
    assert fault.code == "agent.plugin_failed"
    assert "serial port" in fault.detail


def test_runtime_refuses_a_plugin_action_that_collides_with_a_builtin(
    tmp_path: Path, server_key_file: Path
) -> None:
    async def handler(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        return ActionResult(ok=True)

    plugin = FakePlugin()
    plugin.extra_actions.append(ActionSpec("ping", handler))
    with pytest.raises(ActionConflict, match="'ping'"):
        AgentRuntime(make_settings(tmp_path, server_key_file=server_key_file), plugins=[plugin])


async def test_runtime_refuses_a_data_dir_held_by_another_agent(
    tmp_path: Path, server_key_file: Path
) -> None:
    settings = make_settings(tmp_path, server_key_file=server_key_file)
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[]):
        with pytest.raises(DataDirInUse):
            async with AgentRuntime(settings, plugins=[]):
                pass


async def test_runtime_keeps_queue_and_seq_across_restart(tmp_path: Path, server_key_file: Path) -> None:
    settings = make_settings(tmp_path, server_key_file=server_key_file)
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[]) as first:
        first.emit_event("fault.raised", code="E1")
        events_before = [m.seq for m in _of(first, Event)]
        last_before = max(m.seq for m in _messages(first))
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[]) as second:
        messages = _messages(second)
    events_after = [m.seq for m in messages if isinstance(m, Event)]
    assert events_after[: len(events_before)] == events_before  # still queued, same seqs
    assert [m.seq for m in messages] == sorted(m.seq for m in messages)
    assert min(m.seq for m in messages if m.seq not in events_before) > last_before
    inventories = [m for m in messages if isinstance(m, Inventory)]
    assert len(inventories) == 1  # the new inventory superseded the queued one


async def test_runtime_leaves_no_task_behind(tmp_path: Path, server_key_file: Path) -> None:
    before = asyncio.all_tasks()
    settings = make_settings(tmp_path, server_key_file=server_key_file)
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[FakePlugin()]) as runtime:
        names = {t.get_name() for t in asyncio.all_tasks() - before}
        assert {"agent[dev-1].link", "agent[dev-1].publisher", "agent[dev-1].telemetry"} <= names
        assert {"agent[dev-1].commands", "agent[dev-1].plugin[fake]"} <= names
        runtime.stop()
    assert asyncio.all_tasks() == before


async def test_runtime_raises_fatal_link_error_unwrapped(tmp_path: Path, server_key_file: Path) -> None:
    tls = {
        "ca_file": tmp_path / "no-ca.crt",
        "cert_file": tmp_path / "no.crt",
        "key_file": tmp_path / "no.key",
    }
    settings = make_settings(tmp_path, server_key_file=server_key_file, tls=tls)
    with pytest.raises(FatalLinkError, match="cannot load the TLS files"):
        async with asyncio.timeout(10), AgentRuntime(settings, plugins=[]) as runtime:
            await runtime.wait_stopped()


async def test_runtime_rejects_config_with_unusable_server_key(tmp_path: Path) -> None:
    bad = tmp_path / "signing.pub"
    bad.write_text("not a key")
    from agent import AgentConfigError  # noqa: PLC0415

    with pytest.raises(AgentConfigError) as info:
        AgentRuntime(make_settings(tmp_path, server_key_file=bad), plugins=[])
    assert info.value.field == "server_key_file"


async def test_runtime_advertises_its_action_catalogue_with_policy_decisions(
    tmp_path: Path, server_key_file: Path
) -> None:
    plugin = FakePlugin(actions=["touch", "reboot"], disruptive=["reboot"])
    settings = make_settings(
        tmp_path,
        server_key_file=server_key_file,
        policy={
            "allowed_actions": ["ping", "fake.*"],
            "consent_actions": ["fake.reboot"],
            "forbidden_actions": ["logs.*"],
            "attended": True,
            "windows": [{"days": ["sat", "sun"], "start": "22:00", "end": "06:00", "tz": "Europe/Berlin"}],
        },
    )
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[plugin]) as runtime:
        inventory = _of(runtime, Inventory)[0]
    entries = {entry.name: entry for entry in inventory.agent.catalogue}
    assert inventory.agent.attended
    assert "session.consent" not in entries
    assert "command.cancel" not in entries
    assert set(entries) == set(runtime.actions) - {"session.consent", "command.cancel"}
    assert entries["ping"].policy.value == "allowed"
    assert entries["fake.touch"].policy.value == "allowed"
    assert entries["fake.touch"].source == "plugin 'fake'"
    reboot = entries["fake.reboot"]
    assert (reboot.policy.value, reboot.disruptive) == ("needs_consent", True)
    assert reboot.windows == ["sat,sun 22:00-06:00 Europe/Berlin"]
    assert entries["ping"].windows == []
    assert entries["logs.tail"].policy.value == "forbidden"
    assert entries["service.restart"].policy.value == "forbidden"
    assert entries["file.fetch"].args_schema["required"] == ["path"]
    assert entries["file.fetch"].timeout > 0


async def test_runtime_cancels_a_running_command_on_command_cancel(
    tmp_path: Path, server_key_file: Path, signer: CommandSigner
) -> None:
    plugin = FakePlugin()
    started = asyncio.Event()

    async def slow(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        started.set()
        await asyncio.sleep(3600)
        return ActionResult(ok=True)

    plugin.extra_actions.append(ActionSpec("fake.slow", slow, timeout=3600))
    settings = make_settings(
        tmp_path,
        server_key_file=server_key_file,
        policy={"allowed_actions": ["fake.slow"], "max_concurrent_actions": 1},
    )
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[plugin]) as runtime:
        long = signer.sign(device_id="dev-1", action="fake.slow", issuer="alice", ttl=timedelta(minutes=1))
        runtime.link.incoming.put_nowait(encode(long))
        await started.wait()
        cancel = signer.sign(
            device_id="dev-1",
            action="command.cancel",
            issuer="bob",
            ttl=timedelta(minutes=1),
            args={"command_id": long.id},
        )
        runtime.link.incoming.put_nowait(encode(cancel))  # not stuck behind the busy slot

        def terminal(command_id: str) -> list[Reply]:
            return [
                r
                for r in _of(runtime, Reply)
                if r.command_id == command_id and r.type in (ReplyType.RESULT, ReplyType.ERROR)
            ]

        while not (terminal(long.id) and terminal(cancel.id)):
            await asyncio.sleep(0.02)
        stopped, answered = terminal(long.id)[0], terminal(cancel.id)[0]
    assert (stopped.type, stopped.reason, stopped.output) == (
        ReplyType.ERROR,
        "Cancelled",
        "cancelled by bob",
    )
    assert answered.ok
    assert answered.data == {"command_id": long.id, "cancelled": True}


@pytest.mark.integration
async def test_runtime_publishes_a_backlog_in_windows_and_forgets_only_what_was_acknowledged(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker
) -> None:
    """A backlog larger than the publish window goes out in windows whose PUBACKs are recorded in
    one transaction each; after a restart nothing the server confirmed is sent again, nothing
    queued meanwhile is lost, and seqs go on."""
    device_id = unique_device(pki, "batch")
    settings = device_settings(tmp_path, pki, broker, device_id)
    async with asyncio.timeout(30), ServerSide(broker, pki, device_id, confirm=True) as server:
        async with AgentRuntime(settings, plugins=[]) as first:
            await first.wait_connected()
            await first.drained()
            for i in range(45):  # more than two windows of 20
                first.emit_event("fault.raised", code=f"E{i}")
            await first.drained()
            assert first.outbox_depth() == 0
            sent = await server.wait_count(lambda m: isinstance(m, Event) and m.event == "fault.raised", 45)
            await eventually(lambda: first.outbox.unconfirmed() == 0, what="the receipts applied")
        assert [m.code for m in sent] == [f"E{i}" for i in range(45)]
        offline = settings.model_copy(update={"broker": settings.broker.model_copy(update={"port": 1})})
        async with AgentRuntime(offline, plugins=[]) as second:
            second.emit_event("fault.raised", code="LATE")
            queued = [m for m in _messages(second) if isinstance(m, Event)]
        async with AgentRuntime(settings, plugins=[]) as third:
            await third.wait_connected()
            await third.drained()
            late = await server.wait_for(lambda m: isinstance(m, Event) and m.code == "LATE")
    resent = [m for m in server.messages(Event) if m.code in {f"E{i}" for i in range(45)}]
    assert len(resent) == 45  # none of the acknowledged ones came again
    assert late.seq in {m.seq for m in queued}
    assert min(m.seq for m in queued) > max(m.seq for m in sent)

"""The replay plan and the replica plugin, without broker or server (tests/integration/
test_replay_e2e.py runs them end to end)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from certs import PkiDir
from protocol import EquipmentState
from simulators.chiller import ChillerPlugin
from simulators.cli import app
from simulators.imaging import ImagingPlugin
from simulators.printer import PrinterPlugin
from simulators.replay import (
    RecordedEvent,
    Recording,
    ReplayError,
    ReplicaPlugin,
    StepKind,
    build_plan,
    machine_for,
    replica_id_for,
)
from tests.simulators.support import FakeClock, FakeSink
from tests.support.broker import free_port

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CRASH, PACS = "ACQ_SERVICE_CRASH", "PACS_UNREACHABLE"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(seconds: float, seq: int, type_: str, code: str | None = None, **data: Any) -> RecordedEvent:
    return RecordedEvent(ts=at(seconds), seq=seq, type=type_, code=code, severity="warning", data=data)


def recording(
    events: list[RecordedEvent],
    samples: list[tuple[datetime, str, float]] | None = None,
    *,
    plugins: list[str] | None = None,
    kind: str = "imaging",
) -> Recording:
    return Recording(
        device_id="clinic-xray-7",
        since=at(-60),
        until=at(3600),
        inventory={
            "equipment": {"kind": kind, "model": "XR-9"},
            "agent": {"plugins": ["sim-imaging"] if plugins is None else plugins},
            "config": {"telemetry_interval": 30},
        },
        events=events,
        samples=samples or [],
    )


SEQUENCE = [
    event(5, 1, "agent.started"),
    event(10, 2, "fault.raised", CRASH),
    event(10, 3, "state.changed", **{"from": "running", "to": "down"}),
    event(70, 4, "fault.raised", "VENDOR_SPECIFIC_42"),
    event(100, 5, "state.changed", **{"from": "down", "to": "maintenance"}),
    event(130, 6, "fault.cleared", CRASH, cleared_by="self"),
    event(140, 7, "consumable.low", "TONER_LOW_BLACK"),
]
SAMPLES = [
    (at(0), "imaging.tube.temperature.celsius", 30.0),
    (at(0), "imaging.exposures.total", 100.0),
    (at(30), "imaging.tube.temperature.celsius", 33.0),
]
KNOWN = [CRASH, PACS]


def test_the_plan_keeps_recorded_order_and_offsets_from_the_first_record() -> None:
    plan = build_plan(recording(SEQUENCE, SAMPLES), KNOWN)

    assert plan.origin == at(0)
    assert [(s.offset, s.kind, s.code) for s in plan.steps] == [
        (0.0, StepKind.METRICS, None),
        (10.0, StepKind.RAISE, CRASH),  # the replica's own machine derives "down" from it
        (30.0, StepKind.METRICS, None),
        (70.0, StepKind.EVENT, "VENDOR_SPECIFIC_42"),  # unknown to the model: re-emitted as recorded
        (100.0, StepKind.STATE, None),  # maintenance is not derived from faults: replayed
        (130.0, StepKind.CLEAR, CRASH),
        (140.0, StepKind.EVENT, "TONER_LOW_BLACK"),
    ]
    assert plan.steps[0].metrics == {
        "imaging.tube.temperature.celsius": 30.0,
        "imaging.exposures.total": 100.0,
    }
    assert plan.duration == 140.0
    assert [s.offset for s in plan.scaled(10).steps] == [0.0, 1.0, 3.0, 7.0, 10.0, 13.0, 14.0]


def test_keep_faults_leaves_the_recorded_clearings_to_a_fix() -> None:
    plan = build_plan(recording(SEQUENCE), KNOWN, keep_faults=True)

    assert plan.count(StepKind.CLEAR) == 0
    assert plan.skipped_clears == 1
    assert plan.count(StepKind.RAISE) == 1


def test_events_at_the_same_instant_keep_their_seq_order() -> None:
    events = [event(0, 9, "fault.cleared", PACS), event(0, 8, "fault.raised", PACS)]
    plan = build_plan(recording(events), KNOWN)
    assert [s.kind for s in plan.steps] == [StepKind.RAISE, StepKind.CLEAR]


def test_nothing_to_replay_is_refused() -> None:
    with pytest.raises(ReplayError, match="nothing to replay"):
        build_plan(recording([]), KNOWN)


def test_the_machine_matches_the_recorded_plugin_or_kind() -> None:
    clock = FakeClock()
    assert isinstance(machine_for(recording(SEQUENCE), "r", clock), ImagingPlugin)
    assert isinstance(machine_for(recording(SEQUENCE, plugins=["sim-chiller"]), "r", clock), ChillerPlugin)
    by_kind = machine_for(recording(SEQUENCE, plugins=["acme-driver"], kind="printer"), "r", clock)
    assert isinstance(by_kind, PrinterPlugin)
    assert by_kind.equipment_info().model == "XR-9"
    with pytest.raises(ReplayError, match=r"no simulated model.*printer, imaging, chiller"):
        machine_for(recording(SEQUENCE, plugins=["acme-driver"], kind="lathe"), "r", clock)


def test_replica_ids_stay_valid() -> None:
    assert replica_id_for("clinic-xray-7") == "clinic-xray-7-replica"
    long_id = "x" * 64
    assert replica_id_for(long_id) == "x" * 56 + "-replica"


async def test_the_replica_relives_the_plan_on_its_clock() -> None:
    clock = FakeClock(T0)
    machine = machine_for(recording(SEQUENCE), "clinic-xray-7-replica", clock)
    plan = build_plan(recording(SEQUENCE, SAMPLES), [spec.code for spec in machine.fault_catalogue()])
    replica = ReplicaPlugin(machine, plan, clock=clock, source="clinic-xray-7")
    sink = FakeSink()
    seen: list[tuple[float, str, str | None]] = []
    original_emit = sink.emit_event

    def emit(event: str, **fields: Any) -> None:
        seen.append(((clock.now() - T0).total_seconds(), event, fields.get("code")))
        original_emit(event, **fields)

    sink.emit_event = emit  # type: ignore[method-assign]
    await replica.run(sink)

    assert replica.done.is_set()
    assert seen == [
        (10.0, "fault.raised", CRASH),
        (70.0, "fault.raised", "VENDOR_SPECIFIC_42"),
        (130.0, "fault.cleared", CRASH),
        (140.0, "consumable.low", "TONER_LOW_BLACK"),
    ]
    assert [state for state, _ in sink.states] == [
        EquipmentState.RUNNING,
        EquipmentState.DOWN,
        EquipmentState.MAINTENANCE,
        EquipmentState.RUNNING,  # the crash cleared: the machine's own state again
    ]
    assert sink.named("consumable.low")[0]["data"]["replay_of"] == "clinic-xray-7"
    metrics = replica.read_metrics(clock.now())
    assert metrics["imaging.tube.temperature.celsius"] == 33.0  # the latest recorded value
    assert metrics["imaging.exposures.total"] == 100.0
    assert "imaging.pacs.reachable" in metrics  # the model's own for what was not recorded
    assert replica.progress().done == len(plan.steps)


async def test_a_replayed_fault_stays_for_the_remote_fix_with_keep_faults() -> None:
    clock = FakeClock(T0)
    machine = machine_for(recording(SEQUENCE), "r", clock)
    plan = build_plan(
        recording(SEQUENCE), [spec.code for spec in machine.fault_catalogue()], keep_faults=True
    )
    replica = ReplicaPlugin(machine, plan, clock=clock, source="clinic-xray-7")
    await replica.run(FakeSink())
    assert replica.progress().active_faults == (CRASH,)
    assert machine.state is EquipmentState.DOWN


def test_the_command_says_what_to_fix(pki: PkiDir) -> None:
    args = ["replay", "clinic-xray-7", "--from", "2026-03-02T09:00", "--to", "2026-03-02T10:00"]
    args += ["--pki", str(pki.root), "--url", f"http://127.0.0.1:{free_port()}"]
    runner = CliRunner()

    no_token = runner.invoke(app, args, env={"FLEETCARE_TOKEN": ""})
    assert no_token.exit_code == 2
    assert "no API token" in no_token.output

    unreachable = runner.invoke(app, [*args, "--token", "fct_x"])
    assert unreachable.exit_code == 1
    assert "cannot reach the server" in unreachable.output

    bad_time = runner.invoke(app, [*args[:3], "yesterday", *args[4:], "--token", "fct_x"])
    assert bad_time.exit_code == 2
    assert "expected ISO 8601" in bad_time.output

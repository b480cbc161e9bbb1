"""The printer on the shared simulated-machine base says exactly what it always said: its events
carry no catalogue fields, and it offers none of the catalogue machines' fix hooks (the
behaviours look for those by name and would then fix a printer differently)."""

from __future__ import annotations

from datetime import timedelta

from protocol import EquipmentState, Severity, format_ts
from simulators.catalogue import SimulatedEquipment, SimulatedMachine
from simulators.printer import PrinterPlugin
from tests.simulators.support import T0, FakeClock, FakeContext, FakeSink


def test_jam_events_read_as_they_always_did() -> None:
    clock = FakeClock()
    plugin, sink = PrinterPlugin("base-1", {"seed": 5, "jam_rate_per_hour": 0.0}, clock=clock), FakeSink()
    assert plugin.inject_fault("PAPER_JAM", sink)
    assert plugin.jam is not None
    where = plugin.jam.location
    clock.current += timedelta(seconds=40)
    assert plugin.clear_fault("PAPER_JAM")
    assert sink.events == [
        {
            "event": "fault.raised",
            "code": "PAPER_JAM",
            "severity": Severity.ERROR,
            "detail": f"Paper jam in the paper path: printing stopped ({where})",
            "data": {"effect": "down", "location": where, "jams_total": 1},
        },
        {
            "event": "fault.cleared",
            "code": "PAPER_JAM",
            "severity": Severity.INFO,
            "detail": f"Paper jam cleared at the printer ({where})",
            "data": {"location": where, "cleared_by": "customer"},
        },
    ]
    assert sink.states == [
        (EquipmentState.DOWN, f"paper jam ({where})"),
        (EquipmentState.RUNNING, "paper jam cleared"),
    ]


async def test_remote_clear_reads_as_it_always_did() -> None:
    clock = FakeClock()
    plugin, sink = PrinterPlugin("base-2", {"seed": 6, "jam_rate_per_hour": 0.0}, clock=clock), FakeSink()
    plugin.inject_fault("PAPER_JAM", sink)
    assert plugin.jam is not None
    where = plugin.jam.location
    clock.current += timedelta(seconds=12)
    ctx = FakeContext(clock)
    spec = next(a for a in plugin.actions() if a.name == "printer.clear_jam")
    result = await spec.handler({}, ctx)
    assert result.data == {
        "state": "running",
        "location": where,
        "jammed_since": format_ts(T0),
        "down_seconds": 12.0,
        "jams_total": 1,
    }
    assert sink.events[-1]["detail"] == f"Paper jam cleared remotely ({where})"
    assert sink.events[-1]["data"] == {
        "location": where,
        "cleared_by": "remote",
        "command_id": ctx.command_id,
    }


def test_the_printer_shares_the_base_but_not_the_catalogue_fix_hooks() -> None:
    plugin = PrinterPlugin("base-3", {"seed": 7})
    assert isinstance(plugin, SimulatedEquipment)
    assert not isinstance(plugin, SimulatedMachine)
    for hook in ("field_service", "attempt_guided_fix", "fault_models"):
        assert not hasattr(plugin, hook), hook

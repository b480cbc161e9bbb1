"""Chaos about time and presence (issue 13): real Mosquitto (mutual TLS), the real server in this
process (ingest, incident sweeper, API) and the real agent runtime, counting every message in a
:class:`tests.chaos.counts.Ledger` that prints its line and asserts lost == 0, duplicates == 0.

1. An agent offline for 24 simulated hours (its clock stepped, see simulators/clock.py), under
   and over its outbox cap: events are all kept, telemetry is dropped oldest first and counted.
2. Presence flapping: 20 real broker disconnects in well under a minute (the agent's TCP
   connection aborted, so the broker publishes its last will) open one offline incident, not
   twenty — or none when each absence is under the grace.
3. A device clock 2 h ahead and 2 h behind: no negative duration anywhere, and the KPI figures
   equal those of the same scenario run by a device with a correct clock.

Server timings (grace, flap window, debounce) are scaled down as in tests/integration, so each
scenario takes seconds; the ratios between them are what the scenarios are about.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import protocol
from agent import AgentRuntime
from agent.clock import SystemClock
from agent.outbox import read_stats
from agent.storage import database_path
from certs import PkiDir
from protocol import Severity, UpKind
from server.kpi import GroupBy, ReportSpec, compute_report, load_dataset, reference_report
from simulators.clock import EQUIPMENT, SteppedClock
from tests.chaos.counts import Ledger
from tests.chaos.support_time import LinkCutter, OffsetClock, negative_durations, row_counts, through
from tests.support.broker import MosquittoBroker, unique_device
from tests.support.e2e import PublishLog, agent_settings, fleet_server
from tests.support.equipment import FakePlugin
from tests.support.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RECONNECT = {"initial": 0.05, "max": 0.2, "stable_after": 30.0}
DAY = timedelta(hours=24)


def _samples(entry_payload: bytes) -> int:
    telemetry = protocol.decode(UpKind.TELEMETRY, entry_payload)
    assert isinstance(telemetry, protocol.Telemetry)
    return len(telemetry.samples)


def _ledger(
    scenario: str, log: PublishLog, stored: dict[int, str], *, dropped: int, duplicates: int
) -> Ledger:
    """sent: every message the agent queued; acknowledged: those its outbox kept for delivery
    (a retained status or inventory superseded by a newer one of its kind is replaced by design:
    noted, not acknowledged); stored: those of them in the server's database."""
    superseded = [
        seq
        for seq, entry in log.queued.items()
        if entry.kind in (UpKind.STATUS, UpKind.INVENTORY) and seq not in log.acked
    ]
    ledger = Ledger(scenario)
    ledger.sent = len(log.queued)
    ledger.acknowledged = len(log.queued) - len(superseded)
    ledger.stored = len(set(stored) & set(log.queued))
    ledger.dropped_by_design = dropped
    ledger.duplicates = duplicates
    ledger.notes["broker acks"] = len(log.acked)
    ledger.notes["superseded snapshots"] = len(superseded)
    ledger.notes["last wills stored"] = len(set(stored) & log.wills)
    return ledger


# -- 1. offline for 24 simulated hours ----------------------------------------------------------


@pytest.mark.parametrize(("cap", "over"), [(2000, False), (300, True)], ids=["under-cap", "over-cap"])
async def test_an_agent_offline_24_simulated_hours_keeps_events_and_drops_oldest_telemetry(
    tmp_path: Path, db_url: str, pki: PkiDir, broker: MosquittoBroker, cap: int, over: bool
) -> None:
    started = time.monotonic()
    device_id = unique_device(pki, "off24")
    plugin = FakePlugin("chaos", actions=())
    # the agent's clock starts 24 h back and is stepped through the day while it is offline, so
    # it is about right again (server clock) when it reconnects
    clock = SteppedClock(datetime.now(UTC) - DAY - timedelta(minutes=1))
    async with (
        fleet_server(db_url, pki, broker) as fleet,
        LinkCutter(broker.host, broker.port) as cutter,
    ):
        settings = through(
            agent_settings(
                tmp_path,
                pki,
                broker,
                device_id,
                telemetry_interval=60.0,  # 1440 batches in 24 h
                outbox_max_messages=cap,
                reconnect=RECONNECT,
            ),
            cutter,
        )
        async with AgentRuntime(
            settings, plugins=[plugin], clock=clock, command_clock=SystemClock()
        ) as agent:
            log = PublishLog.attach(agent)
            await agent.wait_connected()
            await plugin.running.wait()
            await eventually(lambda: clock.sleepers() >= 1, what="telemetry asleep on the stepped clock")
            await agent.drained()

            async def stored_so_far() -> bool:
                stored = (await row_counts(db_url, device_id)).messages
                return log.acked <= set(stored)

            await eventually(stored_so_far, what="start-up messages stored")
            before_cut = set(log.queued)

            # offline: the TCP connection dies; the broker publishes the last will
            await cutter.cut()
            await agent.link.wait_disconnected()

            async def will_stored() -> bool:
                return bool(set((await row_counts(db_url, device_id)).messages) & log.wills)

            await eventually(will_stored, what="last will stored (the server sees the agent offline)")

            end = clock.now() + DAY
            next_event = clock.now() + timedelta(minutes=30)
            ticks = 0
            while (due := clock.next_due()) is not None and due <= end:
                clock.advance_to(due)
                await clock.wake_due(EQUIPMENT)
                while next_event <= clock.now():  # an event every simulated hour
                    ticks += 1
                    plugin.emit(
                        "chaos.tick",
                        severity=Severity.WARNING if ticks % 6 == 0 else Severity.INFO,
                        detail=f"offline hour {ticks}",
                        data={"hour": ticks},
                    )
                    next_event += timedelta(hours=1)
            offline_queued = {seq: e for seq, e in log.queued.items() if seq not in before_cut}
            offline_telemetry = sorted(s for s, e in offline_queued.items() if e.kind is UpKind.TELEMETRY)
            offline_events = sorted(s for s, e in offline_queued.items() if e.kind is UpKind.EVENT)
            assert ticks == 24
            assert len(offline_events) == 24
            assert len(offline_telemetry) == 1440
            depth_offline = agent.outbox_depth()
            assert depth_offline <= cap

            # back: everything buffered is delivered
            await cutter.open()
            await agent.wait_connected()
            await agent.drained()
            dropped_live = agent.outbox.dropped_telemetry
        # the runtime is left: goodbye status sent (bounded by shutdown_grace), databases closed

        stats = read_stats(database_path(settings.data_dir))
        assert stats is not None
        dropped = stats.dropped_telemetry
        assert dropped == dropped_live

        async def all_acked_stored() -> bool:
            return log.acked <= set((await row_counts(db_url, device_id)).messages)

        await eventually(all_acked_stored, what="every acknowledged message stored")
        rows = await row_counts(db_url, device_id)
        ingest = await fleet.ingest_stats()

    stored = rows.messages
    queued_kinds = {seq: e.kind for seq, e in log.queued.items()}
    # nothing stored that the agent did not send (its last wills aside)
    assert set(stored) - set(log.queued) <= log.wills
    # every event kept
    events = sorted(s for s, k in queued_kinds.items() if k is UpKind.EVENT)
    assert [s for s in events if s not in stored] == []
    # telemetry: the agent's drop counter is exactly what is missing, and what survived is newest
    telemetry_sent = sorted(s for s, k in queued_kinds.items() if k is UpKind.TELEMETRY)
    telemetry_stored = [s for s in telemetry_sent if s in stored]
    assert dropped == len(telemetry_sent) - len(telemetry_stored)
    survived = [s for s in offline_telemetry if s in stored]
    assert survived == offline_telemetry[len(offline_telemetry) - len(survived) :], "not the newest"
    if over:
        assert dropped > 0
        assert len(survived) < len(offline_telemetry)
    else:
        assert dropped == 0
        assert survived == offline_telemetry
    # rows: one event row per event, one telemetry row per sample of a stored batch
    samples = sum(_samples(log.queued[s].payload) for s in telemetry_stored)
    assert rows.event_rows == len([s for s in events if s in stored])
    duplicates = (
        (rows.event_rows - rows.distinct_event_seqs)
        + max(0, rows.telemetry_rows - samples)
        + (rows.status_rows - rows.distinct_status_seqs)
    )
    assert rows.telemetry_rows >= samples, f"{rows.telemetry_rows} telemetry rows for {samples} samples"

    ledger = _ledger(
        f"offline 24 simulated h, cap {cap}", log, stored, dropped=dropped, duplicates=duplicates
    )
    ledger.notes["offline telemetry kept"] = f"{len(survived)}/{len(offline_telemetry)}"
    ledger.notes["events kept"] = f"{len([s for s in events if s in stored])}/{len(events)}"
    ledger.notes["outbox depth offline"] = depth_offline
    ledger.notes["ingest redeliveries"] = ingest["duplicates"]
    ledger.notes["wall s"] = round(time.monotonic() - started, 1)
    ledger.check()


# -- 2. presence flapping -----------------------------------------------------------------------

FLAPS = 20


@pytest.mark.parametrize(
    ("incidents", "away", "up", "expected"),
    [
        # each absence (~0.5 s) past the grace (0.3 s), each return shorter than the flap window
        ({"offline_grace": 0.3, "offline_flap_window": 3.0}, 0.4, 0.2, 1),
        # each absence (~0.2 s) under the grace (5 s): a link that flaps opens nothing
        ({"offline_grace": 5.0, "offline_flap_window": 3.0}, 0.1, 0.2, 0),
    ],
    ids=["past-grace", "under-grace"],
)
async def test_twenty_disconnects_in_a_minute_open_one_incident_not_twenty(
    tmp_path: Path,
    db_url: str,
    pki: PkiDir,
    broker: MosquittoBroker,
    incidents: dict[str, float],
    away: float,
    up: float,
    expected: int,
) -> None:
    started = time.monotonic()
    device_id = unique_device(pki, "flap")
    plugin = FakePlugin("chaos", actions=())
    config = {"fault_debounce": 0.5, "sweep_interval": 0.1, **incidents}
    async with (
        fleet_server(db_url, pki, broker, incidents=config) as fleet,
        LinkCutter(broker.host, broker.port) as cutter,
    ):
        settings = through(
            agent_settings(tmp_path, pki, broker, device_id, telemetry_interval=0.25, reconnect=RECONNECT),
            cutter,
        )
        async with AgentRuntime(settings, plugins=[plugin]) as agent:
            log = PublishLog.attach(agent)
            await agent.wait_connected()
            await agent.drained()
            flapping = time.monotonic()
            for _ in range(FLAPS):
                await asyncio.sleep(up)
                assert await cutter.cut() == 1  # the broker sees the connection die: last will
                await agent.link.wait_disconnected()
                await asyncio.sleep(away)
                await cutter.open()
                await agent.wait_connected()
                await agent.drained()  # the birth status is at the broker
            flapped = time.monotonic() - flapping
            assert flapped < 60.0, f"{FLAPS} disconnects took {flapped:.1f} s"
            assert agent.link.connections == FLAPS + 1

            async def settled() -> tuple[list[dict[str, object]]] | None:
                # back for longer than the flap window: an offline incident is resolved by now
                page = await fleet.get("/incidents", device=device_id)
                items: list[dict[str, object]] = page["items"]
                return (items,) if all(i["status"] == "resolved" for i in items) else None

            await asyncio.sleep(config["offline_flap_window"] + 0.5)
            (found,) = await eventually(settled, what="offline incidents settled", timeout=20)
        # goodbye sent: the agent is away now (an absence the flapping is not about)

        async def all_acked_stored() -> bool:
            return log.acked <= set((await row_counts(db_url, device_id)).messages)

        await eventually(all_acked_stored, what="every acknowledged message stored")
        rows = await row_counts(db_url, device_id)
        ingest = await fleet.ingest_stats()
        states = await fleet.get(f"/devices/{device_id}/states")
        bad = await negative_durations(db_url, [device_id])

    assert bad == []
    assert [i["kind"] for i in found] == ["offline"] * expected, found
    if expected:
        (incident,) = found
        assert incident["external"] is True  # the agent kept running: a network loss
    else:
        assert "unknown" not in [s["state"] for s in states]

    stored = rows.messages
    wills = set(stored) & log.wills
    assert len(wills) == FLAPS, f"{len(wills)} last wills stored for {FLAPS} disconnects"
    assert set(stored) - set(log.queued) <= log.wills
    births = [s for s, e in log.queued.items() if e.kind is UpKind.STATUS]
    status_stored = sorted(s for s, k in stored.items() if k == UpKind.STATUS.value)
    assert rows.status_rows == len(status_stored)  # status_history: one row per status message
    duplicates = (rows.event_rows - rows.distinct_event_seqs) + (rows.status_rows - rows.distinct_status_seqs)
    samples = sum(_samples(log.queued[s].payload) for s, k in stored.items() if k == UpKind.TELEMETRY.value)
    assert rows.telemetry_rows >= samples
    duplicates += rows.telemetry_rows - samples

    ledger = _ledger(
        f"{FLAPS} disconnects in {flapped:.0f} s, grace {config['offline_grace']:g} s",
        log,
        stored,
        dropped=0,
        duplicates=duplicates,
    )
    ledger.sent += FLAPS  # the last wills: the broker sends them for the agent
    ledger.acknowledged += FLAPS  # held by the broker since each CONNECT
    ledger.stored += len(wills)
    ledger.notes["status sent"] = f"{len(births)} queued + {FLAPS} wills"
    ledger.notes["status stored"] = len(status_stored)
    ledger.notes["offline incidents"] = len(found)
    ledger.notes["ingest redeliveries"] = ingest["duplicates"]
    ledger.notes["wall s"] = round(time.monotonic() - started, 1)
    ledger.check()


# -- 3. device clock 2 h off ---------------------------------------------------------------------

OFFSETS = {
    "clock-behind-2h": timedelta(hours=-2),
    "clock-right": timedelta(0),
    "clock-ahead-2h": timedelta(hours=2),
}
SKEW_INCIDENTS = {
    "fault_debounce": 0.5,
    "offline_grace": 1.0,
    "offline_flap_window": 1.0,
    "sweep_interval": 0.1,
}
CLOCK_TOLERANCE_S = 0.1  # the devices run side by side: message transit differs (measured ~10 ms)
# reconnect within 50 ms: the backoff's jitter would otherwise differ between the devices' returns
SKEW_RECONNECT = {"initial": 0.02, "max": 0.05, "stable_after": 30.0}
DURATION_TOLERANCE_S = 0.25  # expected figures of the scenario (sleeps in real time)


async def test_a_device_clock_two_hours_off_gives_no_negative_duration_and_the_same_kpis(
    tmp_path: Path, db_url: str, pki: PkiDir, broker: MosquittoBroker
) -> None:
    """Three devices run the same scenario side by side — a down fault for 1.5 s and its
    clearing while connected, then an absence past the grace with a 1 s down fault in it (only
    known from the buffered history), the return — with clocks 2 h behind, right, 2 h ahead;
    each has its own model, so the KPI report grouped by model compares them."""
    started = time.monotonic()
    devices = {model: unique_device(pki, "skew") for model in OFFSETS}
    plugins = {model: FakePlugin("chaos", actions=(), model=model) for model in OFFSETS}
    logs: dict[str, PublishLog] = {}
    async with contextlib.AsyncExitStack() as stack:
        fleet = await stack.enter_async_context(fleet_server(db_url, pki, broker, incidents=SKEW_INCIDENTS))
        cutters = {
            model: await stack.enter_async_context(LinkCutter(broker.host, broker.port)) for model in OFFSETS
        }
        agents = {}
        running = await stack.enter_async_context(contextlib.AsyncExitStack())
        for model, offset in OFFSETS.items():
            settings = through(
                agent_settings(
                    tmp_path, pki, broker, devices[model], telemetry_interval=0.25, reconnect=SKEW_RECONNECT
                ),
                cutters[model],
            )
            clock = OffsetClock(offset)
            agent = AgentRuntime(settings, plugins=[plugins[model]], clock=clock, command_clock=SystemClock())
            agents[model] = await running.enter_async_context(agent)
            logs[model] = PublishLog.attach(agents[model])
        for model, agent in agents.items():
            await agent.wait_connected()
            await plugins[model].running.wait()
            await agent.drained()
        # the report's period begins once every device is connected: the messages an agent
        # queued before its first connection have no earlier clock estimate and are placed at
        # their receipt (noted in the ledger as "first contact placed late")
        period_start = datetime.now(UTC)

        def every(emit: str, **fields: object) -> None:
            for plugin in plugins.values():
                plugin.emit(emit, **fields)  # type: ignore[arg-type]

        # a fault raised and cleared while connected: the live path
        # the figures expected below are the times measured between the emits: a loaded machine
        # oversleeps, and the devices stamp what really happened
        e42_raised = time.monotonic()
        every("fault.raised", code="E42", severity=Severity.ERROR, detail="jam", data={"effect": "down"})
        await asyncio.sleep(1.5)  # past the debounce: an incident each
        every("fault.cleared", code="E42")
        e42_down = time.monotonic() - e42_raised
        await asyncio.sleep(0.5)
        # an absence past the grace, with a fault raised and cleared in it: buffered history
        for cutter in cutters.values():
            await cutter.cut()
        await asyncio.sleep(0.5)
        e43_raised = time.monotonic()
        every(
            "fault.raised", code="E43", severity=Severity.ERROR, detail="door open", data={"effect": "down"}
        )
        await asyncio.sleep(1.0)
        every("fault.cleared", code="E43")
        e43_down = time.monotonic() - e43_raised
        await asyncio.sleep(0.5)
        for cutter in cutters.values():
            await cutter.open()
        for agent in agents.values():
            await agent.wait_connected()
        for agent in agents.values():
            await agent.drained()

        async def resolved(device_id: str) -> list[dict[str, object]] | bool:
            page = await fleet.get("/incidents", device=device_id)
            items: list[dict[str, object]] = page["items"]
            done = len(items) == 3 and all(i["status"] == "resolved" for i in items)
            return items if done else False

        found: dict[str, list[dict[str, object]]] = {}
        for model, device_id in devices.items():
            value = await eventually(
                lambda device_id=device_id: resolved(device_id), what=f"{model}: three incidents resolved"
            )
            assert isinstance(value, list)
            found[model] = value
        as_of = datetime.now(UTC)
        window = {"from": period_start.isoformat(), "to": (as_of + timedelta(minutes=1)).isoformat()}
        report = await fleet.get("/kpis", group_by="model", **window)
        # the oracle: the reference engine (server/kpi/reference.py) on the same stored records
        spec = ReportSpec(period_start, as_of + timedelta(minutes=1), group_by=GroupBy.MODEL, as_of=as_of)
        async with fleet.runtime.sessions() as session:
            by_sql = (await compute_report(session, spec, now=as_of)).as_dict()
            by_reference = reference_report(await load_dataset(session), spec, now=as_of).as_dict()
        states = {model: await fleet.get(f"/devices/{d}/states") for model, d in devices.items()}
        bad = await negative_durations(db_url, list(devices.values()))
        await running.aclose()  # the agents say goodbye

        stored: dict[str, dict[int, str]] = {}
        for model, device_id in devices.items():

            async def all_acked_stored(model: str = model, device_id: str = device_id) -> bool:
                stored[model] = (await row_counts(db_url, device_id)).messages
                return logs[model].acked <= set(stored[model])

            await eventually(all_acked_stored, what=f"{model}: every acknowledged message stored")

    assert bad == [], bad
    for model, items in found.items():
        kinds = sorted(str(i["kind"]) for i in items)
        assert kinds == ["fault", "fault", "offline"], (model, items)
        for incident in items:
            fault, detect = ts(incident["t_fault"]), ts(incident["t_detect"])
            assert fault <= detect <= ts(incident["t_resolved"]), (model, incident)
            assert fault <= ts(incident["t_restored"]), (model, incident)
    for model, intervals in states.items():
        for interval in intervals:
            if interval.get("end") is not None:
                assert ts(interval["start"]) <= ts(interval["end"]), (model, interval)
    rows = {row["group"]["key"]: row["kpis"] for row in report["rows"]}
    assert set(rows) == set(OFFSETS)
    for model, kpis in rows.items():
        negative = {k: v for k, v in kpis.items() if isinstance(v, int | float) and v < 0}
        assert negative == {}, (model, negative)
    sql_rows = {row["group"]["key"]: row["kpis"] for row in by_sql["rows"]}
    reference_rows = {row["group"]["key"]: row["kpis"] for row in by_reference["rows"]}
    for model in OFFSETS:
        assert _differences(reference_rows[model], sql_rows[model], tolerance=1e-6) == {}, model
    right = rows["clock-right"]
    spread: dict[str, tuple[float, str]] = {"clock-right": (0.0, "-")}
    assert right["incidents"] == 3
    # E42 (1.5 s) is downtime; E43 (1 s, inside the network loss) is external downtime
    assert right["downtime_s"] == pytest.approx(e42_down, abs=DURATION_TOLERANCE_S)
    assert right["external_downtime_s"] == pytest.approx(e43_down, abs=DURATION_TOLERANCE_S)
    assert right["unknown_s"] == pytest.approx(0.0, abs=DURATION_TOLERANCE_S)
    restore = {model: _restore_times(items) for model, items in found.items()}
    jitter: dict[str, float] = {"clock-right": 0.0}
    for model in ("clock-behind-2h", "clock-ahead-2h"):
        # what the device clock places: the faults' times, hence the state time, equal within 0.1 s
        for code in ("E42", "E43"):
            assert restore[model][code] == pytest.approx(restore["clock-right"][code], abs=CLOCK_TOLERANCE_S)
        for key in ("downtime_s", "external_downtime_s", "operating_s", "unknown_s", "uptime_s"):
            assert rows[model][key] == pytest.approx(right[key], abs=CLOCK_TOLERANCE_S), (model, key)
        # the offline incident is timed by receipts alone (last will, return): no device clock in
        # it, but the reconnects of three agents differ; every other figure within that, too
        jitter[model] = abs(restore[model]["offline"] - restore["clock-right"]["offline"])
        differ = _differences(right, rows[model], tolerance=CLOCK_TOLERANCE_S + jitter[model])
        assert differ == {}, f"{model} vs clock-right: {differ}"
        spread[model] = max(
            (abs(float(value) - float(rows[model][key])), key)  # type: ignore[arg-type]
            for key, value in right.items()
            if key.endswith("_s") and isinstance(value, int | float)
        )

    for model in OFFSETS:
        ledger = _ledger(f"device clock {model}", logs[model], stored[model], dropped=0, duplicates=0)
        ledger.notes["incidents"] = rows[model]["incidents"]
        ledger.notes["downtime s"] = round(float(rows[model]["downtime_s"]), 3)  # type: ignore[arg-type]
        ledger.notes["max duration diff vs right clock"] = f"{spread[model][0]:.3f} s ({spread[model][1]})"
        ledger.notes["negative durations"] = len(bad)
        ledger.notes["reconnect jitter s"] = round(jitter[model], 3)
        first = ts(states[model][0]["start"]) - ts(states["clock-right"][0]["start"])
        ledger.notes["first contact placed late s"] = round(first.total_seconds(), 3)
        ledger.notes["wall s"] = round(time.monotonic() - started, 1)
        ledger.check()


def ts(value: object) -> datetime:
    assert isinstance(value, str), value
    return datetime.fromisoformat(value)


def _restore_times(incidents: list[dict[str, object]]) -> dict[str, float]:
    """t_restored - t_fault in seconds per incident, keyed by its fault code (or "offline")."""
    times: dict[str, float] = {}
    for incident in incidents:
        codes = incident["codes"]
        key = "offline" if incident["kind"] == "offline" else str(codes[0])  # type: ignore[index]
        times[key] = (ts(incident["t_restored"]) - ts(incident["t_fault"])).total_seconds()
    return times


def _differences(
    expected: dict[str, object], actual: dict[str, object], *, tolerance: float
) -> dict[str, tuple[object, object]]:
    """KPI figures that differ: counts exactly, durations within ``tolerance`` s, ratios within
    0.01 (both within ``tolerance`` when it is below 0.01)."""
    differ: dict[str, tuple[object, object]] = {}
    for key in sorted(set(expected) | set(actual)):
        want, got = expected.get(key), actual.get(key)
        if isinstance(want, bool) or isinstance(got, bool) or not isinstance(want, int | float):
            same = want == got
        elif not isinstance(got, int | float):
            same = False
        elif isinstance(want, int) and isinstance(got, int) and not key.endswith("_s"):
            same = want == got
        elif key.endswith("_s"):
            same = abs(want - got) <= tolerance
        else:
            same = abs(want - got) <= min(0.01, tolerance)
        if not same:
            differ[key] = (want, got)
    return differ

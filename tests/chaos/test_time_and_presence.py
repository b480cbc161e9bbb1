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
from simulators.clock import EQUIPMENT, SteppedClock
from tests.chaos.counts import Ledger
from tests.chaos.support_time import LinkCutter, row_counts, through
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

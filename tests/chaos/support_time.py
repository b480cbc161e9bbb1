"""Helpers of the time and presence chaos tests (tests/chaos/test_time_and_presence.py).

- :class:`LinkCutter`: a TCP relay between one agent and the real Mosquitto that the test can
  cut (both sockets aborted, so the broker sees the connection die and publishes the agent's
  last will) and keep closed (connections refused) for as long as it wants: real broker
  disconnects without touching the broker or the server.
- :class:`OffsetClock`: the wall clock shifted by a fixed offset, as a device whose clock is
  set wrong.
- :func:`row_counts`, :func:`negative_durations`: what reached the server's database, read
  directly, so the ledger counts rows and not what an API shows.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from agent import AgentSettings
from server.db import create_engine
from server.db.models import (
    Event,
    Incident,
    Message,
    StateInterval,
    StatusRecord,
    TelemetrySample,
    TransientFault,
)
from tests.support.broker import free_port

__all__ = [
    "LinkCutter",
    "OffsetClock",
    "RowCounts",
    "negative_durations",
    "row_counts",
    "through",
]


def through(settings: AgentSettings, cutter: LinkCutter) -> AgentSettings:
    """The agent's settings with its broker connection going through ``cutter``."""
    broker = settings.broker.model_copy(update={"port": cutter.port})
    return settings.model_copy(update={"broker": broker})


class OffsetClock:
    """The wall clock ``offset`` off (a device clock set 2 h ahead or behind): the agent's
    timestamps carry the offset, its sleeps are real."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class LinkCutter:
    """``127.0.0.1:<port>`` relayed to ``host:port`` (the broker), byte for byte (TLS passes
    through untouched). :meth:`cut` aborts every relayed connection (RST on both sides: no
    MQTT DISCONNECT, so the broker publishes the client's last will) and stops listening until
    :meth:`open` (the agent's reconnects are refused meanwhile)."""

    host = "127.0.0.1"

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port(self.host)
        self.cuts = 0  # connections aborted by cut()
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> LinkCutter:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def is_open(self) -> bool:
        return self._server is not None

    async def open(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)

    async def cut(self) -> int:
        """Stop listening and abort every relayed connection; returns how many were aborted."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        aborted = 0
        for client, upstream in list(self._pairs):
            client.transport.abort()
            upstream.transport.abort()
            aborted += 1
        self._pairs.clear()
        self.cuts += aborted
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        return aborted

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        pair = (writer, up_writer)
        self._pairs.add(pair)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink, pair), name="link-cutter.pump")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # one side closed: close the other the same way (a clean close stays clean)
            if pair in self._pairs:
                self._pairs.discard(pair)
                for side in pair:
                    side.close()


@dataclass(frozen=True)
class RowCounts:
    """One device's rows in the server's database."""

    messages: dict[int, str]  # seq -> kind, one per (device, seq) by the primary key
    event_rows: int
    distinct_event_seqs: int
    telemetry_rows: int
    status_rows: int  # status_history
    distinct_status_seqs: int


async def row_counts(db_url: str, device_id: str) -> RowCounts:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                select(Message.seq, Message.kind).where(Message.device_id == device_id)
            )
            messages: dict[int, str] = {int(seq): str(kind) for seq, kind in result}
            event_rows, event_seqs = (
                await conn.execute(
                    select(func.count(), func.count(func.distinct(Event.seq))).where(
                        Event.device_id == device_id
                    )
                )
            ).one()
            telemetry = await conn.scalar(
                select(func.count())
                .select_from(TelemetrySample)
                .where(TelemetrySample.device_id == device_id)
            )
            status_rows, status_seqs = (
                await conn.execute(
                    select(func.count(), func.count(func.distinct(StatusRecord.seq))).where(
                        StatusRecord.device_id == device_id
                    )
                )
            ).one()
    finally:
        await engine.dispose()
    return RowCounts(messages, event_rows, event_seqs, telemetry or 0, status_rows, status_seqs)


async def negative_durations(db_url: str, device_ids: list[str]) -> list[str]:
    """Every stored duration of these devices that is negative, described (empty: none):
    state intervals (end before start), incidents (a later milestone before t_fault or
    t_detect), transient faults (cleared before raised)."""
    found: list[str] = []
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            for interval in await conn.execute(
                select(StateInterval).where(StateInterval.device_id.in_(device_ids))
            ):
                if interval.end_s is not None and interval.end_s < interval.start_s:
                    found.append(
                        f"state interval {interval.device_id} {interval.state} "
                        f"[{interval.start.isoformat()}, {interval.end.isoformat()})"
                    )
            for incident in await conn.execute(select(Incident).where(Incident.device_id.in_(device_ids))):
                if incident.fault_s > incident.detect_s:
                    found.append(f"incident {incident.id}: t_fault after t_detect")
                for name in ("ack_s", "respond_s", "restored_s", "resolved_s"):
                    value = getattr(incident, name)
                    if value is not None and value < incident.fault_s:
                        found.append(
                            f"incident {incident.id}: {name} {value} before t_fault {incident.fault_s}"
                        )
                if incident.resolved_s is not None and incident.resolved_s < incident.detect_s:
                    found.append(f"incident {incident.id}: resolved before detected")
            for fault in await conn.execute(
                select(TransientFault).where(TransientFault.device_id.in_(device_ids))
            ):
                if fault.cleared_at < fault.raised_at:
                    found.append(f"transient fault {fault.id} {fault.code}: cleared before raised")
    finally:
        await engine.dispose()
    return found

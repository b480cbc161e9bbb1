"""End-to-end helpers: the real server (API + ingest + commands), the real agent runtime and a
real Mosquitto, driven the way an operator and a technician would.

    async with fleet_server(db_url, pki, broker) as fleet:              # in-process, MQTT connected
        async with AgentRuntime(agent_settings(tmp_path, pki, broker, device_id),
                                plugins=[FakePlugin("e2e", actions=["record"])]) as agent:
            log = PublishLog.attach(agent)                                # what the agent published
            body = await fleet.command(device_id, "ping", wait=True)
    async with DatabaseView(db_url) as db:
        log.assert_stored_exactly_once(await db.rows(device_id), next_seq=...)
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from sqlalchemy import func, select

import protocol
from agent import AgentRuntime, AgentSettings
from agent.outbox import OutboxEntry, read_stats
from agent.storage import database_path
from certs import PkiDir
from server.db import create_engine
from server.db.models import Command, Event, Message, Role, TelemetrySample
from server.runtime import Runtime
from tests.agent.support import device_settings
from tests.support.broker import MosquittoBroker
from tests.support.server import V1, bearer, connected_server, create_token, server_settings

__all__ = [
    "E2E_ACTIONS",
    "DatabaseView",
    "Fleet",
    "PublishLog",
    "StoredRows",
    "agent_settings",
    "fleet_server",
    "outbox_next_seq",
]

E2E_ACTIONS = ("ping", "e2e.record")
"""The device policy of the end-to-end agents: ``e2e.forbidden`` exists but is not allowed."""


def agent_settings(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker, device_id: str, **overrides: Any
) -> AgentSettings:
    """A real device identity (mutual TLS) on the test broker; data dir ``tmp_path/data-<id>``,
    so a second runtime built with the same arguments restarts on the same outbox."""
    values: dict[str, Any] = {
        "telemetry_interval": 0.2,
        "shutdown_grace": 5.0,
        "policy": {"allowed_actions": list(E2E_ACTIONS)},
    }
    values.update(overrides)
    return device_settings(tmp_path, pki, broker, device_id, **values)


def outbox_next_seq(settings: AgentSettings) -> int:
    """The agent's persisted sequence counter (read-only; also safe after it stopped)."""
    stats = read_stats(database_path(settings.data_dir))
    assert stats is not None, f"no outbox in {settings.data_dir}"
    return stats.next_seq


# -- the server side -----------------------------------------------------------------------


@dataclass
class Fleet:
    """The running server and an API client with a technician's and an ops user's tokens."""

    client: httpx.AsyncClient
    runtime: Runtime
    technician: str
    tech_auth: dict[str, str]
    ops_auth: dict[str, str]

    async def get(self, path: str, **params: Any) -> Any:
        """GET ``/api/v1<path>`` as ops; the JSON body, or None for a 404."""
        response = await self.client.get(f"{V1}{path}", headers=self.ops_auth, params=params)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
        return response.json()

    async def device(self, device_id: str) -> dict[str, Any] | None:
        body: dict[str, Any] | None = await self.get(f"/devices/{device_id}")
        return body

    async def telemetry(self, device_id: str, **params: Any) -> list[dict[str, Any]]:
        return list(await self.get(f"/devices/{device_id}/telemetry", **params) or [])

    async def events(self, device_id: str, **params: Any) -> dict[str, Any]:
        """The events page (``items``, ``total``); empty while the device is unknown."""
        page = await self.get(f"/devices/{device_id}/events", **params)
        return page or {"items": [], "total": 0}

    async def audit(self, action: str, device_id: str, command_id: str | None = None) -> list[dict[str, Any]]:
        """Audit entries of ``action`` targeting the device (and naming ``command_id``), oldest first."""
        page = await self.get("/audit", action=action, target=f"device:{device_id}", limit=1000)
        items = [
            e for e in page["items"] if command_id is None or e["detail"].get("command_id") == command_id
        ]
        return items[::-1]

    async def ingest_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self.get("/ingest/stats")
        return stats

    async def command(self, device_id: str, action: str, **body: Any) -> dict[str, Any]:
        """POST a command as the technician; the command (final with ``wait=True``)."""
        response = await self.client.post(
            f"{V1}/devices/{device_id}/commands", json={"action": action, **body}, headers=self.tech_auth
        )
        assert response.status_code in (200, 201), f"POST command: {response.status_code} {response.text}"
        result: dict[str, Any] = response.json()
        return result

    async def signed_payload(self, command_id: str) -> bytes:
        """The exact bytes the server published for a command (its signed wire form)."""
        async with self.runtime.sessions() as session:
            command = await session.get(Command, command_id)
            assert command is not None, command_id
            return command.signed.encode()


@contextlib.asynccontextmanager
async def fleet_server(
    db_url: str, pki: PkiDir, broker: MosquittoBroker, **overrides: Any
) -> AsyncIterator[Fleet]:
    """The real server in this process (lifespan, ingest, command service), MQTT connected."""
    overrides.setdefault("command_sweep_interval", 0.2)
    settings = server_settings(db_url, pki=pki, broker=broker, **overrides)
    async with connected_server(settings) as (client, runtime):
        suffix = uuid.uuid4().hex[:6]
        technician = f"tech-{suffix}"
        tech = await create_token(runtime, technician, Role.TECHNICIAN)
        ops = await create_token(runtime, f"ops-{suffix}", Role.OPS)
        yield Fleet(client, runtime, technician, bearer(tech), bearer(ops))


# -- what reached the database ---------------------------------------------------------------


@dataclass(frozen=True)
class StoredRows:
    """One device's rows: message keys, event seqs (one per event row), telemetry row count."""

    message_seqs: list[int]
    event_seqs: list[int]
    telemetry_rows: int


class DatabaseView:
    """Read-only look at the server's database from the test (any backend, any process)."""

    def __init__(self, db_url: str) -> None:
        self.engine = create_engine(db_url)

    async def __aenter__(self) -> DatabaseView:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.engine.dispose()

    async def rows(self, device_id: str) -> StoredRows:
        async with self.engine.connect() as conn:
            messages = await conn.scalars(
                select(Message.seq).where(Message.device_id == device_id).order_by(Message.seq)
            )
            message_seqs = list(messages)
            events = await conn.scalars(
                select(Event.seq).where(Event.device_id == device_id).order_by(Event.seq)
            )
            event_seqs = list(events)
            telemetry = await conn.scalar(
                select(func.count())
                .select_from(TelemetrySample)
                .where(TelemetrySample.device_id == device_id)
            )
        return StoredRows(message_seqs, event_seqs, telemetry or 0)


# -- what the agent published ----------------------------------------------------------------


@dataclass
class PublishLog:
    """Every message one agent queued, every seq it reserved for a last will, and every seq the
    broker acknowledged (= published), across restarts on one data dir.

    Records by wrapping the runtime's outbox methods, so attach it right after entering the
    runtime, before the first ``await`` (the publisher has not run yet; the start-up messages
    already queued are read from the outbox).
    """

    queued: dict[int, OutboxEntry] = field(default_factory=dict)
    acked: set[int] = field(default_factory=set)
    wills: set[int] = field(default_factory=set)

    @classmethod
    def attach(cls, agent: AgentRuntime, log: PublishLog | None = None) -> PublishLog:
        log = log if log is not None else cls()
        outbox = agent.outbox
        for entry in outbox.pending(limit=1_000_000):
            log.queued[entry.seq] = entry
        append, ack, reserve_seq = outbox.append, outbox.ack, outbox.reserve_seq

        def recording_append(kind: protocol.UpKind, build: Any, *, retain: bool = False) -> OutboxEntry:
            entry = append(kind, build, retain=retain)
            log.queued[entry.seq] = entry
            return entry

        def recording_ack(*seqs: int) -> None:
            ack(*seqs)
            log.acked.update(seqs)

        def recording_reserve_seq() -> int:
            seq = reserve_seq()
            log.wills.add(seq)
            return seq

        outbox.append = recording_append  # type: ignore[method-assign]
        outbox.ack = recording_ack  # type: ignore[method-assign]
        outbox.reserve_seq = recording_reserve_seq  # type: ignore[method-assign]
        return log

    def published(self, kind: protocol.UpKind | None = None) -> list[OutboxEntry]:
        return [
            self.queued[seq]
            for seq in sorted(self.acked)
            if seq in self.queued and (kind is None or self.queued[seq].kind is kind)
        ]

    def assert_stored_exactly_once(self, rows: StoredRows, *, next_seq: int) -> None:
        """Every published message stored once, nothing else stored but broker-sent last wills,
        and every seq below ``next_seq`` accounted for (no gap in what the agent produced)."""
        stored = set(rows.message_seqs)
        assert len(stored) == len(rows.message_seqs)  # (device_id, seq) is the primary key
        unknown = self.acked - set(self.queued)
        assert not unknown, f"acked seqs that were never queued: {sorted(unknown)}"
        lost = self.acked - stored
        assert not lost, f"published but not stored: {sorted(lost)}"
        extra = stored - self.acked
        assert extra <= self.wills, f"stored but never published by the agent: {sorted(extra - self.wills)}"
        gaps = set(range(next_seq)) - set(self.queued) - self.wills
        assert not gaps, f"seqs neither queued nor reserved for a last will: {sorted(gaps)}"
        unpublished = {seq: e.kind.value for seq, e in self.queued.items() if seq not in self.acked}
        assert set(unpublished.values()) <= {"status"}, f"queued but never published: {unpublished}"
        # exactly once, down to the rows the messages became
        published_events = [e.seq for e in self.published(protocol.UpKind.EVENT)]
        assert rows.event_seqs == published_events, "event rows differ from the events published"
        samples = sum(
            len(protocol.decode(protocol.UpKind.TELEMETRY, e.payload).samples)  # type: ignore[union-attr]
            for e in self.published(protocol.UpKind.TELEMETRY)
        )
        assert rows.telemetry_rows == samples, f"{rows.telemetry_rows} telemetry rows for {samples} samples"

"""Remote sessions on SQLite and PostgreSQL: the state machine, the queue, consent through the
ingest writer, policy refusals before signing, cancel, the report (server/sessions)."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import protocol
from server.base import users
from server.base.users import Principal
from server.commands.service import CommandService
from server.db.models import (
    AuditEntry,
    Command,
    CommandState,
    Customer,
    Device,
    Incident,
    IncidentEntry,
    Role,
    SessionEntry,
    Site,
    TechnicianAssignment,
)
from server.db.types import utcnow
from server.errors import Conflict, Forbidden, InvalidInput
from server.ingest import BatchWriter
from server.sessions.report import render_markdown
from server.sessions.service import SessionService
from server.settings import SessionSettings
from tests.server import factory as f
from tests.server.test_commands import FakePublisher

Sessions = async_sessionmaker[AsyncSession]
_seq = itertools.count(1000)

CATALOGUE: list[dict[str, Any]] = [
    {"name": "selftest", "policy": "allowed"},
    {"name": "printer.clear_jam", "policy": "allowed", "disruptive": True},
    {"name": "config.set", "policy": "needs_consent", "disruptive": True},
    {"name": "service.restart", "policy": "forbidden", "disruptive": True},
]


class World:
    """A command service with a fake broker, a session service, and two users."""

    def __init__(self, sessions: Sessions, **settings: Any) -> None:
        self.sessions = sessions
        self.publisher = FakePublisher()
        self.commands = CommandService(
            sessions, self.publisher, protocol.CommandSigner(Ed25519PrivateKey.generate()), republish_after=0
        )
        self.service = SessionService(sessions, self.commands, SessionSettings(**settings))
        self.tina = self.adam = self.olga = Principal(user_id=0, name="?", role=Role.ADMIN)

    async def setup(self) -> World:
        async with self.sessions() as session:
            for name, role in (("tina", Role.TECHNICIAN), ("adam", Role.ADMIN), ("olga", Role.TECHNICIAN)):
                user = await users.create_user(session, name, role, actor="test")
                setattr(self, name, Principal(user_id=user.id, name=name, role=role))
            await session.commit()
        return self

    async def device(
        self, device_id: str, *, catalogue: list[dict[str, Any]] | None = None, attended_site: bool = False
    ) -> str:
        async with self.sessions() as session:
            device = Device(
                id=device_id,
                first_seen=utcnow(),
                model="LX-9",
                serial=f"SN-{device_id}",
                inventory={"agent": {"version": "1", "catalogue": catalogue or [], "attended": False}},
            )
            if attended_site:
                customer = Customer(name=f"cust-{device_id}")
                session.add(customer)
                await session.flush()
                site = Site(customer_id=customer.id, name="front", attended=True)
                session.add(site)
                await session.flush()
                device.customer_id, device.site_id = customer.id, site.id
                session.add(TechnicianAssignment(user_id=self.tina.user_id, customer_id=customer.id))
            session.add(device)
            await session.commit()
        return device_id

    async def consent(self, device_id: str, session_id: str, name: str, **data: Any) -> None:
        event = f.event(device_id, next(_seq), name, data={"session_id": session_id, **data})
        await BatchWriter(self.sessions).write([f.decoded(event)])

    async def grant(self, device_id: str, session_id: str, *, minutes: float = 30) -> None:
        expires = protocol.format_ts(utcnow() + timedelta(minutes=minutes))
        await self.consent(device_id, session_id, "consent.granted", approved_by="op-1", expires_at=expires)

    async def count(self, model: Any) -> int:
        async with self.sessions() as session:
            return await session.scalar(select(func.count()).select_from(model)) or 0

    async def entries(self, session_id: str) -> list[str]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(SessionEntry.kind)
                .where(SessionEntry.session_id == session_id)
                .order_by(SessionEntry.id)
            )
            return list(rows)


@pytest.fixture
async def world(sessions: Sessions) -> World:
    return await World(sessions, max_queue=1).setup()


async def test_unattended_session_is_active_at_once_and_queues_the_next(world: World) -> None:
    dev = await world.device("ses-1", catalogue=CATALOGUE)
    first = await world.service.open(world.tina, dev, reason="jam", time_limit_s=600)
    assert first.state == "active"
    assert first.expires_at is not None
    assert first.activated_at is not None
    assert (first.expires_at - first.activated_at).total_seconds() == 600
    second = await world.service.open(world.olga, dev, reason="check")
    assert second.state == "requested"
    assert await world.service.queue_position(second) == 1
    with pytest.raises(Conflict, match=r"busy: session .* by tina is active since .*max_queue = 1"):
        await world.service.open(world.adam, dev)
    assert not world.publisher.published  # no consent needed, nothing signed
    closed = await world.service.close(world.tina, first.id, outcome="cleared the jam", fixed=True)
    assert (closed.state, closed.fixed, closed.ended_by) == ("closed", True, "user:tina")
    promoted = await world.service.get(world.olga, second.id)
    assert promoted.state == "active"
    assert await world.entries(first.id) == ["requested", "activated", "closed"]
    async with world.sessions() as session:
        actions = set(
            await session.scalars(select(AuditEntry.action).where(AuditEntry.action.like("session.%")))
        )
    assert {"session.requested", "session.activated", "session.closed"} <= actions


async def test_only_the_owner_or_an_admin_acts_in_a_session(world: World) -> None:
    dev = await world.device("ses-own", catalogue=CATALOGUE)
    remote = await world.service.open(world.tina, dev)
    with pytest.raises(Forbidden, match="belongs to tina"):
        await world.service.run_command(world.olga, remote.id, "selftest")
    with pytest.raises(Forbidden):
        await world.service.close(world.olga, remote.id, outcome="", fixed=None)
    command = await world.service.run_command(world.adam, remote.id, "selftest")
    assert (command.session_id, command.issuer) == (remote.id, "adam")
    with pytest.raises(InvalidInput, match="time_limit_s"):
        await world.service.open(world.tina, dev, time_limit_s=10 * 86400)


async def test_attended_session_waits_for_consent_then_runs(world: World) -> None:
    dev = await world.device("ses-att", catalogue=CATALOGUE, attended_site=True)
    remote = await world.service.open(world.tina, dev, reason="fuser check", time_limit_s=900)
    assert (remote.state, remote.all_commands_need_consent) == ("awaiting_consent", True)
    [(_topic, payload)] = world.publisher.published
    wire = protocol.decode_command(payload)
    assert (wire.action, wire.session_id) == (protocol.CONSENT_ACTION, remote.id)
    assert wire.args["all_commands"] is True
    assert wire.args["technician"] == "tina"
    assert remote.consent_command_id == wire.id
    with pytest.raises(Conflict, match="awaiting the local operator"):
        await world.service.run_command(world.tina, remote.id, "selftest")
    with pytest.raises(Conflict, match="attended"):  # the plain command route is covered too
        await world.commands.issue(world.tina, dev, "selftest")
    await world.consent(dev, remote.id, "consent.requested")
    await world.grant(dev, remote.id)
    active = await world.service.get(world.tina, remote.id)
    assert (active.state, active.consent_by) == ("active", "op-1")
    assert active.activated_at is not None
    assert active.expires_at is not None
    assert (active.expires_at - active.activated_at).total_seconds() == 900
    command = await world.service.run_command(world.tina, remote.id, "selftest")
    assert command.state == "sent"
    assert await world.entries(remote.id) == [
        "requested",
        "consent.requested",
        "consent.pending",
        "consent.granted",
        "command",
    ]


async def test_a_denial_is_final_and_nothing_more_is_signed(world: World) -> None:
    dev = await world.device("ses-deny", catalogue=CATALOGUE, attended_site=True)
    remote = await world.service.open(world.tina, dev)
    await world.consent(dev, remote.id, "consent.denied", denied_by="op-2", reason="production run")
    denied = await world.service.get(world.tina, remote.id)
    assert (denied.state, denied.ended_by) == ("denied", f"device:{dev}")
    assert denied.report is not None
    assert denied.report["final"] is True
    before = await world.count(Command)
    await world.grant(dev, remote.id)  # a later approval changes nothing
    assert (await world.service.get(world.tina, remote.id)).state == "denied"
    for attempt in (
        world.service.run_command(world.tina, remote.id, "selftest"),
        world.commands.issue(world.tina, dev, protocol.CONSENT_ACTION, {}, session_id=remote.id),
        world.commands.issue(world.tina, dev, "selftest", session_id=remote.id),
    ):
        with pytest.raises(Conflict, match="denied"):
            await attempt
    with pytest.raises(Conflict):
        await world.service.request_consent(world.tina, remote.id)
    assert await world.count(Command) == before
    assert (await world.entries(remote.id))[-1] == "consent.ignored"


async def test_an_expired_approval_starts_nothing_and_the_sweeper_expires(world: World) -> None:
    dev = await world.device("ses-exp", catalogue=CATALOGUE, attended_site=True)
    remote = await world.service.open(world.tina, dev, time_limit_s=60)
    await world.grant(dev, remote.id, minutes=-1)  # approved, but already past its expiry
    active = await world.service.get(world.tina, remote.id)
    assert active.state == "active"
    before = await world.count(Command)
    with pytest.raises(Conflict, match=r"consent for session .* has expired"):
        await world.service.run_command(world.tina, remote.id, "selftest")
    assert await world.count(Command) == before
    queued = await world.service.open(world.adam, dev)
    assert queued.state == "requested"
    assert active.expires_at is not None
    changed = await world.service.sweep(now=active.expires_at + timedelta(seconds=1))
    assert remote.id in changed
    assert queued.id in changed
    assert (await world.service.get(world.tina, remote.id)).state == "expired"
    nxt = await world.service.get(world.adam, queued.id)
    assert nxt.state == "awaiting_consent"  # attended: the next one asks the operator again
    assert nxt.consent_requested_at is not None
    await world.service.sweep(
        now=nxt.consent_requested_at + timedelta(seconds=world.service.settings.consent_wait)
    )
    assert (await world.service.get(world.adam, queued.id)).state == "expired"


async def test_policy_is_checked_before_signing(world: World) -> None:
    dev = await world.device("ses-pol", catalogue=CATALOGUE)
    remote = await world.service.open(world.tina, dev)
    with pytest.raises(
        InvalidInput, match=r"not in the action catalogue.*available: config.set, printer.clear_jam"
    ) as bad:
        await world.service.run_command(world.tina, remote.id, "disk.format")
    assert bad.value.field == "action"
    with pytest.raises(Forbidden, match=r"the owner's policy forbids 'service\.restart'"):
        await world.service.run_command(world.tina, remote.id, "service.restart")
    with pytest.raises(
        Conflict, match=r"needs the local operator's consent.*POST /api/v1/sessions/.*/consent"
    ):
        await world.service.run_command(world.tina, remote.id, "config.set", {"key": "a", "value": 1})
    with pytest.raises(Conflict, match="open a session"):
        await world.commands.issue(world.tina, dev, "config.set")
    assert await world.count(Command) == 0
    assert not world.publisher.published
    # a non-attended session asks consent for needs_consent actions (all_commands=false)
    asked = await world.service.request_consent(world.tina, remote.id)
    assert asked.requires_consent
    assert not asked.all_commands_need_consent
    wire = protocol.decode_command(world.publisher.published[-1][1])
    assert (wire.action, wire.args["all_commands"]) == (protocol.CONSENT_ACTION, False)
    await world.grant(dev, remote.id)
    command = await world.service.run_command(world.tina, remote.id, "config.set", {"key": "a", "value": 1})
    assert command.args == {"key": "a", "value": 1}
    # a device that has not advertised a catalogue yet: the agent alone decides
    bare = await world.device("ses-bare")
    assert (await world.commands.issue(world.tina, bare, "anything.goes")).state == "sent"


async def test_cancel_signs_a_cancel_and_the_cancelled_reply_ends_the_command(world: World) -> None:
    dev = await world.device("ses-can", catalogue=CATALOGUE)
    remote = await world.service.open(world.tina, dev)
    command = await world.service.run_command(world.tina, remote.id, "selftest")
    await BatchWriter(world.sessions).write([f.decoded(f.reply(dev, next(_seq), command.id, "accepted"))])
    after = await world.commands.cancel(world.tina, command.id)
    assert after.cancel_requested_at is not None
    cancel = protocol.decode_command(world.publisher.published[-1][1])
    assert (cancel.action, cancel.args) == (protocol.CANCEL_ACTION, {"command_id": command.id})
    await BatchWriter(world.sessions).write(
        [
            f.decoded(
                f.reply(dev, next(_seq), command.id, "error", reason="Cancelled", output="cancelled by tina")
            )
        ]
    )
    done = await world.commands.get(command.id)
    assert done.state == CommandState.CANCELLED
    with pytest.raises(Conflict, match="already cancelled"):
        await world.commands.cancel(world.tina, command.id)
    async with world.sessions() as session:
        rows = (
            await session.execute(
                select(AuditEntry.action, AuditEntry.actor, AuditEntry.result).where(
                    AuditEntry.action.in_(["command.cancel_requested", "command.finished"])
                )
            )
        ).all()
    assert ("command.cancel_requested", "user:tina", "sent") in rows
    assert ("command.finished", f"device:{dev}", "cancelled") in rows


async def test_report_lists_every_step_and_the_incident_records_the_response(world: World) -> None:
    dev = await world.device("ses-rep", catalogue=CATALOGUE)
    now = utcnow()
    async with world.sessions() as session:
        incident = Incident(
            device_id=dev, kind="fault", fault_code="JAM-1", severity="error", effect="down",
            t_fault=now - timedelta(minutes=5), t_detect=now - timedelta(minutes=4), codes=["JAM-1"],
        )  # fmt: skip
        session.add(incident)
        await session.commit()
        incident_id = incident.id
    with pytest.raises(InvalidInput, match="incident_id"):
        await world.service.open(world.tina, await world.device("ses-other"), incident_id=incident_id)
    remote = await world.service.open(world.tina, dev, incident_id=incident_id, reason="paper jam")
    command = await world.service.run_command(world.tina, remote.id, "printer.clear_jam", {"tray": 2})
    await BatchWriter(world.sessions).write(
        [
            f.decoded(f.reply(dev, next(_seq), command.id, "output", output="opening tray 2\n", chunk=0)),
            f.decoded(f.reply(dev, next(_seq), command.id, "result", ok=True, data={"cleared": True})),
        ]
    )
    await world.service.close(world.tina, remote.id, outcome="jam cleared remotely", fixed=True)
    report = await world.service.report(world.tina, remote.id)
    assert report["final"]
    assert report["session"]["outcome"] == "jam cleared remotely"
    assert report["device"]["model"] == "LX-9"
    assert report["incident"]["id"] == incident_id
    assert report["incident"]["t_respond"] is not None
    [row] = report["commands"]
    assert (row["action"], row["args"], row["issuer"], row["state"]) == (
        "printer.clear_jam",
        {"tray": 2},
        "tina",
        "succeeded",
    )
    assert row["output"] == "opening tray 2\n"
    assert row["data"] == {"cleared": True}
    assert [e["kind"] for e in report["timeline"]] == ["requested", "activated", "command", "closed"]
    text = render_markdown(report)
    for expected in ("# Remote session report — ses-rep", "| Technician | tina |", "`printer.clear_jam` — succeeded",
                     "arguments: tray=2", "result: cleared=True", "opening tray 2",
                     "jam cleared remotely (fixed)", "Incident | #"):  # fmt: skip
        assert expected in text
    assert '{"' not in text  # no JSON where the customer reads
    async with world.sessions() as session:
        stored = await session.get(Incident, incident_id)
        assert stored is not None
        assert stored.t_respond is not None
        assert stored.t_ack is not None
        assert stored.status == "acknowledged"
        kinds = list(
            await session.scalars(select(IncidentEntry.kind).where(IncidentEntry.incident_id == incident_id))
        )
    assert {"session.opened", "session.activated", "session.closed"} <= set(kinds)


def test_the_report_reads_in_the_customers_time_zone_and_names_customer_and_site() -> None:
    """Issue 15, item 4: the customer's contract time zone for every time, customer and site
    named (or said to be missing), no JSON."""
    report = {
        "session": {"id": "ses-tz", "state": "closed", "owner": "tina", "reason": "jam",
                    "created_at": "2026-07-01T08:00:00+00:00", "activated_at": "2026-07-01T08:01:00+00:00",
                    "ended_at": "2026-07-01T08:30:00+00:00", "ended_by": "tina", "outcome": "cleared",
                    "fixed": True},
        "consent": {"required": False, "all_commands": False, "approved_by": None, "expires_at": None},
        "device": {"id": "dev-1", "model": "LX-9", "serial": "S1", "customer": "St. Mary's Hospital",
                   "site": "Radiology", "timezone": "Europe/Berlin"},
        "incident": None,
        "timeline": [{"ts": "2026-07-01T08:00:00+00:00", "kind": "requested", "actor": "user:tina", "detail": {}}],
        "commands": [{"action": "printer.clear_jam", "state": "succeeded", "issuer": "tina",
                      "issued_at": "2026-07-01T08:05:00+00:00", "duration_s": 2.0, "args": {"tray": 2},
                      "reason": None, "data": {"cleared": True, "pages": [1, 2]}, "output": "done"}],
    }  # fmt: skip
    text = render_markdown(report)
    assert "| Customer | St. Mary's Hospital, site Radiology |" in text
    assert "| Opened | 2026-07-01 10:00:00 CEST |" in text  # 08:00 UTC in Berlin's summer time
    assert "at 2026-07-01 10:05:00 CEST" in text
    assert "| Times | in Europe/Berlin |" in text
    assert "result: cleared=True, pages=[1, 2]" in text
    report["device"] |= {"customer": None, "site": None, "timezone": None}
    text = render_markdown(report)
    assert "not assigned to a customer yet" in text
    assert "| Opened | 2026-07-01 08:00:00 UTC |" in text
    assert "?" not in text.split("## Timeline")[0]

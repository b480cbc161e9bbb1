"""The command state machine: honest states, never backwards, expiry and time-outs, waiters."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import protocol
from server.base.users import Principal
from server.commands import CommandService, can_move
from server.db.models import AuditEntry, Command, CommandReply, CommandState, Device, Role
from server.db.types import utcnow
from server.errors import InvalidInput, NotFound, Unavailable
from server.ingest import BatchWriter
from tests.server import factory as f

Sessions = async_sessionmaker[AsyncSession]
S = CommandState
TECH = Principal(user_id=1, name="tina", role=Role.TECHNICIAN)


class FakePublisher:
    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.published: list[tuple[str, bytes]] = []

    @property
    def connected(self) -> bool:
        return not self.fail

    async def publish(self, topic: str, payload: bytes) -> None:
        if self.fail:
            raise Unavailable("not connected to the MQTT broker")
        self.published.append((topic, payload))


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
async def device(sessions: Sessions) -> str:
    async with sessions() as session:
        session.add(Device(id="cmd-dev", first_seen=utcnow()))
        await session.commit()
    return "cmd-dev"


def service(
    sessions: Sessions, key: Ed25519PrivateKey, publisher: FakePublisher | None = None
) -> CommandService:
    return CommandService(
        sessions, publisher or FakePublisher(), protocol.CommandSigner(key), republish_after=0
    )


async def replies(sessions: Sessions, *messages: protocol.UpMessage) -> set[str]:
    return (await BatchWriter(sessions).write([f.decoded(m) for m in messages])).commands


def test_transition_table_never_moves_backwards() -> None:
    order = [S.QUEUED, S.SENT, S.ACCEPTED]
    for i, later in enumerate(order):
        for earlier in order[:i]:
            assert not can_move(later, earlier)
    for terminal in (S.REJECTED, S.SUCCEEDED, S.FAILED, S.EXPIRED, S.TIMED_OUT):
        assert terminal.terminal
        assert not any(can_move(terminal, target) for target in S)
    assert can_move(S.SENT, S.ACCEPTED)
    assert can_move(S.ACCEPTED, S.SUCCEEDED)
    assert not can_move(S.ACCEPTED, S.EXPIRED)
    assert not can_move(S.SENT, S.TIMED_OUT)


async def test_issue_signs_records_audits_and_publishes(
    sessions: Sessions, key: Ed25519PrivateKey, device: str
) -> None:
    publisher = FakePublisher()
    command = await service(sessions, key, publisher).issue(TECH, device, "diag.ping", {"n": 1}, timeout_s=30)
    assert command.state == S.SENT
    assert command.sent_at is not None
    assert command.deadline_at - command.issued_at == timedelta(seconds=30)
    [(topic, payload)] = publisher.published
    assert topic == protocol.command_topic(device)
    wire = protocol.decode_command(payload)
    protocol.CommandVerifier(key.public_key(), device).verify(wire)  # raises if the signature is bad
    assert (wire.id, wire.issuer, wire.args) == (command.id, "tina", {"n": 1})
    async with sessions() as session:
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "command.sent"))
    assert entry is not None
    assert entry.actor == "user:tina"
    assert entry.detail["command_id"] == command.id


async def test_issue_refuses_unknown_device_and_bad_action(
    sessions: Sessions, key: Ed25519PrivateKey, device: str
) -> None:
    svc = service(sessions, key)
    with pytest.raises(NotFound):
        await svc.issue(TECH, "no-such-device", "diag.ping")
    with pytest.raises(InvalidInput) as info:
        await svc.issue(TECH, device, "Bad Action!")
    assert info.value.field == "action"


async def test_issue_without_signing_key_is_unavailable(sessions: Sessions, device: str) -> None:
    with pytest.raises(Unavailable, match="signing_key_file"):
        await CommandService(sessions, FakePublisher(), None).issue(TECH, device, "diag.ping")


async def test_replies_move_command_to_succeeded_and_late_replies_are_ignored(
    sessions: Sessions, key: Ed25519PrivateKey, device: str
) -> None:
    svc = service(sessions, key)
    command = await svc.issue(TECH, device, "diag.ping")
    assert await replies(sessions, f.reply(device, 10, command.id, "accepted")) == {command.id}
    assert (await svc.get(command.id)).state == S.ACCEPTED
    await replies(
        sessions,
        f.reply(device, 11, command.id, "output", output="hel", chunk=0),
        f.reply(device, 12, command.id, "output", output="lo", chunk=1),
        f.reply(device, 13, command.id, "result", ok=True, data={"rtt_ms": 3}),
    )
    done = await svc.get(command.id)
    assert (done.state, done.ok, done.output, done.data) == (S.SUCCEEDED, True, "hello", {"rtt_ms": 3})
    # a late error and a late "accepted" change nothing
    await replies(
        sessions,
        f.reply(device, 14, command.id, "error", reason="Boom"),
        f.reply(device, 15, command.id, "accepted"),
    )
    again = await svc.get(command.id)
    assert (again.state, again.ok, again.finished_at) == (S.SUCCEEDED, True, done.finished_at)
    async with sessions() as session:
        stored = list(
            await session.scalars(
                select(CommandReply.device_seq).where(CommandReply.command_id == command.id)
            )
        )
    assert sorted(stored) == [10, 11, 12, 13, 14, 15]


async def test_reply_from_another_device_is_ignored(
    sessions: Sessions, key: Ed25519PrivateKey, device: str
) -> None:
    svc = service(sessions, key)
    command = await svc.issue(TECH, device, "diag.ping")
    assert await replies(sessions, f.reply("intruder", 1, command.id, "result", ok=True)) == set()
    assert (await svc.get(command.id)).state == S.SENT


async def test_rejected_event_audits_and_rejects(
    sessions: Sessions, key: Ed25519PrivateKey, device: str
) -> None:
    svc = service(sessions, key)
    command = await svc.issue(TECH, device, "diag.ping")
    event = f.event(device, 20, "command.rejected", data={"command_id": command.id, "reason": "not_allowed"})
    assert await replies(sessions, event) == {command.id}
    rejected = await svc.get(command.id)
    assert (rejected.state, rejected.reason) == (S.REJECTED, "not_allowed")
    async with sessions() as session:
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "command.rejected"))
    assert entry is not None
    assert entry.actor == f"device:{device}"
    assert entry.detail["command_id"] == command.id
    assert (entry.detail["reason"], entry.detail["issuer"]) == ("not_allowed", "tina")
    await replies(sessions, f.reply(device, 21, command.id, "accepted"))  # too late: stays rejected
    assert (await svc.get(command.id)).state == S.REJECTED


async def test_sweeper_expires_unanswered_and_times_out_accepted(
    sessions: Sessions, key: Ed25519PrivateKey, device: str
) -> None:
    svc = service(sessions, key)
    unanswered = await svc.issue(TECH, device, "diag.ping", timeout_s=5)
    accepted = await svc.issue(TECH, device, "diag.ping", timeout_s=5)
    finished = await svc.issue(TECH, device, "diag.ping", timeout_s=5)
    await replies(
        sessions,
        f.reply(device, 30, accepted.id, "accepted"),
        f.reply(device, 31, finished.id, "result", ok=False, output="no paper"),
    )
    assert await svc.sweep(utcnow()) == []  # nothing is due yet
    changed = await svc.sweep(utcnow() + timedelta(seconds=6))
    assert sorted(changed) == sorted([unanswered.id, accepted.id])
    assert (await svc.get(unanswered.id)).state == S.EXPIRED
    assert (await svc.get(accepted.id)).state == S.TIMED_OUT
    assert (await svc.get(finished.id)).state == S.FAILED
    await replies(sessions, f.reply(device, 32, accepted.id, "result", ok=True))  # after the deadline
    assert (await svc.get(accepted.id)).state == S.TIMED_OUT


async def test_queued_command_is_published_by_the_sweeper_once_the_broker_is_back(
    sessions: Sessions, key: Ed25519PrivateKey, device: str
) -> None:
    publisher = FakePublisher(fail=True)
    svc = service(sessions, key, publisher)
    command = await svc.issue(TECH, device, "diag.ping")
    assert command.state == S.QUEUED
    publisher.fail = False
    await svc.sweep()
    assert (await svc.get(command.id)).state == S.SENT
    assert len(publisher.published) == 1


async def test_wait_for_result_wakes_on_the_reply(
    sessions: Sessions, key: Ed25519PrivateKey, device: str
) -> None:
    svc = service(sessions, key)
    command = await svc.issue(TECH, device, "diag.ping")
    waiter = asyncio.create_task(svc.wait_for_result(command.id, timeout=30))
    await asyncio.sleep(0)
    svc.notify(await replies(sessions, f.reply(device, 40, command.id, "result", ok=True)))
    async with asyncio.timeout(5):  # far below the 30 s: woken, not timed out
        result = await waiter
    assert result.state == S.SUCCEEDED


async def test_wait_for_result_returns_current_state_at_timeout(
    sessions: Sessions, key: Ed25519PrivateKey, device: str
) -> None:
    svc = service(sessions, key)
    command = await svc.issue(TECH, device, "diag.ping")
    assert (await svc.wait_for_result(command.id, timeout=0.05)).state == S.SENT
    async with sessions() as session:
        assert await session.get(Command, command.id) is not None


async def test_oversized_args_are_refused_before_signing_and_nothing_is_published(
    sessions: Sessions, key: Ed25519PrivateKey, device: str
) -> None:
    """Issue 13, attack 3: a 5 MB ``args`` was accepted, signed, and every publish of it made the
    broker drop the server's connection ("oversize packet"), again at every sweep."""
    publisher = FakePublisher()
    svc = service(sessions, key, publisher)
    with pytest.raises(InvalidInput) as info:
        await svc.issue(TECH, device, "diag.ping", {"blob": "x" * 5_000_000})
    assert info.value.field == "args"
    assert "limit" in str(info.value)
    with pytest.raises(InvalidInput) as surrogate:
        await svc.issue(TECH, device, "diag.ping", {"note": "\ud800"})
    assert (surrogate.value.field or "").startswith("args")
    assert publisher.published == []
    async with sessions() as session:
        assert (await session.scalars(select(Command))).all() == []


async def test_a_stored_command_over_the_payload_limit_is_failed_not_republished(
    sessions: Sessions, key: Ed25519PrivateKey, device: str
) -> None:
    """Defence in depth: a row written before the limit existed is never published again."""
    publisher = FakePublisher()
    svc = service(sessions, key, publisher)
    command = await svc.issue(TECH, device, "diag.ping", {"n": 1})
    huge = "x" * (protocol.MAX_PAYLOAD_BYTES + 1)
    async with sessions() as session:
        row = await session.get(Command, command.id)
        assert row is not None
        row.state, row.signed = S.QUEUED.value, huge
        await session.commit()
    publisher.published.clear()
    await svc.sweep()
    assert publisher.published == []
    failed = await svc.get(command.id)
    assert failed.state == S.FAILED


async def test_args_are_checked_against_the_advertised_args_schema_before_signing(
    sessions: Sessions, key: Ed25519PrivateKey
) -> None:
    """Issue 13: the action's argument schema (the device's catalogue) is checked before signing,
    so nothing the agent would reject as ``bad_args`` is ever signed or published."""
    schema = {
        "type": "object",
        "properties": {"lines": {"type": "integer", "minimum": 1, "maximum": 500}},
        "additionalProperties": False,
    }
    entry = {"name": "log.tail", "description": "", "policy": "allowed", "args_schema": schema}
    async with sessions() as session:
        session.add(Device(id="cmd-cat", first_seen=utcnow(), inventory={"agent": {"catalogue": [entry]}}))
        await session.commit()
    publisher = FakePublisher()
    svc = service(sessions, key, publisher)
    for args, field in (
        ({"lines": 10_000}, "args.lines"),
        ({"lines": "x"}, "args.lines"),
        ({"x": 1}, "args.x"),
    ):
        with pytest.raises(InvalidInput) as info:
            await svc.issue(TECH, "cmd-cat", "log.tail", args)
        assert info.value.field == field, info.value
        assert field in str(info.value)
    assert publisher.published == []
    async with sessions() as session:
        assert (await session.scalars(select(Command))).all() == []
    assert (await svc.issue(TECH, "cmd-cat", "log.tail", {"lines": 20})).state == S.SENT


async def test_a_malformed_advertised_args_schema_refuses_the_command_without_a_crash(
    sessions: Sessions, key: Ed25519PrivateKey
) -> None:
    """The catalogue is device input: a schema of the wrong shape is a clear refusal, not a 500."""
    entry = {"name": "odd", "policy": "allowed", "args_schema": {"properties": ["n"], "required": 5}}
    async with sessions() as session:
        session.add(Device(id="cmd-odd", first_seen=utcnow(), inventory={"agent": {"catalogue": [entry]}}))
        await session.commit()
    with pytest.raises(InvalidInput) as info:
        await service(sessions, key).issue(TECH, "cmd-odd", "odd", {"n": 1})
    assert info.value.field == "args"
    assert "args_schema" in str(info.value)

"""Local consent: the store's lifecycle, the operator's CLI, and the runtime's events (each
decision announced exactly once, also across restarts)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent import AgentRuntime
from agent.cli import app
from agent.consent import ConsentState, ConsentStatus, ConsentStore, parse_duration
from agent.errors import ConsentError
from protocol import CONSENT_ACTION, CommandSigner, Event, Reply, ReplyType, decode_uplink, encode
from tests.agent.support import make_settings

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class Now:
    def __init__(self) -> None:
        self.value = NOW

    def __call__(self) -> datetime:
        return self.value


def _request(store: ConsentStore, session: str = "S-1", until: datetime = NOW + timedelta(hours=2)) -> None:
    store.request(
        session,
        technician="tina",
        reason="paper jam",
        until=until,
        all_commands=False,
        issuer="tina@acme",
        command_id="cmd-00000001",
    )


def test_approval_lasts_the_shortest_of_for_until_and_the_policy_cap(tmp_path: Path) -> None:
    clock = Now()
    store = ConsentStore(tmp_path / "c.sqlite3", now=clock, max_approval=timedelta(minutes=90))
    _request(store, "short-request", until=NOW + timedelta(minutes=20))
    _request(store, "long-request", until=NOW + timedelta(hours=10))
    assert [r.session_id for r in store.pending()] == ["short-request", "long-request"]
    assert store.approve("short-request", "olga", timedelta(hours=1)).expires_at == NOW + timedelta(
        minutes=20
    )
    assert store.approve("long-request", "olga", timedelta(minutes=30)).expires_at == NOW + timedelta(
        minutes=30
    )
    assert store.approve("long-request", "olga", timedelta(hours=5)).expires_at == NOW + timedelta(minutes=90)
    record = store.get("long-request")
    assert record is not None
    assert record.decision == 2
    assert record.decided_by == "olga"
    assert store.pending() == []
    clock.value = NOW + timedelta(minutes=90)
    assert store.status("long-request") is ConsentStatus.EXPIRED
    assert store.status("unknown") is ConsentStatus.NONE


def test_expired_approval_can_be_asked_again_but_a_denial_is_final(tmp_path: Path) -> None:
    clock = Now()
    store = ConsentStore(tmp_path / "c.sqlite3", now=clock)
    _request(store)
    store.approve("S-1", "olga", timedelta(minutes=5))
    _request(store)  # still approved: unchanged
    assert store.status("S-1") is ConsentStatus.APPROVED
    clock.value = NOW + timedelta(minutes=6)
    _request(store, until=NOW + timedelta(hours=3))
    assert store.status("S-1") is ConsentStatus.PENDING
    store.deny("S-1", "olga", "customer is printing payroll")
    with pytest.raises(ConsentError, match="denial is final"):
        store.approve("S-1", "bob")
    with pytest.raises(ConsentError, match="denial is final"):
        store.deny("S-1", "bob")
    record = store.get("S-1")
    assert record is not None
    assert record.state is ConsentState.DENIED
    assert record.decided_by == "olga"
    with pytest.raises(ConsentError, match="no consent request"):
        store.approve("S-9", "olga")


def test_a_lapsed_request_cannot_be_approved(tmp_path: Path) -> None:
    clock = Now()
    store = ConsentStore(tmp_path / "c.sqlite3", now=clock)
    _request(store, until=NOW + timedelta(minutes=1))
    clock.value = NOW + timedelta(minutes=2)
    assert store.pending() == []
    with pytest.raises(ConsentError, match="lapsed"):
        store.approve("S-1", "olga")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(minutes=90)),
        ("45", timedelta(minutes=45)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "m", "-5m", "5x", "0m"])
def test_parse_duration_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


# -- CLI ---------------------------------------------------------------------------------------

runner = CliRunner()


def _config(tmp_path: Path, server_key_file: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
device_id = "dev-1"
server_key_file = "{server_key_file}"
data_dir = "{tmp_path / "data"}"
[broker]
host = "localhost"
allow_plaintext = true
[policy]
max_consent_minutes = 45
"""
    )
    return path


def test_cli_lists_approves_and_denies(tmp_path: Path, server_key_file: Path) -> None:
    config = str(_config(tmp_path, server_key_file))
    (tmp_path / "data").mkdir()
    store = ConsentStore(tmp_path / "data" / "agent.sqlite3", now=lambda: datetime.now(UTC))
    _request(store, "S-1", until=datetime.now(UTC) + timedelta(hours=2))
    _request(store, "S-2", until=datetime.now(UTC) + timedelta(hours=2))

    listed = runner.invoke(app, ["consent", "list", "--config", config])
    assert listed.exit_code == 0, listed.output
    assert "S-1" in listed.output
    assert "tina" in listed.output
    assert "paper jam" in listed.output

    approved = runner.invoke(
        app, ["consent", "approve", "S-1", "--for", "2h", "--as", "olga", "--config", config]
    )
    assert approved.exit_code == 0, approved.output
    record = store.get("S-1")
    assert record is not None
    assert record.decided_by == "olga"
    assert record.expires_at is not None
    assert record.decided_at is not None
    assert record.expires_at - record.decided_at == timedelta(minutes=45)  # --for 2h, capped by the policy

    denied = runner.invoke(app, ["consent", "deny", "S-2", "--reason", "busy", "--config", config])
    assert denied.exit_code == 0, denied.output
    again = runner.invoke(app, ["consent", "approve", "S-2", "--config", config])
    assert again.exit_code == 1
    assert "denial is final" in again.output
    bad = runner.invoke(app, ["consent", "approve", "S-1", "--for", "soon", "--config", config])
    assert bad.exit_code == 2
    assert "--for" in bad.output

    everything = runner.invoke(app, ["consent", "list", "--all", "--config", config])
    assert "approved by olga" in everything.output
    assert "denied by" in everything.output
    assert "no pending consent requests" in runner.invoke(app, ["consent", "list", "--config", config]).output


# -- runtime: the consent command and exactly-once decision events ------------------------------


def _events(runtime: AgentRuntime, name: str) -> list[Event]:
    messages = [decode_uplink(e.topic, e.payload) for e in runtime.outbox.pending(10_000)]
    return [m for m in messages if isinstance(m, Event) and m.event == name]


async def _eventually(check: Any, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


def _consent_command(signer: CommandSigner, session: str, **args: Any) -> bytes:
    until = datetime.now(UTC) + timedelta(hours=1)
    return encode(
        signer.sign(
            device_id="dev-1",
            action=CONSENT_ACTION,
            issuer="tina@acme",
            session_id=session,
            ttl=timedelta(minutes=5),
            args={"technician": "tina", "reason": "paper jam", "until": until.isoformat(), **args},
        )
    )


async def test_consent_request_and_decisions_are_announced_exactly_once_across_restarts(
    tmp_path: Path, server_key_file: Path, signer: CommandSigner
) -> None:
    settings = make_settings(tmp_path, server_key_file=server_key_file)
    async with asyncio.timeout(15):
        async with AgentRuntime(settings) as runtime:
            runtime.link.incoming.put_nowait(_consent_command(signer, "S-1"))
            runtime.link.incoming.put_nowait(_consent_command(signer, "S-2"))
            await _eventually(lambda: len(_events(runtime, "consent.requested")) == 2)
            requested = _events(runtime, "consent.requested")[0]
            assert requested.data["session_id"] == "S-1"
            assert requested.data["technician"] == "tina"
            assert requested.data["reason"] == "paper jam"
            assert requested.data["until"].endswith("Z")
            replies = [
                m
                for m in (decode_uplink(e.topic, e.payload) for e in runtime.outbox.pending(10_000))
                if isinstance(m, Reply) and m.type is ReplyType.RESULT
            ]
            assert replies[0].output == "waiting for a local operator's approval"
            assert [r.session_id for r in runtime.consent.pending()] == ["S-1", "S-2"]
            runtime.consent.approve("S-1", "olga", timedelta(minutes=30))
            await _eventually(lambda: len(_events(runtime, "consent.granted")) == 1)
            granted = _events(runtime, "consent.granted")[0]
            assert granted.data["session_id"] == "S-1"
            assert granted.data["approved_by"] == "olga"
            assert granted.data["expires_at"].endswith("Z")
        # Decided while the agent is down (the CLI is another process).
        store = ConsentStore(Path(settings.data_dir) / "agent.sqlite3", now=lambda: datetime.now(UTC))
        store.deny("S-2", "olga", "busy")
        # A crash after queueing the event but before marking it announced:
        with sqlite3.connect(Path(settings.data_dir) / "agent.sqlite3") as db:
            db.execute("UPDATE consent SET announced = 0 WHERE session_id = 'S-1'")
        async with AgentRuntime(settings) as runtime:
            await _eventually(lambda: len(_events(runtime, "consent.denied")) == 1)
            await asyncio.sleep(0.7)  # at least one more poll
            assert len(_events(runtime, "consent.granted")) == 1
            assert len(_events(runtime, "consent.denied")) == 1
            denied = _events(runtime, "consent.denied")[0]
            assert denied.data == {"session_id": "S-2", "denied_by": "olga", "reason": "busy"}
            assert runtime.announce_consent_decisions() == 0


async def test_consent_command_needs_a_session_and_reports_a_final_denial(
    tmp_path: Path, server_key_file: Path, signer: CommandSigner
) -> None:
    settings = make_settings(tmp_path, server_key_file=server_key_file)
    without = signer.sign(
        device_id="dev-1",
        action=CONSENT_ACTION,
        issuer="tina",
        ttl=timedelta(minutes=5),
        args={"technician": "tina", "until": (datetime.now(UTC) + timedelta(hours=1)).isoformat()},
    )
    async with asyncio.timeout(10), AgentRuntime(settings) as runtime:
        runtime.link.incoming.put_nowait(encode(without))
        runtime.link.incoming.put_nowait(_consent_command(signer, "S-1"))
        await _eventually(lambda: runtime.consent.get("S-1") is not None)
        runtime.consent.deny("S-1", "olga", "no")
        runtime.link.incoming.put_nowait(_consent_command(signer, "S-1"))

        def terminal() -> list[Reply]:
            messages = [decode_uplink(e.topic, e.payload) for e in runtime.outbox.pending(10_000)]
            return [
                m for m in messages if isinstance(m, Reply) and m.type in (ReplyType.RESULT, ReplyType.ERROR)
            ]

        await _eventually(lambda: len(terminal()) == 3)
        first, _, last = terminal()
    assert first.type is ReplyType.ERROR
    assert "session_id" in first.output
    assert last.ok is False
    assert "denial is final" in last.output


async def test_in_process_decision_is_announced_without_waiting_for_the_poll(
    tmp_path: Path, server_key_file: Path
) -> None:
    """A simulated fleet looks for CLI decisions rarely; runtime.consent decisions wake it."""
    settings = make_settings(tmp_path, server_key_file=server_key_file, consent_poll_interval=3600)
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[]) as runtime:
        await asyncio.sleep(0.1)  # the consent task is waiting now
        _request(runtime.consent, "S-7", until=datetime.now(UTC) + timedelta(hours=1))
        runtime.consent.deny("S-7", "olga", "busy")
        await _eventually(lambda: len(_events(runtime, "consent.denied")) == 1, timeout=2.0)

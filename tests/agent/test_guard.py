from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.actions import ActionRegistry
from agent.config import MaintenanceWindow
from agent.consent import ConsentStore
from agent.errors import ConsentError
from agent.guard import Accepted, CommandGuard, Rejection
from agent.plugin import ActionContext, ActionResult, ActionSpec
from agent.policy import ActionPolicy
from agent.replay import SqliteReplayCache
from protocol import CANCEL_ACTION, Command, CommandSigner, CommandVerifier, RejectReason, encode

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DEV = "dev-1"


class Handler:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, args: Any, ctx: ActionContext) -> ActionResult:
        self.calls += 1
        return ActionResult(ok=True)


@pytest.fixture
def handler() -> Handler:
    return Handler()


def _guard(
    tmp_path: Path,
    key: Ed25519PrivateKey,
    handler: Handler,
    *,
    allowed: tuple[str, ...] = ("ping", "printer.*", "printer.reboot_exact"),
    now: datetime = NOW,
) -> CommandGuard:
    registry = ActionRegistry()
    registry.add(ActionSpec("ping", handler), source="built-in")
    registry.add(ActionSpec("printer.status", handler), source="plugin")
    registry.add(ActionSpec("printer.reboot", handler, disruptive=True), source="plugin")
    registry.add(ActionSpec("printer.reboot_exact", handler, disruptive=True), source="plugin")
    registry.add(
        ActionSpec(
            "logs.tail",
            handler,
            args_schema={
                "type": "object",
                "properties": {"path": {"type": "string"}, "lines": {"type": "integer", "minimum": 1}},
                "required": ["path"],
                "additionalProperties": False,
            },
        ),
        source="built-in",
    )
    return CommandGuard(
        verifier=CommandVerifier(key.public_key(), DEV),
        policy=ActionPolicy([*allowed, "logs.tail"]),
        registry=registry,
        replay_cache=SqliteReplayCache(tmp_path / "replay.sqlite3", now=lambda: now),
        now=lambda: now,
    )


def _sign(signer: CommandSigner, **kw: Any) -> Command:
    params: dict[str, Any] = {
        "device_id": DEV,
        "action": "ping",
        "issuer": "alice",
        "ttl": timedelta(minutes=5),
        "now": NOW,
    }
    params.update(kw)
    return signer.sign(**params)


def _reason(verdict: Accepted | Rejection) -> RejectReason:
    assert isinstance(verdict, Rejection), f"expected a rejection, got {verdict}"
    return verdict.reason


def test_guard_accepts_a_valid_signed_allowed_command(
    tmp_path: Path, signing_key: Ed25519PrivateKey, signer: CommandSigner, handler: Handler
) -> None:
    command = _sign(signer)
    verdict = _guard(tmp_path, signing_key, handler).inspect(encode(command))
    assert isinstance(verdict, Accepted)
    assert verdict.command.id == command.id
    assert verdict.action.name == "ping"
    assert handler.calls == 0  # the guard decides; it never runs anything


def test_guard_rejects_command_signed_by_another_key(
    tmp_path: Path, signing_key: Ed25519PrivateKey, handler: Handler
) -> None:
    forged = _sign(CommandSigner(Ed25519PrivateKey.generate()))
    verdict = _guard(tmp_path, signing_key, handler).inspect(encode(forged))
    assert _reason(verdict) is RejectReason.UNKNOWN_KEY
    assert isinstance(verdict, Rejection)
    assert (verdict.command_id, verdict.action, verdict.issuer) == (forged.id, "ping", "alice")


def test_guard_rejects_forgery_that_claims_the_pinned_key_id(
    tmp_path: Path, signing_key: Ed25519PrivateKey, signer: CommandSigner, handler: Handler
) -> None:
    forger = CommandSigner(Ed25519PrivateKey.generate())
    forged = _sign(forger).model_copy(update={"kid": signer.kid})
    assert (
        _reason(_guard(tmp_path, signing_key, handler).inspect(encode(forged))) is RejectReason.BAD_SIGNATURE
    )


def test_guard_rejects_tampered_command(
    tmp_path: Path, signing_key: Ed25519PrivateKey, signer: CommandSigner, handler: Handler
) -> None:
    wire = json.loads(encode(_sign(signer, action="logs.tail", args={"path": "/var/log/app.log"})))
    wire["args"]["path"] = "/etc/shadow"
    verdict = _guard(tmp_path, signing_key, handler).inspect(json.dumps(wire).encode())
    assert _reason(verdict) is RejectReason.BAD_SIGNATURE


def test_guard_rejects_replayed_command(
    tmp_path: Path, signing_key: Ed25519PrivateKey, signer: CommandSigner, handler: Handler
) -> None:
    guard = _guard(tmp_path, signing_key, handler)
    payload = encode(_sign(signer))
    assert isinstance(guard.inspect(payload), Accepted)
    assert _reason(guard.inspect(payload)) is RejectReason.REPLAYED


def test_guard_rejects_replayed_command_after_restart_on_same_data_dir(
    tmp_path: Path, signing_key: Ed25519PrivateKey, signer: CommandSigner, handler: Handler
) -> None:
    payload = encode(_sign(signer))
    first = _guard(tmp_path, signing_key, handler)
    assert isinstance(first.inspect(payload), Accepted)
    first.replay_cache.close()  # type: ignore[attr-defined]
    again = _guard(tmp_path, signing_key, handler)
    assert _reason(again.inspect(payload)) is RejectReason.REPLAYED


def test_guard_rejects_expired_command(
    tmp_path: Path, signing_key: Ed25519PrivateKey, signer: CommandSigner, handler: Handler
) -> None:
    old = _sign(signer, now=NOW - timedelta(minutes=10))
    assert _reason(_guard(tmp_path, signing_key, handler).inspect(encode(old))) is RejectReason.EXPIRED


def test_guard_rejects_not_yet_valid_command_beyond_skew(
    tmp_path: Path, signing_key: Ed25519PrivateKey, signer: CommandSigner, handler: Handler
) -> None:
    guard = _guard(tmp_path, signing_key, handler)
    future = _sign(signer, now=NOW + timedelta(minutes=5))
    assert _reason(guard.inspect(encode(future))) is RejectReason.NOT_YET_VALID
    slightly_ahead = _sign(signer, now=NOW + timedelta(seconds=60))  # inside the 120 s allowance
    assert isinstance(guard.inspect(encode(slightly_ahead)), Accepted)


def test_guard_rejects_command_addressed_to_another_device(
    tmp_path: Path, signing_key: Ed25519PrivateKey, signer: CommandSigner, handler: Handler
) -> None:
    other = _sign(signer, device_id="dev-2")
    assert _reason(_guard(tmp_path, signing_key, handler).inspect(encode(other))) is RejectReason.WRONG_DEVICE


def test_guard_rejects_action_not_in_allow_list(
    tmp_path: Path, signing_key: Ed25519PrivateKey, signer: CommandSigner, handler: Handler
) -> None:
    guard = _guard(tmp_path, signing_key, handler, allowed=("logs.tail",))
    verdict = guard.inspect(encode(_sign(signer, action="ping")))
    assert _reason(verdict) is RejectReason.NOT_ALLOWED


def test_guard_rejects_unknown_action(
    tmp_path: Path, signing_key: Ed25519PrivateKey, signer: CommandSigner, handler: Handler
) -> None:
    verdict = _guard(tmp_path, signing_key, handler).inspect(encode(_sign(signer, action="shell.exec")))
    assert _reason(verdict) is RejectReason.UNKNOWN_ACTION
    assert isinstance(verdict, Rejection)
    assert "no action" in verdict.detail


def test_guard_pattern_never_allows_a_disruptive_action(
    tmp_path: Path, signing_key: Ed25519PrivateKey, signer: CommandSigner, handler: Handler
) -> None:
    guard = _guard(tmp_path, signing_key, handler)
    assert isinstance(guard.inspect(encode(_sign(signer, action="printer.status"))), Accepted)
    assert _reason(guard.inspect(encode(_sign(signer, action="printer.reboot")))) is RejectReason.NOT_ALLOWED
    assert isinstance(guard.inspect(encode(_sign(signer, action="printer.reboot_exact"))), Accepted)


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe not utf-8", b"[1, 2]", b"{not json", b'{"v": 2, "id": "abcdefgh12"}', b"", b"x" * 300_000],
)
def test_guard_rejects_malformed_bytes(
    tmp_path: Path, signing_key: Ed25519PrivateKey, handler: Handler, payload: bytes
) -> None:
    verdict = _guard(tmp_path, signing_key, handler).inspect(payload)
    assert _reason(verdict) is RejectReason.MALFORMED


def test_guard_reports_the_id_of_a_malformed_command_when_it_can_read_one(
    tmp_path: Path, signing_key: Ed25519PrivateKey, signer: CommandSigner, handler: Handler
) -> None:
    wire = json.loads(encode(_sign(signer)))
    wire["unexpected"] = True
    verdict = _guard(tmp_path, signing_key, handler).inspect(json.dumps(wire).encode())
    assert isinstance(verdict, Rejection)
    assert verdict.reason is RejectReason.MALFORMED
    assert verdict.command_id == wire["id"]
    assert verdict.action == "ping"


def test_guard_rejects_arguments_outside_the_action_schema(
    tmp_path: Path, signing_key: Ed25519PrivateKey, signer: CommandSigner, handler: Handler
) -> None:
    guard = _guard(tmp_path, signing_key, handler)
    for args in ({}, {"path": 3}, {"path": "/x", "lines": 0}, {"path": "/x", "shell": "rm -rf /"}):
        verdict = guard.inspect(encode(_sign(signer, action="logs.tail", args=args)))
        assert _reason(verdict) is RejectReason.BAD_ARGS, args


def test_guard_does_not_remember_refused_commands_in_replay_cache(
    tmp_path: Path, signing_key: Ed25519PrivateKey, signer: CommandSigner, handler: Handler
) -> None:
    guard = _guard(tmp_path, signing_key, handler, allowed=())
    guard.inspect(encode(_sign(signer, action="ping")))
    assert len(guard.replay_cache) == 0  # type: ignore[arg-type]


def test_replay_cache_prunes_ids_past_expiry_and_skew(tmp_path: Path) -> None:
    clock = {"now": NOW}
    cache = SqliteReplayCache(tmp_path / "r.sqlite3", now=lambda: clock["now"])
    assert cache.remember("old-command", NOW + timedelta(minutes=1))
    assert not cache.remember("old-command", NOW + timedelta(minutes=1))
    clock["now"] = NOW + timedelta(hours=1)
    assert cache.remember("new-command", NOW + timedelta(hours=2))
    assert len(cache) == 1


def test_guard_fails_closed_when_the_replay_cache_is_unusable(
    tmp_path: Path, signing_key: Ed25519PrivateKey, signer: CommandSigner, handler: Handler
) -> None:
    guard = _guard(tmp_path, signing_key, handler)
    guard.replay_cache.close()  # type: ignore[attr-defined]  # any later use raises AgentError
    assert _reason(guard.inspect(encode(_sign(signer)))) is RejectReason.GUARD_UNAVAILABLE


# -- local policy: forbidden, windows, consent -------------------------------------------------


class Now:
    """A settable clock shared by the guard and the consent store."""

    def __init__(self, value: datetime = NOW) -> None:
        self.value = value

    def __call__(self) -> datetime:
        return self.value


def _consent_guard(
    tmp_path: Path,
    key: Ed25519PrivateKey,
    handler: Handler,
    clock: Now,
    **policy: Any,
) -> tuple[CommandGuard, ConsentStore]:
    registry = ActionRegistry()
    registry.add(ActionSpec("ping", handler), source="built-in")
    registry.add(ActionSpec("file.fetch", handler), source="built-in")
    registry.add(ActionSpec("printer.reboot", handler, disruptive=True), source="plugin")
    registry.add(ActionSpec(CANCEL_ACTION, handler), source="control")
    tmp_path.mkdir(exist_ok=True)
    store = ConsentStore(tmp_path / "consent.sqlite3", now=clock, max_approval=timedelta(hours=8))
    guard = CommandGuard(
        verifier=CommandVerifier(key.public_key(), DEV),
        policy=ActionPolicy(
            policy.pop("allowed", ["ping", "printer.reboot"]),
            consent=policy.pop("consent", ["file.fetch"]),
            **policy,
        ),
        registry=registry,
        replay_cache=SqliteReplayCache(tmp_path / "replay.sqlite3", now=clock),
        now=clock,
        consent=store,
    )
    return guard, store


def _request(store: ConsentStore, session: str = "S-1", *, all_commands: bool = False) -> None:
    store.request(
        session,
        technician="tina",
        reason="jam",
        until=NOW + timedelta(hours=2),
        all_commands=all_commands,
        issuer="tina",
        command_id="cmd-consent-1",
    )


def test_guard_needs_consent_then_runs_once_approved_then_not_after_expiry(
    tmp_path: Path, signing_key: Ed25519PrivateKey, signer: CommandSigner, handler: Handler
) -> None:
    clock = Now()
    guard, store = _consent_guard(tmp_path, signing_key, handler, clock)

    def fetch() -> Accepted | Rejection:
        command = _sign(signer, action="file.fetch", session_id="S-1", now=clock.value)
        return guard.inspect(encode(command))

    no_session = guard.inspect(encode(_sign(signer, action="file.fetch")))
    assert _reason(no_session) is RejectReason.NEEDS_CONSENT
    assert isinstance(no_session, Rejection)
    assert "no session" in no_session.detail
    assert _reason(fetch()) is RejectReason.NEEDS_CONSENT  # never requested
    _request(store)
    pending = fetch()
    assert _reason(pending) is RejectReason.NEEDS_CONSENT
    assert isinstance(pending, Rejection)
    assert "waiting" in pending.detail
    store.approve("S-1", "olga", timedelta(minutes=30))
    assert isinstance(fetch(), Accepted)
    assert isinstance(guard.inspect(encode(_sign(signer, action="ping"))), Accepted)  # no consent needed
    clock.value = NOW + timedelta(minutes=30)
    expired = fetch()
    assert _reason(expired) is RejectReason.NEEDS_CONSENT
    assert isinstance(expired, Rejection)
    assert "expired" in expired.detail


def test_guard_denied_session_is_refused_for_good(
    tmp_path: Path, signing_key: Ed25519PrivateKey, signer: CommandSigner, handler: Handler
) -> None:
    clock = Now()
    guard, store = _consent_guard(tmp_path, signing_key, handler, clock)
    _request(store)
    store.deny("S-1", "olga", "not today")
    command = _sign(signer, action="file.fetch", session_id="S-1")
    verdict = guard.inspect(encode(command))
    assert _reason(verdict) is RejectReason.CONSENT_DENIED
    assert isinstance(verdict, Rejection)
    assert "not today" in verdict.detail
    with pytest.raises(ConsentError, match="final"):
        store.approve("S-1", "olga")
    _request(store)  # asking again changes nothing
    assert _reason(guard.inspect(encode(_sign(signer, action="file.fetch", session_id="S-1")))) is (
        RejectReason.CONSENT_DENIED
    )


def test_guard_attended_mode_and_all_commands_sessions_gate_every_action(
    tmp_path: Path, signing_key: Ed25519PrivateKey, signer: CommandSigner, handler: Handler
) -> None:
    clock = Now()
    guard, store = _consent_guard(tmp_path / "a", signing_key, handler, clock, attended=True)
    assert _reason(guard.inspect(encode(_sign(signer, session_id="S-1")))) is RejectReason.NEEDS_CONSENT
    cancel = _sign(signer, action=CANCEL_ACTION, args={}, session_id="S-1")
    assert isinstance(guard.inspect(encode(cancel)), Accepted)  # control actions never need consent
    _request(store)
    store.approve("S-1", "olga")
    assert isinstance(guard.inspect(encode(_sign(signer, session_id="S-1"))), Accepted)

    guard, store = _consent_guard(tmp_path / "b", signing_key, handler, clock)
    _request(store, all_commands=True)
    assert _reason(guard.inspect(encode(_sign(signer, session_id="S-1")))) is RejectReason.NEEDS_CONSENT
    assert isinstance(guard.inspect(encode(_sign(signer, session_id="S-2"))), Accepted)


def test_guard_forbidden_and_outside_window(
    tmp_path: Path, signing_key: Ed25519PrivateKey, signer: CommandSigner, handler: Handler
) -> None:
    clock = Now()  # Monday 2026-06-01 12:00 UTC
    window = MaintenanceWindow(days=["mon"], start="22:00", end="06:00", tz="UTC")
    guard, _ = _consent_guard(tmp_path, signing_key, handler, clock, forbidden=["ping"], windows=[window])
    assert _reason(guard.inspect(encode(_sign(signer)))) is RejectReason.NOT_ALLOWED
    outside = guard.inspect(encode(_sign(signer, action="printer.reboot")))
    assert _reason(outside) is RejectReason.OUTSIDE_WINDOW
    assert isinstance(outside, Rejection)
    assert "mon 22:00-06:00 UTC" in outside.detail
    clock.value = NOW + timedelta(hours=11)  # 23:00
    late = _sign(signer, action="printer.reboot", now=clock.value)
    assert isinstance(guard.inspect(encode(late)), Accepted)
    assert handler.calls == 0

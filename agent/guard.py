"""Every command passes the guard before anything runs.

Checks, in order (cheapest and least trusting first):

1. decode        size, JSON, version, schema              → ``malformed``
2. verify        pinned key id, Ed25519 signature         → ``unknown_key`` / ``bad_signature``
                 device binding                           → ``wrong_device``
                 not yet valid (beyond the skew allowance) → ``not_yet_valid``
                 expired, lifetime over the maximum       → ``expired`` / ``lifetime_too_long``
3. local policy  action exists here                       → ``unknown_action``
                 not forbidden (see agent/policy.py)      → ``not_allowed``
                 disruptive: inside a maintenance window  → ``outside_window``
4. consent       when the action needs consent, the policy is attended, or the session asked
                 consent for all its commands: the command's session is approved by a local
                 operator and the approval has not expired *now*
                                                          → ``needs_consent`` / ``consent_denied``
5. arguments     fit the action's ``args_schema``          → ``bad_args``
6. replay cache  id not seen before (persistent)          → ``replayed``

The replay cache is consulted last, so junk and refused commands never fill it; an id is
remembered before its command runs (at-most-once execution). A command the agent replays from
its inbox after a restart (agent/inbox.py) is checked through the inbox's claim: the id its own
row recorded is not a replay, any other delivery of that id still is. A rejected command is never
executed: :meth:`CommandGuard.inspect` returns a :class:`Rejection`, not the command.
Control actions (``session.consent``, ``command.cancel``) skip steps 3-4's policy and consent.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.actions.registry import ActionRegistry, RegisteredAction
from agent.consent import ConsentStatus, ConsentStore
from agent.errors import AgentError
from agent.plugin import ActionSpec
from agent.policy import ActionPolicy
from protocol import (
    CONTROL_ACTIONS,
    MAX_PAYLOAD_BYTES,
    Command,
    CommandRejected,
    CommandVerifier,
    DecodeError,
    RejectReason,
    ReplayCache,
    decode_command,
)
from protocol.args import check_args

__all__ = ["Accepted", "CommandGuard", "Rejection"]

logger = logging.getLogger(__name__)

_COMMAND_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a command was refused. ``command_id``/``action``/``issuer`` are None when unknown;
    for a malformed command they are best-effort readings of untrusted input."""

    reason: RejectReason
    detail: str
    command_id: str | None = None
    action: str | None = None
    issuer: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    command: Command
    action: RegisteredAction


def _peek(payload: bytes) -> tuple[str | None, str | None, str | None]:
    """(id, action, issuer) from a payload that failed decoding; for the audit trail only."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return None, None, None
    try:
        obj: Any = json.loads(payload)
    except (ValueError, RecursionError):
        return None, None, None
    if not isinstance(obj, dict):
        return None, None, None

    def text(key: str, limit: int) -> str | None:
        value = obj.get(key)
        return value[:limit] if isinstance(value, str) else None

    command_id = text("id", 64)
    if command_id is not None and not _COMMAND_ID.fullmatch(command_id):
        command_id = None
    return command_id, text("action", 64), text("issuer", 128)


class CommandGuard:
    def __init__(
        self,
        *,
        verifier: CommandVerifier,
        policy: ActionPolicy,
        registry: ActionRegistry,
        replay_cache: ReplayCache,
        now: Callable[[], datetime],
        consent: ConsentStore | None = None,
    ) -> None:
        self.verifier = verifier
        self.policy = policy
        self.registry = registry
        self.replay_cache = replay_cache
        self.consent = consent
        self._now = now

    def inspect(  # noqa: PLR0911 - one exit per check
        self, payload: bytes, *, replay_cache: ReplayCache | None = None
    ) -> Accepted | Rejection:
        """Decide on one raw command payload. Never raises for bad input.

        ``replay_cache`` replaces the guard's for this one call: the inbox's claim for the row
        holding ``payload`` (agent/inbox.py), which records the id with the row's state."""
        try:
            command = decode_command(payload)
        except DecodeError as exc:
            command_id, action, issuer = _peek(payload)
            return Rejection(RejectReason.MALFORMED, str(exc), command_id, action, issuer)

        def reject(reason: RejectReason, detail: str) -> Rejection:
            return Rejection(reason, detail, command.id, command.action, command.issuer)

        try:
            self.verifier.verify(command, now=self._now())
        except CommandRejected as exc:
            return reject(exc.reason, exc.detail)

        registered = self.registry.get(command.action)
        if registered is None:
            return reject(RejectReason.UNKNOWN_ACTION, f"this device has no action {command.action!r}")
        spec = registered.spec
        if not self.policy.allows(spec):
            why = " (disruptive actions must be listed by exact name)" if spec.disruptive else ""
            return reject(
                RejectReason.NOT_ALLOWED,
                f"action {command.action!r} is forbidden by this device's policy: not in "
                f"allowed_actions or consent_actions, or in forbidden_actions{why}",
            )
        now = self._now()
        if not self.policy.in_window(spec, now):
            shown = "; ".join(w.label() for w in self.policy.windows_for(spec))
            return reject(
                RejectReason.OUTSIDE_WINDOW,
                f"disruptive action {command.action!r} only runs inside the maintenance windows: {shown}",
            )
        if spec.name not in CONTROL_ACTIONS:
            refused = self._check_consent(command, spec, now)
            if refused is not None:
                return reject(*refused)

        problems = check_args(command.args, spec.args_schema)
        if problems:
            return reject(RejectReason.BAD_ARGS, "; ".join(problems)[:1024])

        try:
            self.verifier.check_replay(command, self.replay_cache if replay_cache is None else replay_cache)
        except CommandRejected as exc:
            return reject(exc.reason, exc.detail)
        except AgentError as exc:
            # Fail closed: without the replay cache we cannot promise at-most-once execution.
            logger.error("replay cache unavailable, refusing command %s: %s", command.id, exc)
            return reject(RejectReason.GUARD_UNAVAILABLE, f"replay cache unavailable on the device: {exc}")
        return Accepted(command, registered)

    def _check_consent(
        self, command: Command, spec: ActionSpec, now: datetime
    ) -> tuple[RejectReason, str] | None:
        """None when no consent is needed or the session's approval holds at ``now``."""
        session = command.session_id
        try:
            record = self.consent.get(session) if self.consent is not None and session else None
        except AgentError as exc:
            logger.error("consent store unavailable, refusing command %s: %s", command.id, exc)
            return RejectReason.GUARD_UNAVAILABLE, f"consent store unavailable on the device: {exc}"
        all_commands = record is not None and record.all_commands
        if not self.policy.needs_consent(spec, session_all_commands=all_commands):
            return None
        why = (
            "this device is attended: every session command needs"
            if self.policy.attended
            else "this session asked consent for all its commands and needs"
            if all_commands
            else f"action {spec.name!r} needs"
        )
        if not session:
            return (
                RejectReason.NEEDS_CONSENT,
                f"{why} a local operator's approval, and the command has no session",
            )
        status = ConsentStatus.NONE if record is None else record.status(now)
        if status is ConsentStatus.APPROVED:
            return None
        if status is ConsentStatus.DENIED:
            assert record is not None
            return (
                RejectReason.CONSENT_DENIED,
                f"session {session} was denied by the local operator {record.decided_by}"
                + (f" ({record.deny_reason})" if record.deny_reason else ""),
            )
        detail = {
            ConsentStatus.NONE: f"no consent was requested for session {session} (send session.consent first)",
            ConsentStatus.PENDING: f"session {session} is waiting for a local operator's approval",
            ConsentStatus.EXPIRED: f"the approval of session {session} expired"
            + (f" at {record.expires_at:%Y-%m-%d %H:%M:%S}Z" if record and record.expires_at else ""),
        }[status]
        return RejectReason.NEEDS_CONSENT, f"{why} a local operator's approval: {detail}"

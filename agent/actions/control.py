"""The control actions every agent understands (``protocol.CONTROL_ACTIONS``): asking the local
operator for consent to a session, and cancelling a running command. The policy cannot forbid
them and they never need consent: neither changes the equipment."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from agent.consent import ConsentRecord, ConsentStatus, ConsentStore
from agent.errors import ActionArgumentError
from agent.plugin import ActionContext, ActionResult, ActionSpec
from protocol import CANCEL_ACTION, CONSENT_ACTION, format_ts

__all__ = ["control_actions"]


def _parse_until(raw: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise ActionArgumentError(f"until: {raw!r} is not an ISO 8601 time") from exc
    if value.tzinfo is None:
        raise ActionArgumentError(f"until: {raw!r} needs a time zone (e.g. a trailing Z)")
    return value.astimezone(UTC)


def control_actions(
    *,
    consent: Callable[[], ConsentStore],
    cancel: Callable[[str, str], bool],
    on_requested: Callable[[ConsentRecord], None],
    now: Callable[[], datetime],
) -> list[ActionSpec]:
    """``consent()`` is the store (opened when the runtime starts); ``cancel(command_id, by)`` stops a running command; ``on_requested`` announces a new
    pending request (the ``consent.requested`` event); ``now`` is the clock commands are judged
    by (the wall clock, like the guard's)."""

    async def request(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        session_id = ctx.session_id
        if not session_id:
            raise ActionArgumentError("session.consent must carry the session_id it asks consent for")
        until = _parse_until(str(args["until"]))
        if until <= now():
            raise ActionArgumentError(f"until: {format_ts(until)} has already passed")
        record = consent().request(
            session_id,
            technician=str(args["technician"]),
            reason=str(args.get("reason", "")),
            until=until,
            all_commands=bool(args.get("all_commands", False)),
            issuer=ctx.issuer,
            command_id=ctx.command_id,
        )
        status = record.status(now())
        data: dict[str, Any] = {"session_id": session_id, "state": status.value}
        if status is ConsentStatus.DENIED:
            return ActionResult(
                ok=False,
                output=f"session {session_id} was denied by {record.decided_by}; a denial is final",
                data={**data, "denied_by": record.decided_by, "reason": record.deny_reason or ""},
            )
        if status is ConsentStatus.APPROVED:
            assert record.expires_at is not None
            return ActionResult(
                ok=True,
                output=f"already approved by {record.decided_by} until {format_ts(record.expires_at)}",
                data={**data, "approved_by": record.decided_by, "expires_at": format_ts(record.expires_at)},
            )
        on_requested(record)
        return ActionResult(ok=True, output="waiting for a local operator's approval", data=data)

    async def cancel_command(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        target = str(args["command_id"])
        if target == ctx.command_id:
            raise ActionArgumentError("command.cancel cannot cancel itself")
        cancelled = cancel(target, ctx.issuer)
        output = f"command {target} cancelled" if cancelled else f"command {target} is not running"
        return ActionResult(ok=True, output=output, data={"command_id": target, "cancelled": cancelled})

    return [
        ActionSpec(
            CONSENT_ACTION,
            request,
            "Ask the local operator to approve this remote session.",
            timeout=10.0,
            args_schema={
                "type": "object",
                "properties": {
                    "technician": {"type": "string", "maxLength": 256},
                    "reason": {"type": "string", "maxLength": 1024},
                    "until": {"type": "string", "maxLength": 64},
                    "all_commands": {"type": "boolean"},
                },
                "required": ["technician", "until"],
                "additionalProperties": False,
            },
        ),
        ActionSpec(
            CANCEL_ACTION,
            cancel_command,
            "Stop a running command.",
            timeout=5.0,
            args_schema={
                "type": "object",
                "properties": {"command_id": {"type": "string", "maxLength": 64}},
                "required": ["command_id"],
                "additionalProperties": False,
            },
        ),
    ]

"""The server's copy of the device owner's policy, checked *before* a command is signed.

The agent advertises its action catalogue (``Device.inventory["agent"]["catalogue"]``: one
``protocol.ActionInfo`` per action with the owner's decision ``allowed | needs_consent |
forbidden``) and whether it is ``attended``. The server refuses what the agent would refuse,
so nothing the owner has not allowed is ever signed; the agent enforces the policy again
regardless (a stale catalogue cannot widen what runs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import protocol
from protocol.args import check_args
from server.base.users import Principal
from server.db.models import Device, RemoteSession, Role, SessionState, Site
from server.errors import Conflict, Forbidden, InvalidInput

__all__ = ["Catalogue", "catalogue_of", "check_command", "consent_valid", "device_attended"]


@dataclass(frozen=True, slots=True)
class Catalogue:
    """The actions a device advertised (empty: it has not advertised any yet)."""

    actions: dict[str, dict[str, Any]]
    attended: bool

    def decision(self, action: str) -> protocol.PolicyDecision:
        return protocol.PolicyDecision(self.actions[action].get("policy", protocol.PolicyDecision.ALLOWED))


def catalogue_of(device: Device) -> Catalogue:
    agent = (device.inventory or {}).get("agent") or {}
    entries = agent.get("catalogue") or []
    actions = {
        str(entry["name"]): dict(entry) for entry in entries if isinstance(entry, dict) and "name" in entry
    }
    return Catalogue(actions=actions, attended=bool(agent.get("attended", False)))


async def device_attended(session: AsyncSession, device: Device) -> bool:
    """Consent for any session: the site is in attended mode, or the agent's owner says so."""
    if catalogue_of(device).attended:
        return True
    if device.site_id is None:
        return False
    return bool(await session.scalar(select(Site.attended).where(Site.id == device.site_id)))


def consent_valid(remote: RemoteSession, now: datetime) -> bool:
    return (
        remote.consent_by is not None
        and remote.consent_expires_at is not None
        and remote.consent_expires_at > now
    )


async def check_command(
    session: AsyncSession,
    principal: Principal,
    device: Device,
    action: str,
    remote: RemoteSession | None,
    *,
    now: datetime,
    args: Mapping[str, Any] | None = None,
) -> None:
    """Raise if the command must not be signed: the session is denied or not usable, the action
    is not in the catalogue (422), the owner forbids it (403), its ``args`` do not fit the
    action's advertised ``args_schema`` (422 naming ``args.<name>``), or it needs a consent this
    session does not hold (409). Control actions (consent request, cancel) pass the policy: the
    owner cannot forbid asking or stopping."""
    if remote is not None:
        _check_session(principal, device, action, remote, now)
    if action in protocol.CONTROL_ACTIONS:
        return
    catalogue = catalogue_of(device)
    needs_consent = False
    if catalogue.actions:
        if action not in catalogue.actions:
            names = ", ".join(sorted(catalogue.actions))
            raise InvalidInput(
                f"action: {action!r} is not in the action catalogue of device {device.id}; available: {names}",
                field="action",
            )
        decision = catalogue.decision(action)
        if decision is protocol.PolicyDecision.FORBIDDEN:
            raise Forbidden(f"the owner's policy forbids {action!r} on device {device.id}")
        _check_args(device, action, catalogue.actions[action], args or {})
        needs_consent = decision is protocol.PolicyDecision.NEEDS_CONSENT
    attended = await device_attended(session, device)
    if remote is not None and remote.all_commands_need_consent:
        attended = True
    if not (needs_consent or attended):
        return
    why = (
        f"{action!r} needs the local operator's consent"
        if needs_consent
        else f"device {device.id} is attended"
    )
    if remote is None:
        raise Conflict(
            f"{why}: open a session (POST /api/v1/sessions) and have the local operator approve it"
        )
    if not consent_valid(remote, now):
        state = "expired" if remote.consent_by is not None else "not been given"
        raise Conflict(
            f"{why} and the consent for session {remote.id} has {state}: "
            f"request it with POST /api/v1/sessions/{remote.id}/consent (or 'fleetcare session consent')"
        )


def _check_args(device: Device, action: str, entry: Mapping[str, Any], args: Mapping[str, Any]) -> None:
    """The agent's own check (``agent.actions.args``) against the schema the device advertised:
    what it would reject as ``bad_args`` is refused here, before anything is signed. The schema
    is device input, so one of the wrong shape is a refusal too, never a crash."""
    schema = entry.get("args_schema") or {}
    try:
        problems = check_args(args, schema)
    except (TypeError, AttributeError, KeyError) as exc:
        raise InvalidInput(
            f"args: device {device.id} advertises a malformed args_schema for {action!r} "
            f"({type(exc).__name__}: {exc}); it cannot be checked, so nothing is signed",
            field="args",
        ) from exc
    if problems:
        name = problems[0].split(":", 1)[0]
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InvalidInput(f"args.{problems[0]}{more}", field=f"args.{name}")


def _check_session(
    principal: Principal, device: Device, action: str, remote: RemoteSession, now: datetime
) -> None:
    if remote.device_id != device.id:
        raise InvalidInput(
            f"session_id: session {remote.id} is on device {remote.device_id}, not {device.id}",
            field="session_id",
        )
    if remote.state == SessionState.DENIED.value:
        raise Conflict(
            f"session {remote.id} was denied by the local operator: nothing more is sent in it; "
            "open a new session if the owner agrees"
        )
    if action in protocol.CONTROL_ACTIONS:
        return
    if principal.name != remote.owner and principal.role is not Role.ADMIN:
        raise Forbidden(
            f"session {remote.id} belongs to {remote.owner}: only its owner or an admin sends commands in it"
        )
    if remote.state != SessionState.ACTIVE.value:
        raise Conflict(_not_active(remote))
    if remote.expires_at is not None and remote.expires_at <= now:
        raise Conflict(f"session {remote.id} reached its time limit at {remote.expires_at.isoformat()}")


def _not_active(remote: RemoteSession) -> str:
    if remote.state == SessionState.AWAITING_CONSENT.value:
        return f"session {remote.id} is awaiting the local operator's consent: wait for the approval"
    if remote.state == SessionState.REQUESTED.value:
        return f"session {remote.id} is queued behind another session on device {remote.device_id}"
    return f"session {remote.id} is {remote.state}: open a new session"

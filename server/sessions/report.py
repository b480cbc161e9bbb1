"""The session report: what a support team sends its customer after a remote intervention.

:func:`build_report` gathers it as JSON (frozen into ``RemoteSession.report`` when the session
ends); :func:`render_markdown` turns it into a document the customer reads: every time in the
customer's own time zone (the ``tz`` of their contract hours; UTC when they have none), the
customer and the site named, arguments and results as ``key=value`` text rather than JSON.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import (
    Command,
    Customer,
    Device,
    Incident,
    RemoteSession,
    SessionEntry,
    SessionState,
    Site,
)
from server.db.types import utcnow

__all__ = ["EXCERPT_CHARS", "build_report", "incident_summary", "render_markdown"]

EXCERPT_CHARS = 2000
"""Output kept per command in the report (the full output stays on the command)."""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _excerpt(text: str | None) -> str:
    text = text or ""
    if len(text) <= EXCERPT_CHARS:
        return text
    return text[:EXCERPT_CHARS] + f"\n… ({len(text) - EXCERPT_CHARS} more characters)"


def _timezone(customer: Customer | None) -> str | None:
    """The customer's time zone: their contract hours' ``tz`` (a site has none of its own)."""
    hours = customer.contract_hours if customer is not None else None
    tz = hours.get("tz") if isinstance(hours, dict) else None
    return tz if isinstance(tz, str) and _zone(tz) is not None else None


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


async def build_report(session: AsyncSession, remote: RemoteSession) -> dict[str, Any]:
    device = await session.get(Device, remote.device_id)
    customer = await session.get(Customer, device.customer_id) if device and device.customer_id else None
    site = await session.get(Site, device.site_id) if device and device.site_id else None
    incident = await session.get(Incident, remote.incident_id) if remote.incident_id else None
    entries = await session.scalars(
        select(SessionEntry)
        .where(SessionEntry.session_id == remote.id)
        .order_by(SessionEntry.ts, SessionEntry.id)
    )
    commands = await session.scalars(
        select(Command).where(Command.session_id == remote.id).order_by(Command.issued_at, Command.id)
    )
    return {
        "final": SessionState(remote.state).terminal,
        "generated_at": utcnow().isoformat(),
        "session": {
            "id": remote.id,
            "state": remote.state,
            "owner": remote.owner,
            "reason": remote.reason,
            "time_limit_s": remote.time_limit_s,
            "created_at": _iso(remote.created_at),
            "activated_at": _iso(remote.activated_at),
            "expires_at": _iso(remote.expires_at),
            "ended_at": _iso(remote.ended_at),
            "ended_by": remote.ended_by,
            "outcome": remote.outcome,
            "fixed": remote.fixed,
        },
        "consent": {
            "required": remote.requires_consent,
            "all_commands": remote.all_commands_need_consent,
            "requested_at": _iso(remote.consent_requested_at),
            "approved_by": remote.consent_by,
            "expires_at": _iso(remote.consent_expires_at),
        },
        "device": {
            "id": remote.device_id,
            "model": device.model if device else None,
            "serial": device.serial if device else None,
            "firmware": device.firmware if device else None,
            "customer": customer.name if customer else None,
            "site": site.name if site else (device.site if device else None),
            "timezone": _timezone(customer),
        },
        "incident": incident_summary(incident),
        "timeline": [
            {"ts": _iso(entry.ts), "kind": entry.kind, "actor": entry.actor, "detail": entry.detail}
            for entry in entries
        ],
        "commands": [
            {
                "id": command.id,
                "action": command.action,
                "args": command.args,
                "issuer": command.issuer,
                "state": command.state,
                "issued_at": _iso(command.issued_at),
                "finished_at": _iso(command.finished_at),
                "duration_s": (command.finished_at - command.issued_at).total_seconds()
                if command.finished_at
                else None,
                "ok": command.ok,
                "reason": command.reason,
                "output": _excerpt(command.output),
                "data": command.data,
                "cancel_requested_at": _iso(command.cancel_requested_at),
            }
            for command in commands
        ],
    }


def incident_summary(incident: Incident | None) -> dict[str, Any] | None:
    """The incident as it stands (a frozen report shows it live: it may resolve after the close)."""
    if incident is None:
        return None
    return {
        "id": incident.id,
        "fault_code": incident.fault_code,
        "status": incident.status,
        "channel": incident.channel,
        "t_fault": _iso(incident.t_fault),
        "t_respond": _iso(incident.t_respond),
        "t_restored": _iso(incident.t_restored),
        "t_resolved": _iso(incident.t_resolved),
    }


def _row(*cells: Any) -> str:
    return (
        "| " + " | ".join(str(cell if cell is not None else "—").replace("|", "\\|") for cell in cells) + " |"
    )


def _pairs(values: dict[str, Any] | None) -> str:
    """Arguments or result data as ``key=value`` text (nested values stay compact JSON)."""
    if not values:
        return "none"
    return ", ".join(
        f"{key}={value if isinstance(value, str | int | float | bool) or value is None else json.dumps(value, sort_keys=True)}"
        for key, value in sorted(values.items())
    )


class _Clock:
    """Times of the report in one time zone, written as a person reads them."""

    def __init__(self, name: str | None) -> None:
        self.zone = _zone(name) or UTC
        self.name = name if _zone(name) is not None else "UTC"

    def __call__(self, iso: str | None, missing: str = "—") -> str:
        if not iso:
            return missing
        when = datetime.fromisoformat(iso)
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        return when.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: header, consent, timeline, commands with their output, outcome."""
    ses, dev, consent, inc = report["session"], report["device"], report["consent"], report["incident"]
    when = _Clock(dev.get("timezone"))
    owner = (
        f"{dev['customer']}, site {dev['site'] or 'not named'}"
        if dev["customer"]
        else f"not assigned to a customer yet (site reported: {dev['site'] or 'none'})"
    )
    lines = [
        f"# Remote session report — {dev['id']}",
        "",
        _row("", ""),
        _row("---", "---"),
        _row("Session", f"{ses['id']} ({ses['state']})"),
        _row(
            "Device", f"{dev['id']} — model {dev['model'] or 'unknown'}, serial {dev['serial'] or 'unknown'}"
        ),
        _row("Customer", owner),
        _row("Incident", f"#{inc['id']} {inc['fault_code'] or ''} ({inc['status']})" if inc else "none"),
        _row("Technician", ses["owner"]),
        _row("Reason", ses["reason"] or "—"),
        _row("Opened", when(ses["created_at"])),
        _row("Active from", when(ses["activated_at"])),
        _row("Ended", f"{when(ses['ended_at'], 'still open')} ({ses['ended_by'] or '—'})"),
        _row("Times", f"in {when.name}"),
    ]
    if consent["required"]:
        given = (
            f"approved by {consent['approved_by']} until {when(consent['expires_at'])}"
            if consent["approved_by"]
            else "not given"
        )
        scope = "every command" if consent["all_commands"] else "actions that need consent"
        lines.append(_row("Consent", f"{given} ({scope})"))
    else:
        lines.append(_row("Consent", "not required"))
    lines += ["", "## Timeline", "", _row("Time", "Step", "By", "Detail"), _row("---", "---", "---", "---")]
    for entry in report["timeline"]:
        detail = ", ".join(f"{k}={v}" for k, v in entry["detail"].items() if v not in (None, "", {}))
        lines.append(_row(when(entry["ts"]), entry["kind"], entry["actor"], detail))
    lines += ["", "## Commands", ""]
    if not report["commands"]:
        lines.append("No command was sent.")
    for number, command in enumerate(report["commands"], 1):
        duration = f"{command['duration_s']:.1f} s" if command["duration_s"] is not None else "—"
        lines += [
            f"### {number}. `{command['action']}` — {command['state']}",
            "",
            f"- sent by {command['issuer']} at {when(command['issued_at'])}; duration {duration}",
            f"- arguments: {_pairs(command['args'])}",
        ]
        if command["reason"]:
            lines.append(f"- reason: {command['reason']}")
        if command["data"]:
            lines.append(f"- result: {_pairs(command['data'])[:1000]}")
        if command["output"]:
            lines += ["", "```", command["output"].rstrip(), "```"]
        lines.append("")
    fixed = {True: "fixed", False: "not fixed", None: "not stated"}[ses["fixed"]]
    lines += ["## Outcome", "", f"{ses['outcome'] or 'No outcome recorded.'} ({fixed})", ""]
    if inc:
        lines.append(
            f"Incident #{inc['id']}: {inc['status']}"
            + (f", resolved via {inc['channel']}" if inc["channel"] else "")
            + f"; first response {when(inc['t_respond'])}, restored {when(inc['t_restored'])}."
        )
        lines.append("")
    return "\n".join(lines)

"""Guided self-resolution: steps a customer works through for a fault, before anyone is sent.

Guides are authored (``POST /guides``) per fault code and optionally model; for an incident the
server also offers what fixed the same fault before — the resolution notes of past incidents
resolved ``customer`` or ``remote`` — to technicians (customers see only authored guides marked
``customer_safe``). A run records each step's result; when the fault clears while a run is
active, or after it finished as fixed, with no technician's command in between, the incident
resolves with channel ``customer`` (server/incidents/evidence.py).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from server.base import access, audit
from server.base.timeline import note
from server.base.users import Principal
from server.db.models import Channel, Device, Guide, GuideRun, Incident, IncidentStatus, Role
from server.db.types import utcnow
from server.errors import Conflict, Forbidden, InvalidInput, NotFound
from server.incidents import evidence

__all__ = [
    "PAST_INCIDENTS",
    "create_guide",
    "finish_run",
    "incident_guides",
    "list_guides",
    "record_step",
    "start_run",
]

PAST_INCIDENTS = 5
"""How many past incidents' resolution notes are offered next to the authored guides."""
STEP_RESULTS = ("done", "failed", "skipped")


async def create_guide(
    session: AsyncSession,
    who: Principal,
    *,
    fault_code: str,
    model: str | None,
    title: str,
    steps: list[dict[str, Any]],
    customer_safe: bool,
) -> Guide:
    if not steps:
        raise InvalidInput("steps: a guide needs at least one step", field="steps")
    guide = Guide(
        fault_code=fault_code,
        model=model,
        title=title,
        steps=[{"text": s["text"], "action": s.get("action")} for s in steps],
        customer_safe=customer_safe,
        source="authored",
        created_by=who.name,
        created_at=utcnow(),
    )
    session.add(guide)
    await session.flush()
    audit.record(
        session,
        actor=who.actor,
        action="guide.created",
        target=f"guide:{guide.id}",
        detail={"fault_code": fault_code, "model": model, "customer_safe": customer_safe},
    )
    await session.commit()
    return guide


async def list_guides(
    session: AsyncSession, *, fault_code: str | None, model: str | None, customer_safe_only: bool
) -> list[Guide]:
    """Guides in use; ``model`` matches guides for that model and guides for any model."""
    conditions: list[ColumnElement[bool]] = [Guide.retired_at.is_(None)]
    if fault_code is not None:
        conditions.append(Guide.fault_code == fault_code)
    if model is not None:
        conditions.append(or_(Guide.model.is_(None), Guide.model == model))
    if customer_safe_only:
        conditions.append(Guide.customer_safe.is_(True))
    rows = await session.scalars(
        select(Guide).where(*conditions).order_by(Guide.success_count.desc(), Guide.id)
    )
    return list(rows)


async def _incident(session: AsyncSession, who: Principal, incident_id: int) -> tuple[Incident, Device]:
    incident = await session.get(Incident, incident_id)
    if incident is None:
        raise NotFound("incident", incident_id)
    device = await access.check_device(session, who, incident.device_id, via=("incident", incident_id))
    return incident, device


def _origin(guide: Guide) -> str:
    """Published customer-safe knowledge articles become guides too (server/knowledge/service.py
    ``sync_guides``, source ``article:<id>``)."""
    if guide.source.startswith("article:"):
        return f"knowledge base article #{guide.source.removeprefix('article:')} by {guide.created_by}"
    return f"authored by {guide.created_by}"


async def incident_guides(session: AsyncSession, who: Principal, incident_id: int) -> list[dict[str, Any]]:
    """Authored guides for the incident's fault code and model, then (not for customers) the
    resolution notes of past incidents with that fault code; each says where it came from."""
    incident, device = await _incident(session, who, incident_id)
    if incident.fault_code is None:
        return []
    customer = who.role is Role.CUSTOMER
    offered: list[dict[str, Any]] = [
        {
            "id": guide.id,
            "title": guide.title,
            "fault_code": guide.fault_code,
            "model": guide.model,
            "steps": guide.steps,
            "customer_safe": guide.customer_safe,
            "source": guide.source,
            "origin": _origin(guide),
            "use_count": guide.use_count,
            "success_count": guide.success_count,
        }
        for guide in await list_guides(
            session, fault_code=incident.fault_code, model=device.model, customer_safe_only=customer
        )
    ]
    if customer:
        return offered
    past = await session.scalars(
        select(Incident)
        .where(
            Incident.fault_code == incident.fault_code,
            Incident.id != incident.id,
            Incident.status.in_([IncidentStatus.RESOLVED.value, IncidentStatus.CLOSED.value]),
            Incident.channel.in_([Channel.CUSTOMER.value, Channel.REMOTE.value]),
            Incident.resolution != "",
        )
        .order_by(Incident.t_resolved.desc())
        .limit(PAST_INCIDENTS)
    )
    for old in past:
        lines = [line.strip(" -*\t") for line in old.resolution.splitlines() if line.strip(" -*\t")]
        offered.append(
            {
                "id": None,
                "title": f"What resolved incident #{old.id} ({old.channel})",
                "fault_code": old.fault_code,
                "model": None,
                "steps": [{"text": line, "action": None} for line in lines],
                "customer_safe": False,
                "source": f"incident:{old.id}",
                "origin": f"resolution notes of incident #{old.id} on {old.device_id}, resolved "
                f"{old.t_resolved.date().isoformat() if old.t_resolved else '?'} via {old.channel}",
                "use_count": 0,
                "success_count": 0,
            }
        )
    return offered


async def start_run(session: AsyncSession, who: Principal, incident_id: int, guide_id: int) -> GuideRun:
    incident, _device = await _incident(session, who, incident_id)
    if incident.status not in evidence.ACTIVE:
        raise Conflict(f"incident {incident_id} is {incident.status}: no guide to work through")
    guide = await session.get(Guide, guide_id)
    if (
        guide is None
        or guide.retired_at is not None
        or (who.role is Role.CUSTOMER and not guide.customer_safe)
    ):
        raise InvalidInput(f"guide_id: no guide {guide_id} is offered for this incident", field="guide_id")
    if guide.fault_code not in {incident.fault_code, *(incident.codes or [])}:
        raise InvalidInput(
            f"guide_id: guide {guide_id} is for fault {guide.fault_code}, not {incident.fault_code}",
            field="guide_id",
        )
    now = utcnow()
    run = GuideRun(
        incident_id=incident.id,
        guide_id=guide.id,
        user=who.name,
        started_at=now,
        steps_done=[],
        state="active",
    )
    session.add(run)
    await session.execute(update(Guide).where(Guide.id == guide.id).values(use_count=Guide.use_count + 1))
    await session.flush()
    note(
        session,
        incident,
        "guide.started",
        actor=who.actor,
        ts=now,
        guide_id=guide.id,
        run_id=run.id,
        title=guide.title,
    )
    audit.record(
        session,
        actor=who.actor,
        action="guide.started",
        target=f"incident:{incident.id}",
        detail={"guide_id": guide.id, "run_id": run.id},
    )
    await session.commit()
    return run


async def _run(session: AsyncSession, who: Principal, run_id: int) -> tuple[GuideRun, Incident, Guide]:
    run = await session.get(GuideRun, run_id)
    if run is None:
        raise NotFound("guide run", run_id)
    try:
        incident, _device = await _incident(session, who, run.incident_id)
    except NotFound as exc:
        raise NotFound("guide run", run_id) from exc
    if who.role is Role.CUSTOMER and run.user != who.name:
        raise Forbidden(f"guide run {run_id} is {run.user}'s")
    if run.state != "active":
        raise Conflict(f"guide run {run_id} is finished ({run.state})")
    guide = await session.get(Guide, run.guide_id)
    assert guide is not None
    return run, incident, guide


async def record_step(
    session: AsyncSession, who: Principal, run_id: int, *, step: int, result: str, note_text: str = ""
) -> GuideRun:
    run, incident, guide = await _run(session, who, run_id)
    if not 0 <= step < len(guide.steps):
        raise InvalidInput(f"step: the guide has steps 0 to {len(guide.steps) - 1}", field="step")
    if result not in STEP_RESULTS:
        raise InvalidInput(f"result: one of {', '.join(STEP_RESULTS)}", field="result")
    now = utcnow()
    run.steps_done = [
        *run.steps_done,
        {"step": step, "ts": now.isoformat(), "result": result, "note": note_text},
    ]
    note(
        session,
        incident,
        "guide.step",
        actor=who.actor,
        ts=now,
        run_id=run.id,
        step=step,
        result=result,
        note=note_text,
    )
    await session.commit()
    return run


async def finish_run(session: AsyncSession, who: Principal, run_id: int, *, fixed: bool) -> GuideRun:
    """The customer is done: ``fixed`` (a success for the guide) or gave up. If the fault has
    already cleared and nobody else intervened, the incident resolves as ``customer`` now."""
    run, incident, guide = await _run(session, who, run_id)
    now = utcnow()
    run.state = "fixed" if fixed else "gave_up"
    run.finished_at = now
    if fixed:
        guide.success_count += 1
    note(session, incident, "guide.finished", actor=who.actor, ts=now, run_id=run.id, fixed=fixed)
    audit.record(
        session,
        actor=who.actor,
        action="guide.finished",
        target=f"incident:{incident.id}",
        detail={"run_id": run.id, "fixed": fixed},
    )
    await session.flush()
    await evidence.refresh(session, [incident], now.timestamp())
    await session.commit()
    return run

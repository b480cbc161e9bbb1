"""Storing what a fold derived: state intervals, transient faults, incidents (then resolving
them from evidence, server/incidents/evidence.py). Joins the caller's transaction (no commit).

A continuation replaces the device's intervals from the snapshot's open interval on; a rebuild
replaces them all. Incidents are matched to episodes by the episodes they already cover
(``Incident.episodes``, mirrored row by row in ``incident_episodes`` for the KPIs), so a
rebuild keeps every incident, its id and everything people did with it, and only moves the
times the history moved. A new episode of an earlier incident's fault joins it while it is
open, reopens it within ``incidents.reopen_window_hours`` of its restore, and otherwise opens
a new incident linked to it as a repeat failure (``repeat_of``, within 30 days of the restore).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.base import priority as prio
from server.base.timeline import SERVER, note
from server.db.models import (
    Incident,
    IncidentKind,
    IncidentStatus,
    StateInterval,
    TransientFault,
)
from server.db.models.incidents import IncidentEpisode
from server.incidents.engine import SEVERITY_RANK, Episode, Fold, Segment
from server.incidents.evidence import ACTIVE, refresh
from server.kpi.definitions import REPEAT_WINDOW_S
from server.kpi.incident_rollups import refresh_incident_rollups
from server.kpi.rollups import refresh_rollups

__all__ = ["ACTIVE", "EPS", "dt", "episode_span", "flag_external", "store"]

EPS = 1e-3  # s: timestamps go through microsecond datetimes and back
DONE = (IncidentStatus.RESOLVED.value, IncidentStatus.CLOSED.value)


def dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _dt(value: float | None) -> datetime | None:
    return None if value is None else dt(value)


def episode_span(ep: Episode) -> dict[str, Any]:
    return {
        "start_s": ep.start,
        "end_s": ep.end,
        "detect_s": ep.detect,
        "end_received_s": ep.end_received,
        "codes": list(ep.codes),
        "effect": ep.effect,
        "severity": ep.severity,
    }


def _overlaps(span: dict[str, Any], ep: Episode) -> bool:
    a0, a1 = span["start_s"], span["end_s"] if span["end_s"] is not None else math.inf
    b0, b1 = ep.start, ep.end if ep.end is not None else math.inf
    return abs(a0 - b0) < EPS or (a0 < b1 and b0 < a1)


async def store(
    session: AsyncSession, device_id: str, fold: Fold, *, reopen_window: float, now: float
) -> list[Incident]:
    """Write ``fold`` 's outputs for ``device_id``; return the incidents it touched."""
    await _store_segments(session, device_id, fold)
    await _store_transients(session, device_id, fold)
    touched = await _store_episodes(session, device_id, fold, reopen_window, now)
    await _mark_external(session, device_id, touched, everything=fold.full)
    await refresh(session, touched, now)
    await refresh_rollups(session, [device_id])  # the KPI state rollup, from the change on
    await refresh_incident_rollups(session, [device_id])  # and its incident rollup
    return touched


# -- state intervals ------------------------------------------------------------------------


def _segment_key(segment: Segment) -> tuple[Any, ...]:
    return (
        segment.state,
        round(segment.start, 3),
        None if segment.end is None else round(segment.end, 3),
        None if segment.planned_end is None else round(segment.planned_end, 3),
    )


async def _store_segments(session: AsyncSession, device_id: str, fold: Fold) -> None:
    """Replace the device's intervals from the fold's start (all of them when rebuilding).

    A continuation starts at the snapshot's open interval, which is in the table as the
    snapshot has it (both are written in one transaction): nothing changed, nothing written."""
    segments = [s for s in fold.segments if s.end is None or s.end - s.start > 1e-6]
    if fold.full:
        await session.execute(delete(StateInterval).where(StateInterval.device_id == device_id))
    else:
        have = [] if fold.initial is None else [_segment_key(fold.initial)]
        if have == [_segment_key(s) for s in segments]:
            return
        if fold.since is not None:
            await session.execute(
                delete(StateInterval).where(
                    StateInterval.device_id == device_id, StateInterval.start_s >= fold.since - EPS
                )
            )
    if not segments:
        return
    rows = []
    for segment in segments:
        start, end = dt(segment.start), _dt(segment.end)
        rows.append(
            {
                "device_id": device_id,
                "state": segment.state,
                "start": start,
                "end": end,
                "start_s": start.timestamp(),
                "end_s": None if end is None else end.timestamp(),
                "planned_end": _dt(segment.planned_end),
                "external": False,
            }
        )
    await session.execute(insert(StateInterval), rows)


async def _store_transients(session: AsyncSession, device_id: str, fold: Fold) -> None:
    if fold.full:
        await session.execute(delete(TransientFault).where(TransientFault.device_id == device_id))
    for ep in fold.episodes:
        if ep.kind != IncidentKind.FAULT.value or not ep.transient:
            continue
        assert ep.end is not None
        session.add_all(
            TransientFault(device_id=device_id, code=code, raised_at=dt(start), cleared_at=dt(end or ep.end))
            for code, start, end in ep.faults
        )


async def _mark_external(
    session: AsyncSession, device_id: str, incidents: Sequence[Incident], *, everything: bool
) -> None:
    """Intervals inside an incident flagged external (customer power/network) are flagged too."""
    if everything:
        incidents = list(
            await session.scalars(
                select(Incident).where(Incident.device_id == device_id, Incident.external.is_(True))
            )
        )
    for incident in incidents:
        if incident.external:
            await flag_external(session, incident, True)


async def flag_external(session: AsyncSession, incident: Incident, external: bool) -> None:
    conditions = [
        StateInterval.device_id == incident.device_id,
        StateInterval.start_s >= incident.fault_s - EPS,
        StateInterval.state.in_(["down", "degraded", "unknown"]),
    ]
    if incident.restored_s is not None:
        conditions.append(StateInterval.start_s < incident.restored_s - EPS)
    await session.execute(update(StateInterval).where(*conditions).values(external=external))
    await refresh_rollups(session, [incident.device_id])


# -- incidents --------------------------------------------------------------------------------


async def _store_episodes(
    session: AsyncSession, device_id: str, fold: Fold, reopen_window: float, now: float
) -> list[Incident]:
    promoted = sorted((ep for ep in fold.episodes if ep.promoted), key=lambda ep: ep.start)
    if not promoted and not fold.full:
        return []
    query = select(Incident).where(Incident.device_id == device_id)
    if not fold.full:
        ids = sorted({ep.incident_id for ep in promoted if ep.incident_id is not None})
        query = query.where(Incident.id.in_(ids))
    existing = list(await session.scalars(query.order_by(Incident.id).with_for_update()))
    by_id = {incident.id: incident for incident in existing}
    assigned: dict[int, list[Episode]] = {}
    created: set[int] = set()
    for ep in promoted:
        repeat: Incident | None = None
        incident = by_id.get(ep.incident_id) if ep.incident_id is not None else None
        if incident is None and fold.full:
            incident = next(
                (
                    i
                    for i in existing
                    if i.kind == ep.kind and any(_overlaps(span, ep) for span in i.episodes or [])
                ),
                None,
            )
        if incident is None and ep.kind == IncidentKind.FAULT.value and ep.codes:
            incident, repeat = await _recurrence(
                session, device_id, ep, reopen_window, existing if fold.full else None
            )
            if incident is not None:
                by_id.setdefault(incident.id, incident)
        if incident is None:
            incident = await _open(session, device_id, ep, repeat_of=repeat)
            by_id[incident.id] = incident
            created.add(incident.id)
        ep.incident_id = incident.id
        assigned.setdefault(incident.id, []).append(ep)
    for incident_id, episodes in assigned.items():
        incident = by_id[incident_id]
        spans = _span_times(incident.episodes)
        await _apply(session, incident, episodes, full=fold.full, created=incident_id in created, now=now)
        if incident_id in created or _span_times(incident.episodes) != spans:
            await _write_spans(session, incident)
    if fold.full:
        for incident in existing:
            if incident.id not in assigned:
                await _orphan(session, incident, now)
    return [by_id[incident_id] for incident_id in assigned]


async def _recurrence(
    session: AsyncSession,
    device_id: str,
    ep: Episode,
    window: float,
    candidates: list[Incident] | None,
) -> tuple[Incident | None, Incident | None]:
    """(the incident a new episode of the same fault belongs to, else the one it repeats).

    It belongs to the newest earlier one that is still open after its device recovered, or that
    was restored at most ``window`` seconds before the episode began (and is reopened); later, up
    to :data:`REPEAT_WINDOW_S` after that restore, it is a repeat failure of it: a new incident."""
    if candidates is None:
        candidates = list(
            await session.scalars(
                select(Incident)
                .where(
                    Incident.device_id == device_id,
                    Incident.kind == IncidentKind.FAULT.value,
                    Incident.restored_s.is_not(None),
                    Incident.restored_s <= ep.start + EPS,
                )
                .order_by(Incident.fault_s.desc())
                .limit(50)
                .with_for_update()
            )
        )
    repeat: Incident | None = None
    for incident in sorted(candidates, key=lambda i: i.fault_s, reverse=True):
        if incident.kind != IncidentKind.FAULT.value or incident.restored_s is None:
            continue
        if incident.restored_s > ep.start + EPS or not set(incident.codes or []) & set(ep.codes):
            continue
        after = ep.start - incident.restored_s
        if incident.status in ACTIVE or after <= window + EPS:
            return incident, None
        if repeat is None and after < REPEAT_WINDOW_S:
            repeat = incident
    return None, repeat


async def _open(
    session: AsyncSession, device_id: str, ep: Episode, *, repeat_of: Incident | None = None
) -> Incident:
    assert ep.detect is not None
    criticality = await prio.criticality(session, device_id)
    # the codes known when it was detected; later ones are noted as they join
    codes = list(dict.fromkeys(span[0] for span in ep.faults if span[1] <= ep.detect + EPS)) or ep.codes[:1]
    incident = Incident(
        device_id=device_id,
        kind=ep.kind,
        status=IncidentStatus.OPEN.value,
        fault_code=codes[0] if codes else None,
        codes=codes,
        severity=ep.severity,
        effect=ep.effect,
        priority=prio.priority(criticality, ep.kind, ep.effect, ep.severity),
        external=False,
        t_fault=dt(min(ep.start, ep.detect)),
        t_detect=dt(ep.detect),
        symptom=ep.detail,
        cause="",
        resolution="",
        needs_dispatch=False,
        remote_used=False,
        visits=0,
        reopened=0,
        repeat_of=None if repeat_of is None else repeat_of.id,
        episodes=[],
        auto_resolve=True,
    )
    session.add(incident)
    await session.flush()
    note(
        session,
        incident,
        "opened",
        ts=incident.t_detect,
        incident_kind=ep.kind,
        codes=codes,
        effect=ep.effect,
        severity=ep.severity,
        priority=incident.priority,
        t_fault=incident.t_fault.isoformat(),
    )
    if repeat_of is not None:
        _note_repeat(session, incident, repeat_of, ep)
    return incident


def _note_repeat(session: AsyncSession, incident: Incident, earlier: Incident, ep: Episode) -> None:
    """Timeline entries on both: the new incident repeats the earlier one's failure."""
    assert earlier.restored_s is not None
    after = round(ep.start - earlier.restored_s, 3)
    codes = list(ep.codes)
    note(
        session,
        incident,
        "repeat.of",
        ts=incident.t_detect,
        incident_id=earlier.id,
        codes=codes,
        after_restore_s=after,
    )
    note(
        session,
        earlier,
        "repeated",
        ts=incident.t_detect,
        incident_id=incident.id,
        codes=codes,
        after_restore_s=after,
    )


def _span_times(spans: list[dict[str, Any]] | None) -> list[tuple[Any, ...]]:
    return [(span["start_s"], span.get("detect_s"), span.get("end_s")) for span in spans or []]


async def _write_spans(session: AsyncSession, incident: Incident) -> None:
    """``incident_episodes``: one row per span of ``incident.episodes`` (what the KPIs read)."""
    await session.execute(delete(IncidentEpisode).where(IncidentEpisode.incident_id == incident.id))
    rows = [
        {
            "incident_id": incident.id,
            "device_id": incident.device_id,
            "seq": seq,
            "fault_s": start,
            "detect_s": start if detect is None else detect,
            "restored_s": end,
        }
        for seq, (start, detect, end) in enumerate(_span_times(incident.episodes))
    ]
    if rows:
        await session.execute(insert(IncidentEpisode), rows)


def _worst(severities: list[str]) -> str:
    return max(severities, key=lambda s: SEVERITY_RANK.get(s, 0))


def _merge_spans(
    stored: list[dict[str, Any]], episodes: list[Episode], *, full: bool
) -> list[dict[str, Any]]:
    if full:
        spans = [episode_span(ep) for ep in episodes]
    else:
        spans = list(stored)
        for ep in episodes:
            index = next((k for k, span in enumerate(spans) if _overlaps(span, ep)), None)
            if index is None:
                spans.append(episode_span(ep))
            else:
                spans[index] = episode_span(ep)
    return sorted(spans, key=lambda span: span["start_s"])


def _differs(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return (a is None) != (b is None)
    return abs((a - b).total_seconds()) > EPS


async def _apply(
    session: AsyncSession,
    incident: Incident,
    episodes: list[Episode],
    *,
    full: bool,
    created: bool,
    now: float,
) -> None:
    """Fold ``episodes`` into the incident: times, codes, effect, reopen/withdraw, timeline."""
    stored: list[dict[str, Any]] = list(incident.episodes or [])
    new = [ep for ep in episodes if not any(_overlaps(span, ep) for span in stored)]
    spans = _merge_spans(stored, episodes, full=full)
    first, last = spans[0], spans[-1]
    old_codes = list(incident.codes or [])
    old_fault, old_detect, old_restored = incident.t_fault, incident.t_detect, incident.t_restored
    old_effect = incident.effect
    codes = list(dict.fromkeys(code for span in spans for code in span["codes"]))
    effects = {span["effect"] for span in spans}
    effect = "down" if "down" in effects else "degraded" if "degraded" in effects else first["effect"]
    severity = _worst([span["severity"] for span in spans])
    if effect != incident.effect or severity != incident.severity:
        criticality = await prio.criticality(session, incident.device_id)
        incident.priority = prio.priority(criticality, incident.kind, effect, severity)
    incident.episodes = spans
    incident.codes = codes
    incident.fault_code = codes[0] if codes else None
    incident.effect, incident.severity = effect, severity
    incident.t_fault = dt(min(first["start_s"], first["detect_s"]))
    incident.t_detect = dt(first["detect_s"])
    incident.t_restored = _dt(last["end_s"])
    if incident.kind == IncidentKind.OFFLINE.value and episodes[-1].end is not None and episodes[-1].external:
        incident.external = True
    at = dt(now)
    if not created:
        if _differs(old_fault, incident.t_fault) or _differs(old_detect, incident.t_detect):
            note(
                session,
                incident,
                "rebuilt",
                ts=at,
                reason="late data",
                t_fault=incident.t_fault.isoformat(),
                t_detect=incident.t_detect.isoformat(),
                was_t_fault=old_fault.isoformat(),
            )
        for ep in new:
            if ep.detect is not None:
                note(session, incident, "fault.recurred", ts=dt(ep.detect), codes=list(ep.codes))
        if effect == "down" and old_effect != "down":
            note(session, incident, "escalated", ts=at, effect=effect, severity=severity)
    joined = {span[0]: span[1] for ep in episodes for span in reversed(ep.faults)}
    for code in codes:
        if code not in old_codes:
            note(session, incident, "fault.joined", ts=dt(joined.get(code, now)), code=code)
    _note_restore(session, incident, old_restored, created=created, at=at)
    new_codes = [code for code in codes if code not in old_codes]
    if created:
        return
    if incident.status in DONE and (new or (incident.t_restored is None and new_codes)):
        _reopen(session, incident, at=at, reason="fault.recurred", codes=new_codes or codes)
    elif (
        incident.resolved_by == SERVER
        and incident.status in DONE
        and (incident.t_restored is None or _differs(old_restored, incident.t_restored))
    ):
        _withdraw(session, incident, at=at)


def _note_restore(
    session: AsyncSession, incident: Incident, old: datetime | None, *, created: bool, at: datetime
) -> None:
    restored = incident.t_restored
    if old is None and restored is not None:
        note(session, incident, "restored", ts=restored)
    elif old is not None and restored is None and not created:
        note(session, incident, "restore.withdrawn", ts=at)
    elif old is not None and restored is not None and _differs(old, restored):
        note(session, incident, "rebuilt", ts=at, reason="late data", t_restored=restored.isoformat())


def _reopen(session: AsyncSession, incident: Incident, *, at: datetime, reason: str, **detail: Any) -> None:
    incident.status = IncidentStatus.OPEN.value
    incident.reopened += 1
    incident.t_resolved = None
    incident.t_closed = None
    incident.channel = None
    incident.resolved_by = None
    note(session, incident, "reopened", ts=at, reason=reason, reopened=incident.reopened, **detail)


def _withdraw(session: AsyncSession, incident: Incident, *, at: datetime) -> None:
    """An automatic resolution the history no longer supports (late data)."""
    incident.status = (IncidentStatus.ACKNOWLEDGED if incident.t_ack else IncidentStatus.OPEN).value
    incident.t_resolved = None
    incident.t_closed = None
    incident.channel = None
    incident.resolved_by = None
    note(session, incident, "resolution.withdrawn", ts=at, reason="late data")


def _touched_by_people(incident: Incident) -> bool:
    return bool(
        incident.t_ack
        or incident.t_respond
        or incident.assigned_to
        or incident.visits
        or (incident.resolved_by and incident.resolved_by != SERVER)
        or not incident.auto_resolve
    )


async def _orphan(session: AsyncSession, incident: Incident, now: float) -> None:
    """A rebuild found no episode for this incident (late data showed it was transient)."""
    if not _touched_by_people(incident):
        await session.delete(incident)
        return
    if incident.episodes:
        incident.episodes = []
        await _write_spans(session, incident)
        note(session, incident, "rebuilt", ts=dt(now), reason="late data", orphaned=True)

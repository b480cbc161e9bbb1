"""The rows the KPIs are computed from, as plain records with epoch seconds.

:func:`load_dataset` reads them from the database (for the reference engine and audits);
:func:`insert_dataset` writes them with bulk Core inserts (for tests and the benchmark).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import (
    Article,
    ArticleLink,
    Customer,
    Device,
    DeviceAssignmentPeriod,
    Incident,
    IncidentEntry,
    IncidentStatus,
    Site,
    StateInterval,
    SuggestionShown,
    TransientFault,
)
from server.db.models.incidents import IncidentEpisode
from server.kpi.calendar import to_datetime
from server.kpi.report import epoch

__all__ = [
    "APPLIED",
    "AppliedRecord",
    "ArticleRecord",
    "AssignmentRecord",
    "CustomerRecord",
    "Dataset",
    "DeviceRecord",
    "IncidentRecord",
    "LinkRecord",
    "ShownRecord",
    "SiteRecord",
    "StateRecord",
    "TransientRecord",
    "insert_dataset",
    "load_dataset",
]


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    id: int
    name: str
    contract_hours: dict[str, Any] | None = None
    cost_per_dispatch: float = 0.0


@dataclass(frozen=True, slots=True)
class SiteRecord:
    id: int
    customer_id: int
    name: str


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    id: str
    customer_id: int | None = None
    site_id: int | None = None
    model: str | None = None
    decommissioned_s: float | None = None
    first_seen_s: float = 0.0


@dataclass(frozen=True, slots=True)
class AssignmentRecord:
    """A device's customer and site from ``from_s`` until the device's next record (the first
    one reaches back to its beginning); devices without any keep their current ones throughout."""

    device_id: str
    customer_id: int | None
    site_id: int | None
    from_s: float


@dataclass(frozen=True, slots=True)
class StateRecord:
    device_id: str
    state: str
    start_s: float
    end_s: float | None
    external: bool = False
    planned_end_s: float | None = None


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    id: int
    device_id: str
    fault_s: float
    detect_s: float
    kind: str = "fault"
    effect: str = "down"
    fault_code: str | None = None
    external: bool = False
    ack_s: float | None = None
    respond_s: float | None = None
    onsite_s: float | None = None
    restored_s: float | None = None
    resolved_s: float | None = None
    closed_s: float | None = None
    channel: str | None = None
    needs_dispatch: bool = False
    remote_used: bool = False
    visits: int = 0
    reopened: int = 0
    severity: str = "error"
    priority: int = 3
    # its failure episodes in order (incident_episodes): (start, detection, restore or None)
    episodes: tuple[tuple[float, float, float | None], ...] = ()

    @property
    def status(self) -> str:
        if self.closed_s is not None:
            return IncidentStatus.CLOSED.value
        if self.resolved_s is not None:
            return IncidentStatus.RESOLVED.value
        return IncidentStatus.ACKNOWLEDGED.value if self.ack_s is not None else IncidentStatus.OPEN.value


@dataclass(frozen=True, slots=True)
class TransientRecord:
    device_id: str
    code: str
    raised_s: float
    cleared_s: float


APPLIED = "knowledge.applied"
"""The timeline entry of a suggested remote action sent into a session (server/knowledge/suggest.py)."""


@dataclass(frozen=True, slots=True)
class ArticleRecord:
    """A knowledge article: only when it was written matters to the KPIs (reuse)."""

    id: int
    created_s: float


@dataclass(frozen=True, slots=True)
class LinkRecord:
    """An incident resolved with an article (``kb_article_links``); ``fixed``: its fix worked."""

    article_id: int
    incident_id: int
    fixed: bool = True


@dataclass(frozen=True, slots=True)
class AppliedRecord:
    """A suggested article's remote action sent for the incident (timeline ``knowledge.applied``)."""

    incident_id: int
    article_id: int
    ts: float


@dataclass(frozen=True, slots=True)
class ShownRecord:
    """An article served as a suggestion for the incident (``kb_suggestions_shown``): the best
    1-based rank it was shown at and when it was first shown."""

    incident_id: int
    article_id: int
    best_rank: int
    first_s: float


@dataclass(slots=True)
class Dataset:
    customers: list[CustomerRecord] = field(default_factory=list)
    sites: list[SiteRecord] = field(default_factory=list)
    devices: list[DeviceRecord] = field(default_factory=list)
    states: list[StateRecord] = field(default_factory=list)
    incidents: list[IncidentRecord] = field(default_factory=list)
    transients: list[TransientRecord] = field(default_factory=list)
    assignments: list[AssignmentRecord] = field(default_factory=list)
    articles: list[ArticleRecord] = field(default_factory=list)
    links: list[LinkRecord] = field(default_factory=list)
    applied: list[AppliedRecord] = field(default_factory=list)
    shown: list[ShownRecord] = field(default_factory=list)


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


async def load_dataset(session: AsyncSession) -> Dataset:
    """Everything the KPIs read, from the database (the reference engine's input)."""
    ds = Dataset()
    for c in (await session.scalars(select(Customer).order_by(Customer.id))).all():
        ds.customers.append(CustomerRecord(c.id, c.name, c.contract_hours, float(c.cost_per_dispatch)))
    for s in (await session.scalars(select(Site).order_by(Site.id))).all():
        ds.sites.append(SiteRecord(s.id, s.customer_id, s.name))
    for d in (await session.scalars(select(Device).order_by(Device.id))).all():
        ds.devices.append(
            DeviceRecord(
                d.id, d.customer_id, d.site_id, d.model, epoch(d.decommissioned_at), d.first_seen.timestamp()
            )
        )
    rows = await session.execute(
        select(
            StateInterval.device_id,
            StateInterval.state,
            StateInterval.start_s,
            StateInterval.end_s,
            StateInterval.external,
            StateInterval.planned_end,
        ).order_by(StateInterval.id)
    )
    for device_id, state, start_s, end_s, external, planned_end in rows:
        ds.states.append(
            StateRecord(device_id, state, start_s, _float(end_s), bool(external), epoch(planned_end))
        )
    spans: dict[int, list[tuple[float, float, float | None]]] = {}
    episode_rows = await session.execute(
        select(
            IncidentEpisode.incident_id,
            IncidentEpisode.fault_s,
            IncidentEpisode.detect_s,
            IncidentEpisode.restored_s,
        ).order_by(IncidentEpisode.incident_id, IncidentEpisode.seq)
    )
    for incident_id, fault_s, detect_s, restored_s in episode_rows:
        spans.setdefault(incident_id, []).append((fault_s, detect_s, _float(restored_s)))
    for i in (await session.scalars(select(Incident).order_by(Incident.id))).all():
        ds.incidents.append(
            IncidentRecord(
                id=i.id,
                device_id=i.device_id,
                fault_s=i.fault_s,
                detect_s=i.detect_s,
                kind=i.kind,
                effect=i.effect,
                fault_code=i.fault_code,
                external=bool(i.external),
                ack_s=_float(i.ack_s),
                respond_s=_float(i.respond_s),
                onsite_s=epoch(i.t_onsite),
                restored_s=_float(i.restored_s),
                resolved_s=_float(i.resolved_s),
                closed_s=epoch(i.t_closed),
                channel=i.channel,
                needs_dispatch=bool(i.needs_dispatch),
                remote_used=bool(i.remote_used),
                visits=i.visits,
                reopened=i.reopened,
                severity=i.severity,
                priority=i.priority,
                episodes=tuple(spans.get(i.id, ())),
            )
        )
    transients = await session.execute(
        select(
            TransientFault.device_id, TransientFault.code, TransientFault.raised_at, TransientFault.cleared_at
        )
    )
    for device_id, code, raised_at, cleared_at in transients:
        ds.transients.append(TransientRecord(device_id, code, raised_at.timestamp(), cleared_at.timestamp()))
    periods = await session.execute(
        select(
            DeviceAssignmentPeriod.device_id,
            DeviceAssignmentPeriod.customer_id,
            DeviceAssignmentPeriod.site_id,
            DeviceAssignmentPeriod.valid_from_s,
        ).order_by(DeviceAssignmentPeriod.device_id, DeviceAssignmentPeriod.valid_from_s)
    )
    ds.assignments.extend(AssignmentRecord(*row) for row in periods)
    for article_id, created_at in await session.execute(select(Article.id, Article.created_at)):
        ds.articles.append(ArticleRecord(article_id, created_at.timestamp()))
    links = await session.execute(
        select(ArticleLink.article_id, ArticleLink.incident_id, ArticleLink.fixed).order_by(ArticleLink.id)
    )
    ds.links.extend(LinkRecord(a, i, bool(fixed)) for a, i, fixed in links)
    applied = await session.execute(
        select(IncidentEntry.incident_id, IncidentEntry.detail, IncidentEntry.ts)
        .where(IncidentEntry.kind == APPLIED)
        .order_by(IncidentEntry.id)
    )
    for incident_id, detail, ts in applied:
        if isinstance(detail, dict) and isinstance(detail.get("article_id"), int):
            ds.applied.append(AppliedRecord(incident_id, detail["article_id"], ts.timestamp()))
    shown = await session.execute(
        select(
            SuggestionShown.incident_id,
            SuggestionShown.article_id,
            SuggestionShown.best_rank,
            SuggestionShown.first_shown_at,
        ).order_by(SuggestionShown.id)
    )
    ds.shown.extend(ShownRecord(i, a, r, first.timestamp()) for i, a, r, first in shown)
    return ds


def _dt(ts: float | None) -> Any:
    return None if ts is None else to_datetime(ts)


def customer_row(c: CustomerRecord) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "criticality": 3,
        "contract_hours": c.contract_hours,
        "cost_per_dispatch": c.cost_per_dispatch,
        "created_at": to_datetime(0),
    }


def device_row(d: DeviceRecord) -> dict[str, Any]:
    return {
        "id": d.id,
        "first_seen": to_datetime(d.first_seen_s),
        "online": False,
        "model": d.model,
        "customer_id": d.customer_id,
        "site_id": d.site_id,
        "decommissioned_at": _dt(d.decommissioned_s),
    }


def state_row(s: StateRecord) -> dict[str, Any]:
    return {
        "device_id": s.device_id,
        "state": s.state,
        "start": to_datetime(s.start_s),
        "end": _dt(s.end_s),
        "start_s": s.start_s,
        "end_s": s.end_s,
        "external": s.external,
        "planned_end": _dt(s.planned_end_s),
    }


def incident_row(i: IncidentRecord) -> dict[str, Any]:
    return {
        "id": i.id,
        "device_id": i.device_id,
        "kind": i.kind,
        "status": i.status,
        "fault_code": i.fault_code,
        "codes": [i.fault_code] if i.fault_code else [],
        "severity": i.severity,
        "effect": i.effect,
        "priority": i.priority,
        "external": i.external,
        "t_fault": to_datetime(i.fault_s),
        "t_detect": to_datetime(i.detect_s),
        "t_ack": _dt(i.ack_s),
        "t_respond": _dt(i.respond_s),
        "t_onsite": _dt(i.onsite_s),
        "t_restored": _dt(i.restored_s),
        "t_resolved": _dt(i.resolved_s),
        "t_closed": _dt(i.closed_s),
        "fault_s": i.fault_s,
        "detect_s": i.detect_s,
        "ack_s": i.ack_s,
        "respond_s": i.respond_s,
        "restored_s": i.restored_s,
        "resolved_s": i.resolved_s,
        "channel": i.channel,
        "symptom": "",
        "cause": "",
        "resolution": "",
        "needs_dispatch": i.needs_dispatch,
        "remote_used": i.remote_used,
        "visits": i.visits,
        "reopened": i.reopened,
        "episodes": [  # as server/incidents/sync.py's episode_span writes them
            {
                "start_s": start,
                "end_s": end,
                "detect_s": detect,
                "end_received_s": end,
                "codes": [i.fault_code] if i.fault_code else [],
                "effect": i.effect,
                "severity": i.severity,
            }
            for start, detect, end in i.episodes
        ],
    }


def episode_rows(i: IncidentRecord) -> list[dict[str, Any]]:
    """The incident's rows of incident_episodes (as server/incidents/sync.py writes them)."""
    return [
        {
            "incident_id": i.id,
            "device_id": i.device_id,
            "seq": seq,
            "fault_s": start,
            "detect_s": detect,
            "restored_s": end,
        }
        for seq, (start, detect, end) in enumerate(i.episodes)
    ]


def transient_row(t: TransientRecord) -> dict[str, Any]:
    return {
        "device_id": t.device_id,
        "code": t.code,
        "raised_at": to_datetime(t.raised_s),
        "cleared_at": to_datetime(t.cleared_s),
    }


def assignment_row(a: AssignmentRecord) -> dict[str, Any]:
    return {
        "device_id": a.device_id,
        "customer_id": a.customer_id,
        "site_id": a.site_id,
        "valid_from": to_datetime(a.from_s),
        "valid_from_s": a.from_s,
    }


def article_row(a: ArticleRecord) -> dict[str, Any]:
    created = to_datetime(a.created_s)
    return {
        "id": a.id,
        "title": f"article {a.id}",
        "type": "problem",
        "state": "published",
        "symptom": f"article {a.id}",
        "cause": "",
        "resolution": "",
        "actions": [],
        "models": [],
        "fault_codes": [],
        "signature": {},
        "customer_safe": False,
        "use_count": 0,
        "reuse_count": 0,
        "success_count": 0,
        "apply_count": 0,
        "created_by": "kpi",
        "created_at": created,
        "updated_at": created,
        "published_at": created,
    }


def link_row(link: LinkRecord) -> dict[str, Any]:
    return {
        "article_id": link.article_id,
        "incident_id": link.incident_id,
        "kind": "linked",
        "fixed": link.fixed,
        "signature": {},
        "created_by": "kpi",
        "created_at": to_datetime(0),
    }


def applied_row(a: AppliedRecord) -> dict[str, Any]:
    return {
        "incident_id": a.incident_id,
        "ts": to_datetime(a.ts),
        "kind": APPLIED,
        "actor": "kpi",
        "detail": {"article_id": a.article_id},
    }


def shown_row(s: ShownRecord) -> dict[str, Any]:
    return {
        "incident_id": s.incident_id,
        "article_id": s.article_id,
        "best_rank": s.best_rank,
        "first_shown_at": to_datetime(s.first_s),
    }


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def insert_dataset(session: AsyncSession, ds: Dataset, *, chunk: int = 20_000) -> None:
    """Bulk Core inserts (executemany) of the whole dataset, committed; ids are kept, and on
    PostgreSQL the id sequences are moved past them."""
    plan: list[tuple[Any, Sequence[Any], Any]] = [
        (Customer, ds.customers, customer_row),
        (Site, ds.sites, lambda s: {"id": s.id, "customer_id": s.customer_id, "name": s.name}),
        (Device, ds.devices, device_row),
        (StateInterval, ds.states, state_row),
        (Incident, ds.incidents, incident_row),
        (TransientFault, ds.transients, transient_row),
        (DeviceAssignmentPeriod, ds.assignments, assignment_row),
        (Article, ds.articles, article_row),
        (ArticleLink, ds.links, link_row),
        (IncidentEntry, ds.applied, applied_row),
        (SuggestionShown, ds.shown, shown_row),
    ]
    for model, records, to_row in plan:
        for part in _chunks(records, chunk):
            await session.execute(insert(model.__table__), [to_row(record) for record in part])
        if model is Incident:
            for part in _chunks(records, chunk):
                rows = [row for record in part for row in episode_rows(record)]
                if rows:
                    await session.execute(insert(IncidentEpisode), rows)
    if session.get_bind().dialect.name == "postgresql":
        for table in ("customers", "sites", "incidents", "kb_articles"):
            await session.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608 - fixed names
                    f"GREATEST((SELECT MAX(id) FROM {table}), 1))"
                )
            )
    await session.commit()

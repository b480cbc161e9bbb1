"""A month of history for the demo's printers, written in seconds at its first start, so that
the console shows a business on the first visit (issue 15, item 6): customers with sites,
criticality and contract hours, a month of states and incidents with their resolutions, wear
and toner curves the forecasts can read, and a knowledge base whose articles have been used.

The timelines are the KPI generator's (``server.kpi.generate``: deterministic for a seed, the
generator the KPI tests and benchmark trust), dressed as the demo's printers: its devices take
the printers' ids and model, its customers and sites the names below, and its failures the
printer's fault code (``PAPER_JAM``); its degraded faults become ``PRINT_QUALITY``, a code only
the history has (the live simulated printer degrades through its consumables instead). The
history ends when the demo starts — nothing is dated in the future, nothing is left open that
the live printers do not show — and the live fleet carries on from there.

Written once: a database that already has customers is left as it is (a second start in the same
work directory keeps what the first one wrote, and what happened since).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.base.users import Principal
from server.customers import service as customers
from server.db.models import Customer, Incident, Role, StateTracker, TelemetrySample
from server.db.types import utcnow
from server.incidents.engine import EngineState
from server.knowledge import capture
from server.knowledge import service as knowledge
from server.kpi.generate import BUSINESS_HOURS, FleetShape, generate
from server.kpi.records import Dataset, insert_dataset
from simulators.printer import PrinterPlugin

__all__ = ["BUSINESS", "HISTORY_FAULT", "History", "write_history", "write_wear"]

HISTORY_FAULT = "PAPER_JAM"
QUALITY_FAULT = "PRINT_QUALITY"
SAMPLE_EVERY = timedelta(hours=3)
WEAR_DAYS = 14
"""Days of toner and drum readings before the start: enough for every forecast to have a trend."""


@dataclass(frozen=True, slots=True)
class SiteSpec:
    name: str
    criticality: int


@dataclass(frozen=True, slots=True)
class CustomerSpec:
    name: str
    criticality: int
    business_hours: bool  # False: a 24x7 contract
    cost_per_dispatch: float
    sites: tuple[SiteSpec, ...]


BUSINESS = (
    CustomerSpec(
        "St. Mary's Hospital",
        5,
        False,
        240.0,
        (SiteSpec("Radiology", 5), SiteSpec("Admissions", 4), SiteSpec("Pharmacy", 5)),
    ),
    CustomerSpec("Harbor Law Offices", 3, True, 180.0, (SiteSpec("Main office", 3), SiteSpec("Records", 2))),
    CustomerSpec("City Library", 2, True, 150.0, (SiteSpec("Reading room", 2), SiteSpec("Archive", 1))),
)
"""Who the demo's printers belong to: a hospital on a 24x7 contract, two customers on business
hours (Monday to Friday 08:00-18:00, Europe/Berlin)."""

ARTICLES: tuple[tuple[dict[str, Any], tuple[str, ...]], ...] = (
    (
        {
            "title": "Paper jam in the paper path: clear it remotely",
            "symptom": "Printer stopped with a paper jam (PAPER_JAM); the panel asks to open the tray.",
            "cause": "A sheet stuck at the fuser or the duplex unit, usually after a humid night.",
            "resolution": "Run printer.clear_jam: the printer purges the paper path and resumes. "
            "If it jams again within the hour, ask the customer to check the tray guides.",
            "actions": [{"action": "printer.clear_jam", "args": {}}],
            "fault_codes": [HISTORY_FAULT],
        },
        ("remote",),
    ),
    (
        {
            "title": "Paper jam: clear it at the printer",
            "type": "how-to",
            "symptom": "The printer shows a paper jam and stopped printing.",
            "cause": "A sheet stuck in the paper path.",
            "resolution": "Open the front door, pull the stuck sheet out gently in the direction of "
            "the paper path, close the door: the printer resumes by itself.",
            "fault_codes": [HISTORY_FAULT],
            "customer_safe": True,
        },
        ("customer",),
    ),
    (
        {
            "title": "Streaks or faded print: replace the drum unit on site",
            "symptom": "Print quality degraded (PRINT_QUALITY): streaks, faded areas.",
            "cause": "A worn drum or a dirty corona wire.",
            "resolution": "Dispatch with a drum unit; clean the corona wire while there.",
            "fault_codes": [QUALITY_FAULT],
        },
        ("field",),
    ),
)
"""The knowledge base the demo starts with — a remote fix, a customer guide, a field fix — each\nwith the resolution channels of the history's incidents it is linked to."""


@dataclass(frozen=True, slots=True)
class History:
    """What :func:`write_history` wrote (all zero when the database had its business already)."""

    customers: int
    sites: int
    incidents: int
    articles: int
    start: datetime | None

    def line(self) -> str:
        if self.start is None:
            return "history      kept from an earlier run of this work directory (or none asked for)"
        return (
            f"history      {self.incidents} incidents since {self.start:%Y-%m-%d}, "
            f"{self.customers} customers, {self.sites} sites, {self.articles} knowledge articles"
        )


def _dress(ds: Dataset, device_ids: Sequence[str], model: str, end_s: float) -> Dataset:
    """The generated history as the demo's printers', cut at ``end_s``."""
    ids = dict(zip((d.id for d in ds.devices), device_ids, strict=True))
    site_names: dict[int, str] = {}
    customers_out = []
    for spec, record in zip(BUSINESS, ds.customers, strict=True):
        hours = dict(BUSINESS_HOURS) if spec.business_hours else None
        customers_out.append(
            replace(record, name=spec.name, contract_hours=hours, cost_per_dispatch=spec.cost_per_dispatch)
        )
        own = [s for s in ds.sites if s.customer_id == record.id]
        for site, named in zip(own, spec.sites, strict=False):
            site_names[site.id] = named.name
    sites = [replace(s, name=site_names.get(s.id, s.name)) for s in ds.sites]
    incidents = []
    for i in ds.incidents:
        if i.resolved_s is None or i.resolved_s > end_s:
            continue  # still open at the start: the live printers show no such fault
        code = HISTORY_FAULT if i.effect == "down" else QUALITY_FAULT
        incidents.append(replace(i, device_id=ids[i.device_id], fault_code=code))
    states = [
        replace(s, device_id=ids[s.device_id], end_s=end_s if s.end_s is None or s.end_s > end_s else s.end_s)
        for s in ds.states
        if s.start_s < end_s
    ]
    return Dataset(
        customers=customers_out,
        sites=sites,
        devices=[replace(d, id=ids[d.id], model=model) for d in ds.devices],
        states=states,
        incidents=incidents,
        transients=[replace(t, device_id=ids[t.device_id]) for t in ds.transients if t.cleared_s <= end_s],
        assignments=[replace(a, device_id=ids[a.device_id]) for a in ds.assignments],
    )


def _continue_from_here(session: AsyncSession, device_ids: Sequence[str]) -> None:
    """A derivation for each device that continues from the history's end. Without one, the
    device's first live message would rebuild its states and incidents from its raw events —
    which the written history does not have — and drop the history (server/incidents/tracker.py)."""
    snapshot = EngineState().to_json()
    now = utcnow()
    for device_id in device_ids:
        session.add(StateTracker(device_id=device_id, dirty=False, snapshot=snapshot, updated_at=now))


async def _criticality(session: AsyncSession) -> None:
    """Customer and site criticality through the customers service (it reprioritises)."""
    for spec in BUSINESS:
        customer = await session.scalar(select(Customer).where(Customer.name == spec.name))
        assert customer is not None
        await customers.update_customer(session, customer.id, {"criticality": spec.criticality}, actor="demo")
        sites, _ = await customers.list_sites(session, customer.id, limit=100)
        wanted = {s.name: s.criticality for s in spec.sites}
        for site in sites:
            if site.name in wanted:
                await customers.update_site(
                    session, customer.id, site.id, {"criticality": wanted[site.name]}, actor="demo"
                )


async def _knowledge(session: AsyncSession, who: Principal, now: datetime, rng: random.Random) -> int:
    """The articles, published, each linked to the history's incidents it would have solved —
    through the knowledge capture a resolution uses, so use and success counts are its own."""
    for values, channels in ARTICLES:
        article = await knowledge.create_article(session, who, dict(values))
        await knowledge.publish(session, who, article.id)
        solved = list(
            await session.scalars(
                select(Incident)
                .where(Incident.fault_code.in_(article.fault_codes), Incident.channel.in_(channels))
                .order_by(Incident.resolved_s)
            )
        )
        for incident in solved:
            fixed = incident.reopened == 0 and rng.random() < 0.9
            when = incident.t_resolved or now
            await capture.on_resolve(
                session, incident, who, article_id=article.id, draft=False, fixed=fixed, evidence=[], now=when
            )
        await session.commit()
    return len(ARTICLES)


def _wear(printer: PrinterPlugin, now: datetime, rng: random.Random) -> list[dict[str, Any]]:
    """Toner and drum readings over the last :data:`WEAR_DAYS` days, ending at the printer's
    levels now: toner falls (and was replaced once if it would have been over 100 %), the drum wears."""
    rows: list[dict[str, Any]] = []
    steps = int(timedelta(days=WEAR_DAYS) / SAMPLE_EVERY)
    levels = {f"printer.toner.{color}.percent": level for color, level in printer.toner.items()}
    levels["printer.drum.wear.percent"] = printer.drum_wear
    for metric, current in levels.items():
        wearing = metric.startswith("printer.drum")
        per_step = rng.uniform(0.05, 0.25) if wearing else rng.uniform(0.15, 0.6)
        for k in range(steps, 0, -1):
            value = current - per_step * k if wearing else current + per_step * k
            if not wearing and value > 100.0:  # replaced during the window: it was full then
                value -= 95.0
            ts = now - SAMPLE_EVERY * k
            rows.append(
                {
                    "device_id": printer.device_id,
                    "metric": metric,
                    "ts": ts,
                    "value": round(max(0.0, value), 2),
                }
            )
    return rows


async def write_history(
    sessions: Any,
    device_ids: Sequence[str],
    *,
    now: datetime,
    model: str,
    days: float = 30.0,
    seed: int = 1,
) -> History:
    """The business and its history up to ``now`` (devices, customers, states, incidents,
    articles), unless the database has customers already. ``sessions``: the runtime's session
    factory. Call before the fleet connects: the devices are created here with their owners."""
    async with sessions() as session:
        if await session.scalar(select(func.count()).select_from(Customer)):
            return History(0, 0, 0, 0, None)
        start = (now - timedelta(days=days)).replace(microsecond=0)
        shape = FleetShape(
            devices=len(device_ids),
            customers=len(BUSINESS),
            start=start,
            days=days,
            seed=seed,
            skew_share=0.0,
            decommission_share=0.0,
            late_start_share=0.0,
            unassigned_share=0.0,
        )
        ds = _dress(generate(shape), device_ids, model, now.replace(microsecond=0).timestamp())
        await insert_dataset(session, ds)
        _continue_from_here(session, [d.id for d in ds.devices])
        await _criticality(session)
        who = Principal(user_id=0, name="demo", role=Role.ADMIN)
        articles = await _knowledge(session, who, now, random.Random(seed))  # noqa: S311 - a simulation
        return History(len(ds.customers), len(ds.sites), len(ds.incidents), articles, start.astimezone(UTC))


async def write_wear(
    sessions: Any, printers: Mapping[str, PrinterPlugin], *, now: datetime, seed: int = 1
) -> int:
    """Two weeks of toner and drum readings before ``now`` for each printer that has none yet,
    ending at its current levels (so the forecasts have a trend on the first visit)."""
    rng = random.Random(seed)  # noqa: S311 - a simulation
    rows: list[dict[str, Any]] = []
    async with sessions() as session:
        for device_id, printer in printers.items():
            earlier = await session.scalar(
                select(func.count())
                .select_from(TelemetrySample)
                .where(TelemetrySample.device_id == device_id, TelemetrySample.ts < now)
            )
            if not earlier:
                rows.extend(_wear(printer, now, rng))
        if rows:
            await session.execute(insert(TelemetrySample), rows)
            await session.commit()
    return len(rows)

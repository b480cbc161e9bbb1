"""An accelerated run of a whole scenario: broker, server, fleet and people, on one time line.

    result = await run_scenario(load_scenario("hospital-imaging"), workdir=Path("var/sim-run"))
    print(result.summary())

What runs (the demo's pieces, ``server/demo.py``): the embedded broker with mutual TLS, the server
on SQLite with a ``[simulation]`` section (its "now" is simulated time), the fleet of real agents
whose equipment *and* command checks use the same :class:`~simulators.clock.AnchoredClock`, and
the behaviours (``simulators/behaviours``) driving the real API as real users. After
``scenario.days`` of simulated time the KPIs of the run's period are read from
``/api/v1/kpis``, then everything stops (fleet, server, broker).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from agent.plugin import EquipmentPlugin
from server import clock as server_clock
from server.app import create_app
from server.db.models import Role
from server.demo import _admin_token, _ensure_pki, _serve
from server.embedded_broker import EmbeddedBroker
from server.services import users
from server.settings import load_settings
from simulators.behaviours import Person, World, fault_models
from simulators.behaviours.customer import Customers
from simulators.behaviours.technician import ServiceDesk
from simulators.chiller import ChillerPlugin
from simulators.clock import AnchoredClock
from simulators.fleet import Member, SimulatedFleet, device_ids
from simulators.imaging import ImagingPlugin
from simulators.printer import PrinterPlugin
from simulators.scenario import Scenario

__all__ = ["Progress", "RunError", "RunResult", "build_members", "run_scenario"]

logger = logging.getLogger(__name__)

_CONNECT_TIMEOUT = 60.0
_KINDS: dict[str, type[Any]] = {"printer": PrinterPlugin, "imaging": ImagingPlugin, "chiller": ChillerPlugin}


class RunError(Exception):
    """The run could not start or finish; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class Progress:
    day: float
    days: float
    devices: int
    connected: int
    open_incidents: int
    resolved: dict[str, int]

    def line(self) -> str:
        channels = ", ".join(f"{k} {v}" for k, v in sorted(self.resolved.items())) or "none yet"
        return (
            f"day {min(self.day, self.days):5.1f}/{self.days:g}  devices {self.connected}/{self.devices}  "
            f"open incidents {self.open_incidents}  resolved: {channels}"
        )


@dataclass(slots=True)
class RunResult:
    scenario: Scenario
    start: datetime
    end: datetime
    kpis: dict[str, Any]  # the fleet row of /api/v1/kpis for [start, end)
    customers: list[dict[str, Any]]  # one row per customer (group_by=customer)
    dispatch_cost: float  # Σ resolved_field x the customer's cost_per_dispatch
    actions: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    fault_history: dict[str, list[tuple[str, str]]] = field(
        default_factory=dict
    )  # device → (ts, code) raised
    clears: list[dict[str, Any]] = field(
        default_factory=list
    )  # fault.cleared events: device, code, ts, cleared_by
    incidents: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        k = self.kpis

        def pct(name: str) -> str:
            value = k.get(name)
            return "—" if value is None else f"{100 * value:.1f} %"

        def hours(name: str) -> str:
            value = k.get(name)
            return "—" if value is None else f"{value / 3600:.2f} h"

        remote = "on" if self.scenario.remote_maintenance else "off (baseline)"
        return "\n".join(
            [
                f"scenario {self.scenario.name}: {self.scenario.days:g} simulated days, remote maintenance {remote}",
                f"  period          {self.start.isoformat()} → {self.end.isoformat()}",
                f"  devices         {k.get('devices')}",
                f"  downtime        {hours('downtime_s')}   availability {pct('availability')}",
                f"  incidents       {k.get('incidents')}   resolved {k.get('resolved')} "
                f"(auto {k.get('resolved_auto')}, customer {k.get('resolved_customer')}, "
                f"remote {k.get('resolved_remote')}, field {k.get('resolved_field')})",
                f"  self-resolution {pct('self_resolution_rate')}   MTRS {hours('mtrs_mean_s')}   "
                f"MTTA {hours('mtta_mean_s')}",
                f"  dispatches      {k.get('resolved_field')}   cost {self.dispatch_cost:,.2f}",
            ]
        )


def _tick_seconds(speed: float) -> float:
    """Equipment step: about 50 steps per real second per device, never below 5 simulated s."""
    return max(5.0, speed / 50.0)


def build_members(scenario: Scenario, clock: AnchoredClock) -> list[Member]:
    """The fleet's devices, each with its plugin seeded from the scenario's seed and its index
    (same scenario + seed → same equipment lives)."""
    every = {"PAPER_JAM"} | {m.code for k in (ImagingPlugin, ChillerPlugin) for m in k.FAULTS}
    unknown = sorted(set(scenario.faults.codes) - every)
    if unknown:
        raise RunError(
            f"faults.codes: unknown fault code(s) {', '.join(unknown)}; known: {', '.join(sorted(every))}"
        )
    members: list[Member] = []
    index = 0
    for group in scenario.fleet:
        cls = _KINDS[group.kind]
        prefix = group.prefix or f"sim-{group.kind}"
        for device_id in device_ids(prefix, group.count):
            options = dict(group.options)
            options.setdefault("seed", scenario.seed * 100_003 + index)
            options.setdefault("tick_seconds", _tick_seconds(scenario.speed))
            if group.kind == "printer":
                base = float(options.get("jam_rate_per_hour", 0.1))
                rate = scenario.faults.multiplier * scenario.faults.codes.get("PAPER_JAM", 1.0)
                options["jam_rate_per_hour"] = base * rate
            else:
                known = {m.code for m in cls.FAULTS}
                options.setdefault("fault_rate_multiplier", scenario.faults.multiplier)
                options.setdefault(
                    "fault_rates", {c: m for c, m in scenario.faults.codes.items() if c in known}
                )
            try:
                plugin: EquipmentPlugin = cls(device_id, options, clock=clock)
            except ValueError as exc:
                raise RunError(f"fleet ({group.kind} {group.customer}/{group.site}).options: {exc}") from exc
            actions = [spec.name for spec in plugin.actions()]
            members.append(Member(device_id, plugin, site=group.site, allowed_actions=actions))
            index += 1
    return members


async def _setup_people(
    app: Any, admin: httpx.AsyncClient, scenario: Scenario, fleet: SimulatedFleet
) -> tuple[Person, list[Person], dict[str, Person], dict[tuple[str, str], int]]:
    """Customers, sites and device assignments through the API; users and their tokens through
    the server's own services (the same as ``fleetcare user`` does); guides from the fault models."""

    async def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = await admin.request(method, f"/api/v1{path}", json=body)
        if response.status_code >= 400:
            raise RunError(f"set-up: {method} {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    customer_ids: dict[str, int] = {}
    site_ids: dict[tuple[str, str], int] = {}
    for spec in scenario.customers:
        body: dict[str, Any] = {
            "name": spec.name,
            "criticality": spec.criticality,
            "cost_per_dispatch": spec.cost_per_dispatch,
        }
        if spec.contract_hours is not None:
            body["contract_hours"] = spec.contract_hours.model_dump()
        customer = await call("POST", "/customers", body)
        customer_ids[spec.name] = customer["id"]
        for site in spec.sites:
            created = await call(
                "POST", f"/customers/{customer['id']}/sites", site.model_dump(exclude_none=True)
            )
            site_ids[(spec.name, site.name)] = created["id"]

    runtime = app.state.runtime

    async def token(
        name: str, role: Role, customer: int | None = None, assign: list[int] | None = None
    ) -> str:
        async with runtime.sessions() as session:
            await users.create_user(session, name, role, actor="simulation", customer=customer)
            for each in assign or []:
                await users.assign(session, name, each, actor="simulation")
            return (await users.issue_token(session, name, actor="simulation")).token

    client = admin
    desk = Person("desk", client, await token("sim-desk", Role.OPS))
    technicians = [
        Person(
            f"sim-tech-{i}",
            client,
            await token(f"sim-tech-{i}", Role.TECHNICIAN, assign=list(customer_ids.values())),
        )
        for i in range(1, scenario.technicians.count + 1)
    ]
    customer_people = {
        name: Person(
            f"sim-customer-{i}", client, await token(f"sim-customer-{i}", Role.CUSTOMER, customer=cid)
        )
        for i, (name, cid) in enumerate(customer_ids.items(), start=1)
    }

    # Devices register on first contact; then they are put at their customer's site.
    groups = [(g.customer, g.site) for g in scenario.fleet for _ in range(g.count)]
    deadline = time.monotonic() + _CONNECT_TIMEOUT
    while True:
        page = await call("GET", "/devices?limit=1000")
        known = {d["id"] for d in page["items"]}
        if set(fleet.device_ids) <= known:
            break
        if time.monotonic() > deadline:
            raise RunError(
                f"set-up: {len(set(fleet.device_ids) - known)} devices never registered with the server"
            )
        await asyncio.sleep(0.1)
    by_device: dict[str, Person] = {}
    for device_id, (customer, site_name) in zip(fleet.device_ids, groups, strict=True):
        await call(
            "PATCH",
            f"/devices/{device_id}",
            {"customer_id": customer_ids[customer], "site_id": site_ids[(customer, site_name)]},
        )
        by_device[device_id] = customer_people[customer]

    guides: dict[tuple[str, str], int] = {}
    for machine in {type(m): m for m in fleet.machines.values()}.values():
        for model in fault_models(machine).values():
            for fix in model.guided_fixes:
                if (model.code, fix.title) in guides:
                    continue
                created = await call(
                    "POST",
                    "/guides",
                    {"fault_code": model.code, "title": fix.title, "steps": [{"text": s} for s in fix.steps]},
                )
                guides[(model.code, fix.title)] = created["id"]
    return desk, technicians, by_device, guides


async def _progress(world: World, fleet: SimulatedFleet, start: datetime, days: float) -> Progress:
    open_page = await world.desk.call("GET", "/incidents", open_only="true", limit=1)
    resolved: Counter[str] = Counter()
    offset = 0
    while True:
        page = await world.desk.call("GET", "/incidents", status="resolved", limit=1000, offset=offset)
        resolved.update(i["channel"] or "?" for i in page["items"])
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            break
    fp = fleet.progress()
    day = (world.clock.now() - start).total_seconds() / 86400.0
    return Progress(day, days, fp.devices, fp.connected, open_page["total"], dict(resolved))


async def _events(
    desk: Person, device_id: str, type_: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = await desk.call(
            "GET",
            f"/devices/{device_id}/events",
            type=type_,
            since=start.isoformat(),
            until=end.isoformat(),
            limit=1000,
            offset=offset,
        )
        events.extend(page["items"])
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return sorted(events, key=lambda e: e["seq"])


def _fresh(workdir: Path) -> Path:
    """``workdir`` without a previous run's database, agent data and broker state."""
    workdir = workdir.resolve()
    for stale in ("sim.db", "agents", "broker"):
        path = workdir / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


async def run_scenario(
    scenario: Scenario,
    workdir: Path,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    progress_every: float = 1.0,
    broker: str = "auto",
    server_overrides: dict[str, Any] | None = None,
) -> RunResult:
    """Run ``scenario`` to its end in a fresh ``workdir`` (its database and agent data are
    replaced; the PKI is kept) and return the KPIs of its period. ``server_overrides``: extra
    server settings (e.g. ``{"incidents": {"reopen_window_days": 0}}``: every fault its own
    incident)."""
    workdir = await asyncio.to_thread(_fresh, workdir)
    pki = await asyncio.to_thread(_ensure_pki, workdir / "pki")
    epoch = scenario.start_at()
    clock = AnchoredClock(1.0, epoch)  # real speed while setting up; accelerated from the run's start
    members = build_members(scenario, clock)
    async with EmbeddedBroker(pki, workdir / "broker", prefer=broker, port=0) as mqtt:  # type: ignore[arg-type]
        settings = load_settings(
            None,
            database_url=f"sqlite+aiosqlite:///{workdir / 'sim.db'}",
            signing_key_file=pki.signing_key,
            mqtt={
                "host": mqtt.host,
                "port": mqtt.port,
                "ca_file": pki.ca_cert,
                "cert_file": pki.server_client_cert,
                "key_file": pki.server_client_key,
                "client_id": "fleetcare-sim-server",
                "shared_group": "fleetcare" if mqtt.supports_shared_subscriptions else None,
            },
            simulation={
                "enabled": True,
                "epoch": epoch,
                "real_anchor": clock.real_anchor,
                "speed": clock.speed,
            },
            # sweeps run in real seconds: often enough that a simulated minute is not missed
            incidents={
                "sweep_interval": 0.2,
                "clock_skew_tolerance": min(3600.0, 2.0 * scenario.speed),
                **(server_overrides or {}).get("incidents", {}),
            },
            sessions={"sweep_interval": 0.2, "max_time_limit": 7 * 86400.0, "consent_wait": 7 * 86400.0},
            command_sweep_interval=0.2,
            maintenance={"rule_interval": 0},
            **{k: v for k, v in (server_overrides or {}).items() if k != "incidents"},
        )
        app = create_app(settings)
        try:
            async with _serve(app, "127.0.0.1", 0) as port:
                admin_token = await _admin_token(app)
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}",
                    headers={"Authorization": f"Bearer {admin_token}"},
                    timeout=60.0,
                ) as client:
                    fleet = SimulatedFleet(
                        pki,
                        mqtt.host,
                        mqtt.port,
                        len(members),
                        data_root=workdir / "agents",
                        telemetry_interval=60.0 * scenario.telemetry_minutes,
                        members=members,
                        clock=clock,
                        command_clock=clock,
                    )
                    async with fleet:
                        async with asyncio.timeout(_CONNECT_TIMEOUT):
                            await fleet.wait_connected()
                        desk, technicians, by_device, guides = await _setup_people(
                            app, client, scenario, fleet
                        )
                        client.headers.pop("Authorization")
                        clock.rebase(scenario.speed)  # go: the server follows the same time line
                        server_clock.configure(
                            server_clock.AnchoredTime(clock.epoch, clock.real_anchor, clock.speed)
                        )
                        start = clock.now()
                        end = start + timedelta(seconds=scenario.duration_s)

                        def approve(device_id: str, session_id: str, seconds: float) -> None:
                            fleet.agents[device_id].consent.approve(
                                session_id, by="local-operator", ttl=timedelta(seconds=seconds)
                            )

                        world = World(
                            clock=clock,
                            remote_maintenance=scenario.remote_maintenance,
                            desk=desk,
                            technicians=technicians,
                            customers=by_device,
                            machines=fleet.machines,
                            approve_consent=approve,
                            guides=guides,
                            seed=scenario.seed,
                        )
                        async with asyncio.TaskGroup() as tg:
                            people = [
                                tg.create_task(
                                    Customers(world, scenario.customer_behaviour).run(), name="customers"
                                ),
                                tg.create_task(ServiceDesk(world, scenario.technicians).run(), name="desk"),
                            ]
                            while clock.now() < end:
                                if on_progress is not None:
                                    on_progress(await _progress(world, fleet, start, scenario.days))
                                await asyncio.sleep(
                                    min(
                                        progress_every,
                                        max(0.01, (end - clock.now()).total_seconds() / scenario.speed),
                                    )
                                )
                            for task in people:
                                task.cancel()
                        if on_progress is not None:
                            on_progress(await _progress(world, fleet, start, scenario.days))
                        await asyncio.sleep(0.5)  # the last messages reach the server
                        result = await _collect(world, scenario, start, end, list(fleet.device_ids))
        finally:
            server_clock.configure(None)
    return result


async def _collect(
    world: World, scenario: Scenario, start: datetime, end: datetime, ids: list[str]
) -> RunResult:
    params = {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "as_of": end.isoformat(),
        "definitions": "false",
    }
    fleet_row = (await world.desk.call("GET", "/kpis", **params))["rows"][0]["kpis"]
    by_customer = (await world.desk.call("GET", "/kpis", group_by="customer", **params))["rows"]
    costs = {c.name: c.cost_per_dispatch for c in scenario.customers}
    cost = sum(
        (row["kpis"].get("resolved_field") or 0) * costs.get(row["group"]["label"], 0.0)
        for row in by_customer
    )
    incidents: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = await world.desk.call("GET", "/incidents", limit=1000, offset=offset)
        incidents.extend(page["items"])
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            break
    return RunResult(
        scenario=scenario,
        start=start,
        end=end,
        kpis=fleet_row,
        customers=by_customer,
        dispatch_cost=cost,
        actions=world.actions,
        errors=world.errors,
        fault_history={
            d: [(e["ts"], e["code"]) for e in await _events(world.desk, d, "fault.raised", start, end)]
            for d in ids
        },
        clears=[
            {"device_id": d, "code": e["code"], "ts": e["ts"], "cleared_by": e["data"].get("cleared_by")}
            for d in ids
            for e in await _events(world.desk, d, "fault.cleared", start, end)
        ],
        incidents=incidents,
    )

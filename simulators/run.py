"""An accelerated run of a whole scenario: broker, server, fleet and people, on one time line.

    result = await run_scenario(load_scenario("hospital-imaging"), workdir=Path("var/sim-run"))
    print(result.summary())

What runs (the demo's pieces, ``server/demo.py``): the embedded broker with mutual TLS, the server
on SQLite with a ``[simulation]`` section (its "now" is simulated time), the fleet of real agents
whose equipment *and* command checks use the same :class:`~simulators.clock.AnchoredClock`, and
the behaviours (``simulators/behaviours``) driving the real API as real users. After
``scenario.days`` of simulated time the KPIs of the run's period are read from
``/api/v1/kpis``, then everything stops (fleet, server, broker).

Two clocks (``clock`` in the scenario):

- ``anchored``: simulated time is the wall clock x ``speed``; everything runs freely in real
  time, so real-time jitter (a slow commit, a busy core) becomes simulated minutes and two runs
  drift apart after the first time a person acts.
- ``stepped`` (reproducible): a :class:`~simulators.clock.SteppedClock` that the runner moves
  from one wake-up time to the next (at least every ``tick`` of the equipment). At each instant
  it (1) wakes the equipment and agents due, (2) waits until every message they queued is on the
  server — each agent's newest seq stored in ``messages``, an observable barrier, not a sleep —
  (3) runs the server's sweeps (incidents, sessions, commands) at that instant when they can
  have anything to do, in place of the server's real-time sweepers, which it stops (the end of a
  debounce window is an instant of its own), (4) hands the open incidents to the behaviours
  and wakes the people due, one task at a time in a fixed order, each until it sleeps on the
  clock again or ends, then (2)-(3) again. The server's "now" is the same clock
  (``server/clock.py``). Same scenario + seed ⇒ the same event history and incidents.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import and_, func, or_, select

from agent.plugin import EquipmentPlugin
from certs import PkiDir
from server import clock as server_clock
from server.app import create_app
from server.base import users
from server.customers.service import SITE_SEPARATOR
from server.db.models import Message, Role, StateTracker
from server.embedded_broker import EmbeddedBroker
from server.incidents import IncidentTracker
from server.local_stack import admin_token as issue_admin_token
from server.local_stack import ensure_pki, serve_api
from server.settings import ServerSettings, load_settings
from simulators.behaviours import Person, World, fault_models
from simulators.behaviours.customer import Customers
from simulators.behaviours.technician import ServiceDesk
from simulators.chiller import ChillerPlugin
from simulators.clock import EQUIPMENT, PEOPLE, AnchoredClock, SteppedClock, StepTimeout
from simulators.fleet import Member, SimulatedFleet, device_ids
from simulators.imaging import ImagingPlugin
from simulators.printer import PrinterPlugin
from simulators.scenario import Scenario

__all__ = ["Progress", "RunError", "RunResult", "build_members", "run_scenario"]

logger = logging.getLogger(__name__)

_CONNECT_TIMEOUT = 60.0
_BARRIER_TIMEOUT = 60.0  # real seconds for a step's messages to reach the server
_SWITCH_INTERVAL = 0.0005  # s: sys.setswitchinterval during a stepped run
_HOUSEKEEPING_S = 3600.0  # simulated s between session/command sweeps (their windows are hours long)
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


def build_members(scenario: Scenario, clock: AnchoredClock | SteppedClock) -> list[Member]:
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
            options.setdefault("tick_seconds", scenario.tick)
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
            # the qualified name: the server then gives the device the right customer's site on
            # first contact, even where two customers have a site of that name (issue 13)
            site = f"{group.customer}{SITE_SEPARATOR}{group.site}"
            members.append(Member(device_id, plugin, site=site, allowed_actions=actions))
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

    # Devices register on first contact and report "<customer>/<site>", so the server gives them
    # their site as soon as it exists; any device whose inventory has not come yet is put there.
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
    placed = {d["id"]: d["site_id"] for d in (await call("GET", "/devices?limit=1000"))["items"]}
    by_device: dict[str, Person] = {}
    for device_id, (customer, site_name) in zip(fleet.device_ids, groups, strict=True):
        if placed.get(device_id) != site_ids[(customer, site_name)]:
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


def _server_settings(
    scenario: Scenario,
    clock: AnchoredClock | SteppedClock,
    mqtt: EmbeddedBroker,
    *,
    pki: PkiDir,
    workdir: Path,
    overrides: dict[str, Any],
) -> ServerSettings:
    """The in-process server's settings for a run: SQLite in ``workdir``, the embedded broker,
    and timing for the clock (anchored: the ``[simulation]`` section and sweeps every 0.2 real
    seconds; stepped: no ``[simulation]`` — the clock object is handed over — and no clocked job
    on a timer: the runner sweeps)."""
    if isinstance(clock, SteppedClock):
        timing: dict[str, Any] = {
            "simulation": {"enabled": False},
            "incidents": {"sweep_interval": 3600.0},
            "sessions": {"sweep_interval": 60.0, "max_time_limit": 7 * 86400.0, "consent_wait": 7 * 86400.0},
            "command_sweep_interval": 60.0,
            "ingest": {"batch_linger": 0.0005, "batch_interval": 0.005},  # each instant waits for its batch
            # a real-time sweep would land on whatever instant happens to be simulated when it
            # fires: the runner sweeps at chosen instants instead (Runtime.sweep_all)
            "jobs_in_real_time": False,
        }
    else:
        timing = {
            "simulation": {
                "enabled": True,
                "epoch": clock.epoch,
                "real_anchor": clock.real_anchor,
                "speed": clock.speed,
            },
            # sweeps run in real seconds: often enough that a simulated minute is not missed
            "incidents": {"sweep_interval": 0.2, "clock_skew_tolerance": min(3600.0, 2.0 * scenario.speed)},
            "sessions": {"sweep_interval": 0.2, "max_time_limit": 7 * 86400.0, "consent_wait": 7 * 86400.0},
            "command_sweep_interval": 0.2,
        }
    incidents = {**timing.pop("incidents"), **overrides.pop("incidents", {})}
    return load_settings(
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
        incidents=incidents,
        maintenance={"rule_interval": 0},
        **{**timing, **overrides},
    )


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
    pki = await asyncio.to_thread(ensure_pki, workdir / "pki")
    epoch = scenario.start_at()
    stepped = scenario.clock == "stepped"
    # anchored: real speed while setting up, accelerated from the run's start; stepped: frozen
    # until the runner moves it, so setting up costs no simulated time
    clock: AnchoredClock | SteppedClock = SteppedClock(epoch) if stepped else AnchoredClock(1.0, epoch)
    members = build_members(scenario, clock)
    async with EmbeddedBroker(pki, workdir / "broker", prefer=broker, port=0) as mqtt:  # type: ignore[arg-type]
        settings = _server_settings(
            scenario, clock, mqtt, pki=pki, workdir=workdir, overrides=dict(server_overrides or {})
        )
        app = create_app(settings)
        if isinstance(clock, SteppedClock):
            server_clock.configure(clock)  # the server's "now" is the step being simulated
        try:
            async with serve_api(app, "127.0.0.1", 0, name="sim.api") as port:
                admin_token = await issue_admin_token(app, actor="sim")
                # stepped: people call the app in-process (no socket, no HTTP parsing), the same
                # routes, dependencies and database; anchored: over HTTP like any client
                transport = httpx.ASGITransport(app=app) if stepped else None
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}",
                    headers={"Authorization": f"Bearer {admin_token}"},
                    timeout=60.0,
                    transport=transport,
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
                        if isinstance(clock, AnchoredClock):
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
                        customers = Customers(world, scenario.customer_behaviour)
                        service_desk = ServiceDesk(world, scenario.technicians)
                        report = _Reporter(
                            world,
                            fleet,
                            start=start,
                            days=scenario.days,
                            on_progress=on_progress,
                            every=progress_every,
                        )
                        if isinstance(clock, SteppedClock):
                            stepper = _Stepper(
                                clock,
                                app,
                                settings,
                                fleet=fleet,
                                world=world,
                                customers=customers,
                                service_desk=service_desk,
                            )
                            await stepper.run(end, report)
                        else:
                            await _run_anchored(
                                clock,
                                end,
                                speed=scenario.speed,
                                customers=customers,
                                service_desk=service_desk,
                                report=report,
                            )
                        await report(force=True)
                        result = await _collect(world, scenario, start, end, list(fleet.device_ids))
        finally:
            server_clock.configure(None)
    return result


class _Reporter:
    """Progress lines at most every ``every`` real seconds (reading the API costs no simulated time)."""

    def __init__(
        self,
        world: World,
        fleet: SimulatedFleet,
        *,
        start: datetime,
        days: float,
        on_progress: Callable[[Progress], None] | None,
        every: float,
    ) -> None:
        self.world, self.fleet, self.start, self.days = world, fleet, start, days
        self.on_progress, self.every = on_progress, every
        self._last = float("-inf")

    async def __call__(self, *, force: bool = False) -> None:
        if self.on_progress is None or (not force and time.monotonic() - self._last < self.every):
            return
        self._last = time.monotonic()
        self.on_progress(await _progress(self.world, self.fleet, self.start, self.days))


async def _run_anchored(
    clock: AnchoredClock,
    end: datetime,
    *,
    speed: float,
    customers: Customers,
    service_desk: ServiceDesk,
    report: _Reporter,
) -> None:
    """People poll and act in real time until the simulated end."""
    async with asyncio.TaskGroup() as tg:
        people = [
            tg.create_task(customers.run(), name="customers"),
            tg.create_task(service_desk.run(), name="desk"),
        ]
        while clock.now() < end:
            await report()
            await asyncio.sleep(min(report.every, max(0.01, (end - clock.now()).total_seconds() / speed)))
        for task in people:
            task.cancel()
    await asyncio.sleep(0.5)  # the last messages reach the server


def _earliest(*times: datetime | None) -> datetime | None:
    return min((t for t in times if t is not None), default=None)


class _Stepper:
    """The discrete-event loop of a stepped run (see the module's docstring)."""

    def __init__(
        self,
        clock: SteppedClock,
        app: FastAPI,
        settings: ServerSettings,
        *,
        fleet: SimulatedFleet,
        world: World,
        customers: Customers,
        service_desk: ServiceDesk,
    ) -> None:
        self.clock, self.fleet, self.world = clock, fleet, world
        self.customers, self.service_desk = customers, service_desk
        self.runtime = app.state.runtime
        if self.runtime.incidents is None:
            raise RunError("a simulated run needs incidents enabled (incidents.enabled = true)")
        self.tracker: IncidentTracker = self.runtime.incidents
        self._seen = {d: agent.outbox.next_seq() for d, agent in fleet.agents.items()}
        self._spawned: list[tuple[Coroutine[Any, Any, None], str]] = []
        self._tasks: set[asyncio.Task[None]] = set()  # the people's tasks still running
        self.instants = 0
        self._tracker_due: float | None = None  # the earliest debounce/grace window (Unix s)
        self._grid = -1
        world.settle = self.settle

    async def barrier(self) -> bool:
        """Until every message the agents queued so far is stored by the server: each agent's
        outbox drained (the broker has it) and its newest seq in ``messages`` (the newest message
        of an outbox is never superseded). True if any of them was more than telemetry (people
        may have something new to see)."""
        expected: dict[str, int] = {}
        for device_id, agent in self.fleet.agents.items():
            next_seq = agent.outbox.next_seq()
            if next_seq != self._seen[device_id]:
                expected[device_id] = next_seq - 1
        if not expected:
            return False
        new = or_(*(and_(Message.device_id == d, Message.seq >= self._seen[d]) for d in expected))
        notable = False
        try:
            async with asyncio.timeout(_BARRIER_TIMEOUT):
                for device_id in expected:
                    await self.fleet.agents[device_id].drained()
                stats = self.runtime.stats
                while True:
                    batches = stats.batches
                    async with self.runtime.sessions() as session:
                        query = select(Message.device_id, Message.seq, Message.kind).where(new)
                        rows = (await session.execute(query)).all()
                    stored: dict[str, int] = {}
                    for device_id, seq, kind in rows:
                        stored[device_id] = max(seq, stored.get(device_id, -1))
                        notable = notable or kind != "telemetry"
                    if all(stored.get(d, -1) >= seq for d, seq in expected.items()):
                        break
                    # nothing new stored yet: no need to ask the database again (the ingest
                    # counters have no event to wait on; this polls a number in memory)
                    while stats.batches == batches:  # noqa: ASYNC110
                        await asyncio.sleep(0.0005)
        except TimeoutError:
            late = sorted(d for d in expected if self.fleet.agents[d].outbox_depth() > 0)
            raise RunError(
                f"at simulated {self.clock.now().isoformat()}: the messages of {len(expected)} device(s) "
                f"did not reach the server within {_BARRIER_TIMEOUT:g} s (still queued on: "
                f"{', '.join(late[:5]) or 'none; the server did not store them'}); a device that "
                "reconnected during a stepped run, or a stopped ingest, makes the run unreproducible"
            ) from None
        for device_id, seq in expected.items():
            self._seen[device_id] = seq + 1
        return notable

    async def sweep(self, *, force: bool = False, notable: bool = False) -> bool:
        """The server's sweeps at this instant, when they can have anything to do. Ingest already
        derives the incidents of what arrives (and their evidence); the incident sweep is for
        what falls due without a message — debounce and grace windows (:meth:`next_window`),
        commands finishing (``force``: a person waits for the evidence) — and runs hourly
        anyway, as do the session and command sweeps (their time limits are hours long).
        ``notable``: state-bearing messages arrived, so a window may have opened. True if the
        incident sweep advanced a device."""
        now = self.clock.now()
        at = now.timestamp()
        grid = int(at // _HOUSEKEEPING_S)
        hourly = grid != self._grid
        if notable and not force:
            await self._read_windows()
        advanced: object = 0
        if hourly:
            self._grid = grid
            # incidents (with their KPI rollups), then remote sessions, then commands
            advanced = (await self.runtime.sweep_all(now)).get("server.incidents.sweeper", 0)
            await self._read_windows()
        elif force or (self._tracker_due is not None and self._tracker_due <= at):
            advanced = await self.tracker.sweep(self.runtime.sessions, now)
            await self._read_windows()
        return bool(advanced)

    async def _read_windows(self) -> None:
        """The earliest debounce/grace window of any device (now, if one is marked for a rebuild)."""
        async with self.runtime.sessions() as session:
            due, dirty = (
                await session.execute(select(func.min(StateTracker.due_s), func.max(StateTracker.dirty)))
            ).one()
        self._tracker_due = self.clock.now().timestamp() if dirty else due

    def next_window(self) -> datetime | None:
        """When the next debounce/grace window ends, if after now: an instant of its own, so an
        incident opens exactly when its fault has lasted the debounce."""
        if self._tracker_due is None or self._tracker_due <= self.clock.now().timestamp():
            return None
        return datetime.fromtimestamp(self._tracker_due, UTC)

    async def settle(self) -> None:
        """For a behaviour mid-step: the devices' messages so far are stored and the incidents
        swept (the evidence of a command decides a channel in the sweep)."""
        await self.barrier()
        await self.sweep(force=True)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._spawned.append((coro, name))

    async def _people(self, tg: asyncio.TaskGroup, dirty: bool) -> None:
        """Hand the open incidents to the behaviours (when something may have changed: new
        messages, a sweep, a claim) and wake the people due, one task at a time, until nobody is
        left to act at this instant."""
        while True:
            if dirty:
                incidents = await self.world.open_incidents()
                self.customers.take(incidents, self._spawn)
                self.service_desk.take(incidents, self._spawn)
                while self._spawned:
                    coro, name = self._spawned.pop(0)
                    task = tg.create_task(coro, name=name)
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    await self.clock.settle([task])
            claims = self.world.claims.version
            if not await self.clock.wake_due(PEOPLE):
                return
            new = await self.barrier()
            swept = await self.sweep(notable=new)
            dirty = new or swept or self.world.claims.version != claims

    async def run(self, end: datetime, report: _Reporter) -> None:
        """From now to ``end``, instant by instant; then the people's pending tasks are cancelled."""
        # Every instant waits on the database thread (aiosqlite) a few times; with the default
        # 5 ms GIL switch interval each wait can cost that much while this thread is busy.
        switch = sys.getswitchinterval()
        sys.setswitchinterval(_SWITCH_INTERVAL)
        try:
            await self._run(end, report)
        finally:
            sys.setswitchinterval(switch)

    async def _run(self, end: datetime, report: _Reporter) -> None:
        await self.barrier()  # what the devices sent while people were set up
        await self.sweep(force=True)
        failure: RunError | None = None  # raised as itself, not inside the task group's ExceptionGroup
        async with asyncio.TaskGroup() as tg:
            try:
                while (due := _earliest(self.clock.next_due(), self.next_window())) is not None and due < end:
                    self.clock.advance_to(due)
                    self.instants += 1
                    # equipment steps run without waiting on anything: woken all at once, in order
                    await self.clock.wake_due(EQUIPMENT, one_at_a_time=False)
                    new = await self.barrier()
                    swept = await self.sweep(notable=new)
                    await self._people(tg, dirty=new or swept)
                    await report()
                self.clock.advance_to(end)
                await self.barrier()
                await self.sweep(force=True)
            except StepTimeout as exc:
                failure = RunError(f"stepped run stuck: {exc}")
                failure.__cause__ = exc
            except RunError as exc:
                failure = exc
            finally:
                for task in list(self._tasks):
                    task.cancel()
        if failure is not None:
            raise failure


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

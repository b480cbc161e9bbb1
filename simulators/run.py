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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from server import clock as server_clock
from server.app import create_app
from server.embedded_broker import EmbeddedBroker
from server.local_stack import admin_token as issue_admin_token
from server.local_stack import ensure_pki, serve_api
from simulators.behaviours import Person, World
from simulators.behaviours.customer import Customers
from simulators.behaviours.technician import ServiceDesk
from simulators.clock import AnchoredClock, SteppedClock
from simulators.fleet import SimulatedFleet
from simulators.run_progress import Progress, Reporter, RunError
from simulators.run_setup import (
    CONNECT_TIMEOUT,
    build_members,
    fresh_workdir,
    server_settings_for,
    setup_people,
)
from simulators.scenario import Scenario
from simulators.stepper import Stepper

__all__ = ["Progress", "RunError", "RunResult", "build_members", "run_scenario"]

logger = logging.getLogger(__name__)


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
                f"  self-resolution {pct('self_resolution_rate')}   MTRS per episode "
                f"{hours('mtrs_episode_mean_s')} (per incident {hours('mtrs_mean_s')})   "
                f"MTTA {hours('mtta_mean_s')}",
                f"  dispatches      {k.get('resolved_field')}   cost {self.dispatch_cost:,.2f}",
            ]
        )


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
    server settings (e.g. ``{"incidents": {"reopen_window_hours": 0}}``: every recurrence its
    own incident)."""
    workdir = await asyncio.to_thread(fresh_workdir, workdir)
    pki = await asyncio.to_thread(ensure_pki, workdir / "pki")
    epoch = scenario.start_at()
    stepped = scenario.clock == "stepped"
    # anchored: real speed while setting up, accelerated from the run's start; stepped: frozen
    # until the runner moves it, so setting up costs no simulated time
    clock: AnchoredClock | SteppedClock = SteppedClock(epoch) if stepped else AnchoredClock(1.0, epoch)
    members = build_members(scenario, clock)
    async with EmbeddedBroker(pki, workdir / "broker", prefer=broker, port=0) as mqtt:  # type: ignore[arg-type]
        settings = server_settings_for(
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
                        async with asyncio.timeout(CONNECT_TIMEOUT):
                            await fleet.wait_connected()
                        desk, technicians, by_device, guides = await setup_people(
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
                        report = Reporter(
                            world,
                            fleet,
                            start=start,
                            days=scenario.days,
                            on_progress=on_progress,
                            every=progress_every,
                        )
                        if isinstance(clock, SteppedClock):
                            stepper = Stepper(
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


async def _run_anchored(
    clock: AnchoredClock,
    end: datetime,
    *,
    speed: float,
    customers: Customers,
    service_desk: ServiceDesk,
    report: Reporter,
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

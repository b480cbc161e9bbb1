"""What a run is made of: the fleet's members from the scenario, the people (customers, the
service desk) with their accounts, a fresh work directory, and the in-process server's settings
for the run's clock."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import httpx

from agent.plugin import EquipmentPlugin
from certs import PkiDir
from server.base import users
from server.customers.service import SITE_SEPARATOR
from server.db.models import Role
from server.embedded_broker import EmbeddedBroker
from server.settings import ServerSettings, load_settings
from simulators.behaviours import Person, fault_models
from simulators.chiller import ChillerPlugin
from simulators.clock import AnchoredClock, SteppedClock
from simulators.fleet import Member, SimulatedFleet, device_ids
from simulators.imaging import ImagingPlugin
from simulators.printer import PrinterPlugin
from simulators.run_progress import RunError
from simulators.scenario import Scenario

__all__ = [
    "CONNECT_TIMEOUT",
    "KINDS",
    "build_members",
    "fresh_workdir",
    "server_settings_for",
    "setup_people",
]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 60.0  # real seconds for the fleet to connect and people to sign in
KINDS: dict[str, type[Any]] = {"printer": PrinterPlugin, "imaging": ImagingPlugin, "chiller": ChillerPlugin}


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
        cls = KINDS[group.kind]
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


async def setup_people(
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
    deadline = time.monotonic() + CONNECT_TIMEOUT
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


def fresh_workdir(workdir: Path) -> Path:
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


def server_settings_for(
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

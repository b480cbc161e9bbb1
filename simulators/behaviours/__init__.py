"""Behaviours: the people of a simulated service organisation, driving the **real** server API.

- :mod:`.customer` — people at the customer notice a down device, call the desk or follow the
  guide for the fault (a guide run), with some success.
- :mod:`.technician` — the desk picks up incidents by priority, opens a session, tries the remote
  fixes the fault's runbook lists, and dispatches a field engineer when they fail.

They share a :class:`World`: the API clients (one user each, real tokens), the simulated clock,
the devices' equipment plugins (what a person at the machine touches: ``attempt_guided_fix``,
``field_service``) and the claims that keep a customer and a technician from working the same
incident at once. Until the knowledge base exists (issue 6), the runbook is the equipment's
fault model (``plugin.fault_models()``): its remote fixes and guides.

Two ways to run them. With an :class:`~simulators.clock.AnchoredClock` each behaviour's
``run()`` polls the incident list in real time and works incidents in tasks of its own. With a
:class:`~simulators.clock.SteppedClock` (a reproducible run) the runner calls ``take()`` with the
open incidents once per step instead, names every task after its incident (device and fault
time, not the server's ids, which follow the arrival order of messages) and wakes the tasks one
at a time; a task then waits only on the clock (``sleep_sim``) or on work that completes in real
time (API calls, commands, :meth:`World.settled`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from agent.plugin import EquipmentPlugin
from protocol import EquipmentState, Severity
from simulators.clock import PEOPLE, AnchoredClock, SteppedClock
from simulators.faults import FaultModel, GuidedFix, RemoteFix
from simulators.printer import PAPER_JAM, PrinterPlugin

__all__ = [
    "ApiError",
    "Claim",
    "Claims",
    "Person",
    "World",
    "claim_key",
    "episode_detected",
    "fault_models",
    "guided_fix",
    "incident_order",
    "incident_tag",
    "printer_jam_model",
]

logger = logging.getLogger(__name__)
V1 = "/api/v1"


Spawn = Callable[[Coroutine[Any, Any, None], str], object]
"""Start a person's work on one incident as a named task."""


class ApiError(Exception):
    """The server refused a behaviour's request; the message has the status and the answer."""


@dataclass(slots=True)
class Person:
    """One user of the real API (a bearer token)."""

    name: str
    client: httpx.AsyncClient
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, /, **params: Any
    ) -> Any:
        response = await self.client.request(
            method,
            f"{V1}{path}",
            json=None if body is None else dict(body),
            params=params,
            headers=self.headers,
        )
        if response.status_code >= 400:
            raise ApiError(f"{method} {path} as {self.name}: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None


def printer_jam_model(plugin: PrinterPlugin) -> FaultModel:
    """The printer predates the fault catalogue: its paper jam as a :class:`FaultModel`."""
    clear_minutes = plugin.options.jam_self_clear_minutes
    return FaultModel(
        code=PAPER_JAM.code,
        meaning=PAPER_JAM.detail,
        severity=Severity.ERROR,
        effect=EquipmentState.DOWN,
        mtbf=1.0 / plugin.options.jam_rate_per_hour if plugin.options.jam_rate_per_hour > 0 else 1e9,
        self_clear_probability=1.0 if clear_minutes else 0.0,
        self_clear_minutes=clear_minutes,
        field_repair_minutes=30.0,  # an engineer on site clears it and checks the paper path
        remote_fixes=(RemoteFix("printer.clear_jam", 0.9),),
        guided_fixes=(
            GuidedFix(
                "Clear the paper jam",
                ("Open the front door", "Remove the jammed sheet", "Close the door and wait for ready"),
                0.8,
            ),
        ),
    )


def fault_models(plugin: EquipmentPlugin) -> dict[str, FaultModel]:
    """The runbook for a device: its plugin's fault models (the printer's jam as above, and its
    field-only faults — a worn fuser, a broken feed roller — when its options enable them)."""
    if isinstance(plugin, PrinterPlugin):
        return {PAPER_JAM.code: printer_jam_model(plugin), **plugin.field_faults()}
    models: Callable[[], dict[str, FaultModel]] | None = getattr(plugin, "fault_models", None)
    return models() if models is not None else {}


def guided_fix(plugin: EquipmentPlugin, code: str, guide: int, rng: random.Random) -> bool:
    """The customer follows guide ``guide`` of ``code`` at the machine; True if it cleared."""
    if isinstance(plugin, PrinterPlugin):
        model = printer_jam_model(plugin)
        return rng.random() < model.guided_fixes[guide].probability and plugin.clear_fault(code)
    return bool(plugin.attempt_guided_fix(code, guide))  # type: ignore[attr-defined]


@dataclass(slots=True)
class Claim:
    """Who works an incident: ``customer`` (noticing / following a guide), ``technician``, or
    ``desk`` (handed to the desk: the customer called or the guide did not help)."""

    by: str
    since: float


def claim_key(incident: Mapping[str, Any]) -> tuple[int, int]:
    """Claims are per episode: a reopened incident is a new piece of work."""
    return (int(incident["id"]), int(incident["reopened"]))


def incident_tag(incident: Mapping[str, Any]) -> str:
    """A name for an incident episode that is the same in every run of a scenario and seed:
    its device, fault time and reopen count (ids follow the arrival order of messages)."""
    return f"{incident['device_id']}@{incident['t_fault'] or incident['t_detect']}#{incident['reopened']}"


def episode_detected(incident: Mapping[str, Any]) -> float:
    """When the episode being worked was detected (epoch seconds): a reopened incident's latest
    one — its ``t_detect`` is the first episode's, which would let the desk skip the pickup wait."""
    episodes = incident.get("episodes") or []
    detect = episodes[-1].get("detect_s") if episodes else None
    return float(detect) if detect is not None else datetime.fromisoformat(incident["t_detect"]).timestamp()


def incident_order(incident: Mapping[str, Any]) -> tuple[str, str]:
    """Sort key of incidents found at the same time: by device and fault time, not by id."""
    return (str(incident["device_id"]), str(incident["t_fault"] or incident["t_detect"]))


class Claims(dict[tuple[int, int], Claim]):
    """The claims, counting changes (``version``): a stepped run looks at the incident list
    again only when something may have changed."""

    version = 0

    def __setitem__(self, key: tuple[int, int], value: Claim) -> None:
        self.version += 1
        super().__setitem__(key, value)


@dataclass(slots=True)
class World:
    clock: AnchoredClock | SteppedClock
    remote_maintenance: bool
    desk: Person  # an ops user who watches the incident list for everyone
    technicians: list[Person]
    customers: dict[str, Person]  # device id → a user of the device's customer
    machines: Mapping[str, EquipmentPlugin]
    approve_consent: Callable[[str, str, float], None]  # (device, session id, seconds): the local operator
    guides: dict[tuple[str, str], int]  # (fault code, guide title) → guide id on the server
    seed: int
    poll: float = 0.1  # real seconds between looks at the incident list (anchored clock)
    # stepped clock: until the devices' messages so far are on the server and it has swept
    settle: Callable[[], Awaitable[None]] | None = None
    claims: Claims = field(default_factory=Claims)
    actions: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def rng(self, *parts: object) -> random.Random:
        """A generator of its own for one decision, so outcomes do not depend on task order."""
        return random.Random(":".join(str(p) for p in (self.seed, *parts)))  # noqa: S311 - a simulation

    def model_for(self, device_id: str, code: str | None) -> FaultModel | None:
        machine = self.machines.get(device_id)
        if machine is None or code is None:
            return None
        return fault_models(machine).get(code)

    def still_faulty(self, device_id: str) -> bool:
        """Whether the machine still shows a fault (a person at it, or its status screen, sees
        that): then there is no clear to wait for."""
        state = getattr(self.machines.get(device_id), "state", EquipmentState.RUNNING)
        return state in (EquipmentState.DOWN, EquipmentState.DEGRADED)

    async def wait_restored(self, incident_id: int, device_id: str, limit: float = 5.0) -> None:
        """Until the server has the incident's clear (real seconds, at most ``limit``), unless
        the machine still shows a fault."""
        if self.settle is not None:  # stepped: everything the device sent is on the server after it
            if not self.still_faulty(device_id):
                await self.settle()
            return
        deadline = asyncio.get_running_loop().time() + limit
        while asyncio.get_running_loop().time() < deadline and not self.still_faulty(device_id):
            current = await self.incident(incident_id)
            if current["t_restored"] is not None or current["status"] in ("resolved", "closed"):
                return
            await asyncio.sleep(0.05)

    @property
    def stepped(self) -> bool:
        return isinstance(self.clock, SteppedClock)

    async def sleep_sim(self, seconds: float) -> None:
        if isinstance(self.clock, SteppedClock):
            await self.clock.sleep(seconds, phase=PEOPLE)
        else:
            await self.clock.sleep(seconds)

    async def settled(self, real_seconds: float) -> None:
        """Let the server catch up with what the devices just sent: in a stepped run, until it
        has (``settle``); otherwise ``real_seconds`` of real time."""
        if self.settle is not None:
            await self.settle()
        else:
            await asyncio.sleep(real_seconds)

    async def watch(self, who: str, take: Callable[[list[dict[str, Any]], Spawn], int]) -> None:
        """Anchored clock: hand the open incidents to ``take`` every ``poll`` real seconds until
        cancelled; what it takes is worked in tasks of this task group."""
        async with asyncio.TaskGroup() as tg:
            while True:
                try:
                    incidents = await self.open_incidents()
                except ApiError as exc:
                    self.failed(f"{who}: list incidents", exc)
                    incidents = []
                take(incidents, lambda coro, name: tg.create_task(coro, name=name))
                await asyncio.sleep(self.poll)

    async def open_incidents(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = await self.desk.call(
                "GET", "/incidents", open_only="true", kind="fault", limit=500, offset=offset
            )
            items.extend(page["items"])
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return items

    async def incident(self, incident_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.desk.call("GET", f"/incidents/{incident_id}")
        return result

    def failed(self, what: str, exc: BaseException) -> None:
        logger.warning("%s: %s", what, exc)
        self.errors.append(f"{what}: {exc}")

    async def refused(self, who: str, incident_id: int, exc: ApiError) -> None:
        """A refused request: fine when the incident was resolved meanwhile (the fault cleared
        between looking and acting — a race any person has too), else an error of the run."""
        try:
            current = await self.incident(incident_id)
        except ApiError:
            current = {}
        if current.get("status") in ("resolved", "closed"):
            self.actions[f"{who}.raced"] += 1
        else:
            self.failed(f"{who}: incident {incident_id}", exc)

    async def wait_real(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

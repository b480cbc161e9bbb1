"""The service desk: technicians and field engineers, through the real API.

Each incident the desk may take (a degraded one at once; a down one once the customer has called
or given up on the guide) waits ``pickup_minutes[priority]`` of simulated time from the
detection of its current episode (a reopened incident's latest), then a free technician
(``count`` of them) takes it, most urgent first:

- remote maintenance on and the runbook (the fault model) lists remote fixes: open a session on
  the incident (an attended site's local operator approves it), run up to
  ``max_remote_attempts`` fixes (``remote_minutes`` of the technician's time each), close the
  session with the outcome. Fixed: the server resolves the incident ``remote`` from the
  evidence (a person's successful command);
- otherwise — or with remote maintenance off, the baseline — dispatch a field engineer, who
  arrives after ``travel_minutes``, repairs in ``repair_minutes`` (default: the fault model's
  ``field_repair_minutes``; the machine's ``field_service``), and the incident is resolved
  ``field`` with the arrival as ``onsite_at``. A fault that cleared by itself while the engineer
  travelled is resolved ``auto`` (the engineer turned back; the dispatch still shows in ``visits`` 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any

from simulators.behaviours import (
    ApiError,
    Claim,
    Person,
    Spawn,
    World,
    episode_detected,
    fault_models,
    incident_order,
    incident_tag,
)
from simulators.behaviours import claim_key as _key
from simulators.faults import FaultModel
from simulators.scenario import TechnicianBehaviour

__all__ = ["ServiceDesk"]

logger = logging.getLogger(__name__)

_RESOLVED = ("resolved", "closed")


class ServiceDesk:
    def __init__(self, world: World, params: TechnicianBehaviour) -> None:
        self.world = world
        self.params = params
        self._free: asyncio.Queue[Person] = asyncio.Queue()
        for person in world.technicians[: params.count]:
            self._free.put_nowait(person)
        self._engineers = 0
        self._retaken: Counter[tuple[int, int]] = Counter()

    async def run(self) -> None:
        """Anchored clock: watch the incident list until cancelled; each taken incident is worked
        in its own task."""
        await self.world.watch("desk", self.take)

    def take(self, incidents: list[dict[str, Any]], spawn: Spawn) -> int:
        """Take the incidents the desk may work, most urgent first, each in a task."""
        world = self.world
        taken = 0
        takeable = [i for i in incidents if self._takeable(i)]
        for incident in sorted(takeable, key=lambda i: (i["priority"], i["t_detect"], *incident_order(i))):
            world.claims[_key(incident)] = Claim("technician", time.time())
            name = f"desk.{incident_tag(incident)}.{self._retaken[_key(incident)]}"
            spawn(self._work(incident), name)
            taken += 1
        return taken

    async def _acquire(self) -> Person:
        """A free technician. With a stepped clock nobody may wait on anything but the clock:
        look again a simulated minute later."""
        if not self.world.stepped:
            return await self._free.get()
        while True:
            try:
                return self._free.get_nowait()
            except asyncio.QueueEmpty:
                self.world.actions["desk.all_busy"] += 1
                await self.world.sleep_sim(60.0)

    def _takeable(self, incident: dict[str, Any]) -> bool:
        claim = self.world.claims.get(_key(incident))
        if claim is not None:
            return claim.by == "desk"
        if incident["t_restored"] is not None:
            return False  # cleared by itself; the server resolves it (auto)
        # A down device is the customer's to notice first; a degraded one only the desk sees.
        return bool(incident["effect"] != "down")

    async def _work(self, incident: dict[str, Any]) -> None:
        world = self.world
        incident_id = incident["id"]
        key = _key(incident)
        try:
            due = episode_detected(incident) + 60.0 * self.params.pickup_for(incident["priority"])
            await world.sleep_sim(due - world.clock.now().timestamp())
            person = await self._acquire()
            try:
                current = await world.incident(incident_id)
                if current["status"] in _RESOLVED or current["t_restored"] is not None:
                    world.actions["desk.cleared_before_pickup"] += 1
                    return
                model = world.model_for(current["device_id"], current["fault_code"])
                fixed = False
                if (
                    world.remote_maintenance
                    and not self._retaken[key]  # remote already tried on this episode: send someone
                    and model is not None
                    and self._runbook(current["device_id"], current)
                ):
                    fixed = await self._remote(person, current, model)
            finally:
                self._free.put_nowait(person)
            if not fixed:
                await self._dispatch(person, current, model)
        except ApiError as exc:
            await world.refused("desk", incident_id, exc)
        finally:
            await self._retake_if_still_down(incident_id, key)

    async def _retake_if_still_down(self, incident_id: int, key: tuple[int, int]) -> None:
        """Back to the desk's list when the work is done but the device is not back — e.g. a
        remote fix worked but another fault joined the incident meanwhile (a field-only one)."""
        with contextlib.suppress(ApiError):
            current = await self.world.incident(incident_id)
            if (
                current["status"] not in _RESOLVED
                and current["t_restored"] is None
                and self._retaken[key] < 2
            ):
                self._retaken[key] += 1
                self.world.actions["desk.retaken"] += 1
                self.world.claims[key] = Claim("desk", time.time())

    # -- remote --------------------------------------------------------------------------------

    async def _remote(self, person: Person, incident: dict[str, Any], model: FaultModel) -> bool:
        world, params = self.world, self.params
        device_id = incident["device_id"]
        session = await person.call(
            "POST",
            "/sessions",
            {
                "device_id": device_id,
                "incident_id": incident["id"],
                "reason": f"{model.code}: {model.meaning}"[:2000],
                "time_limit_s": 60.0 * params.session_minutes,
            },
        )
        session_id = session["id"]
        world.actions["remote.session"] += 1
        fixed = False
        try:
            if not await self._active(person, session_id, device_id):
                return False
            codes = set(incident["codes"]) | {model.code}
            for action in self._runbook(device_id, incident)[: params.max_remote_attempts]:
                await world.sleep_sim(60.0 * params.remote_minutes)  # looking, deciding, running it
                command = await person.call(
                    "POST",
                    f"/sessions/{session_id}/commands",
                    {"action": action, "timeout_s": 60.0 * params.command_ttl_minutes, "wait_s": 30.0},
                )
                world.actions["remote.command"] += 1
                logger.debug("%s on %s: %s %s", action, device_id, command.get("state"), command.get("data"))
                if command.get("ok") and not codes & set(_still_active(command)):
                    fixed = True
                    break
        finally:
            with contextlib.suppress(ApiError):
                outcome = "fixed remotely" if fixed else "remote fixes did not help; dispatching"
                await person.call(
                    "POST", f"/sessions/{session_id}/close", {"outcome": outcome, "fixed": fixed}
                )
        if fixed:
            world.actions["remote.fixed"] += 1
            await self._settle_remote(person, incident)
        return fixed

    def _runbook(self, device_id: str, incident: dict[str, Any]) -> list[str]:
        """The remote fixes for the incident's faults, most likely first (the fault models stand
        in for the knowledge base until it exists)."""
        fixes: dict[str, float] = {}
        for code in incident["codes"] or [incident["fault_code"]]:
            model = self.world.model_for(device_id, code)
            for fix in model.remote_fixes if model else ():
                fixes[fix.action] = max(fixes.get(fix.action, 0.0), fix.probability)
        return sorted(fixes, key=lambda action: -fixes[action])

    async def _active(self, person: Person, session_id: str, device_id: str) -> bool:
        """Until the session is active (an attended site's operator approves it at the machine)."""
        deadline = time.monotonic() + 30.0
        approved = False
        while time.monotonic() < deadline:
            state = (await person.call("GET", f"/sessions/{session_id}"))["state"]
            if state == "active":
                return True
            if state in ("closed", "expired", "denied"):
                logger.debug("session %s on %s ended %s before any command", session_id, device_id, state)
                return False
            if state == "awaiting_consent" and not approved:
                try:
                    self.world.approve_consent(device_id, session_id, 60.0 * self.params.session_minutes)
                    approved = True
                except (LookupError, ValueError) as exc:  # the request has not reached the device yet
                    logger.debug("consent for %s not approvable yet: %r", session_id, exc)
            await asyncio.sleep(0.05)
        logger.debug("session %s on %s never became active (%s)", session_id, device_id, state)
        return False

    async def _settle_remote(self, person: Person, incident: dict[str, Any]) -> None:
        """The server resolves ``remote`` itself once the clear arrives; if the clear came before the
        command's result, a person confirms it (the channel then also comes from the evidence)."""
        world, incident_id = self.world, incident["id"]
        await world.wait_restored(incident_id, incident["device_id"])
        await world.settled(0.3)  # the evidence decision follows the command's result
        current = await world.incident(incident_id)
        if current["status"] not in _RESOLVED and current["t_restored"] is not None:
            await person.call(
                "POST",
                f"/incidents/{incident_id}/resolve",
                {"cause": current["fault_code"] or "fault", "resolution": "fixed remotely"},
            )

    # -- field ---------------------------------------------------------------------------------

    async def _dispatch(self, person: Person, incident: dict[str, Any], model: FaultModel | None) -> None:
        world, params = self.world, self.params
        incident_id = incident["id"]
        self._engineers += 1
        engineer = f"field-engineer-{self._engineers}"
        await person.call("POST", f"/incidents/{incident_id}/dispatch", {"engineer": engineer})
        world.actions["field.dispatch"] += 1
        await world.sleep_sim(60.0 * params.travel_minutes)
        current = await world.incident(incident_id)
        if current["status"] in _RESOLVED:
            return
        if current["t_restored"] is not None:
            await person.call(
                "POST",
                f"/incidents/{incident_id}/resolve",
                {
                    "channel": "auto",
                    "cause": "cleared by itself",
                    "resolution": "engineer turned back",
                    "visits": 0,
                },
            )
            world.actions["field.turned_back"] += 1
            return
        onsite = world.clock.now()
        repair = (
            params.repair_minutes
            if params.repair_minutes is not None
            else (model.field_repair_minutes if model else 120.0)
        )
        await world.sleep_sim(60.0 * repair)
        machine = world.machines[incident["device_id"]]
        service = getattr(machine, "field_service", None)
        if service is not None:
            service()
        else:  # the printer: clear every active fault at the machine (a worn part is replaced)
            for code in fault_models(machine):
                machine.clear_fault(code, cleared_by="field")  # type: ignore[attr-defined]
        world.actions["field.repair"] += 1
        await world.wait_restored(incident_id, incident["device_id"])
        current = await world.incident(incident_id)
        if current["status"] not in _RESOLVED:
            await person.call(
                "POST",
                f"/incidents/{incident_id}/resolve",
                {
                    "channel": "field",
                    "cause": current["fault_code"] or "fault",
                    "resolution": f"repaired on site by {engineer}",
                    "onsite_at": onsite.isoformat(),
                },
            )


def _still_active(command: dict[str, Any]) -> list[str]:
    data = command.get("data") or {}
    still = data.get("still_active", [])
    return list(still) if isinstance(still, list) else []

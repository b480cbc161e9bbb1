"""People at the customer, through the real API (a customer user per customer).

A *down* device is noticed after an exponentially distributed delay (mean
``notice_minutes`` of simulated time). Then, with remote maintenance on and a guide for the fault
on the server, the person follows it with probability ``1 - call_probability``: a guide run (each
step recorded), the steps done right with ``success_probability``, the guide itself working with
the fault model's probability (``attempt_guided_fix``). Fixed: the server resolves the incident
``customer`` once the clear arrives. Not fixed — or they call, or there is no guide, or remote
maintenance is off (the baseline) — the incident goes to the service desk.
"""

from __future__ import annotations

import time
from typing import Any

from simulators.behaviours import ApiError, Claim, Spawn, World, guided_fix, incident_order, incident_tag
from simulators.behaviours import claim_key as _key
from simulators.scenario import CustomerBehaviour

__all__ = ["Customers", "Spawn"]

# (coroutine, task name): start it now (anchored) or hand it to the stepped runner, which starts
# the tasks one at a time so that none of them races another


class Customers:
    def __init__(self, world: World, params: CustomerBehaviour) -> None:
        self.world = world
        self.params = params

    async def run(self) -> None:
        """Anchored clock: look at the incident list every ``world.poll`` real seconds until cancelled."""
        await self.world.watch("customers", self.take)

    def take(self, incidents: list[dict[str, Any]], spawn: Spawn) -> int:
        """Claim the new down incidents (in a fixed order) and start noticing each in a task."""
        world = self.world
        taken = 0
        for incident in sorted(incidents, key=incident_order):
            if _key(incident) in world.claims or incident["effect"] != "down":
                continue
            world.claims[_key(incident)] = Claim("customer", time.time())
            spawn(self._notice(incident), f"customer.{incident_tag(incident)}")
            taken += 1
        return taken

    async def _notice(self, incident: dict[str, Any]) -> None:
        world, params = self.world, self.params
        incident_id = incident["id"]
        rng = world.rng("customer", incident["device_id"], incident["t_fault"])
        handed = True
        try:
            await world.sleep_sim(
                rng.expovariate(1.0 / (60.0 * params.notice_minutes)) if params.notice_minutes else 0.0
            )
            current = await world.incident(incident_id)
            if current["status"] in ("resolved", "closed") or current["t_restored"] is not None:
                handed = False  # it came back before anyone noticed
                return
            if not world.remote_maintenance or rng.random() < params.call_probability:
                world.actions["customer.call"] += 1
                return
            fixed = await self._follow_guide(current, rng.random() < params.success_probability)
            # another fault (one without a guide, say) may keep the machine down: then they call
            handed = not fixed or world.still_faulty(current["device_id"])
        except ApiError as exc:
            await world.refused("customer", incident_id, exc)
        finally:
            if handed:
                world.claims[_key(incident)] = Claim("desk", time.time())

    async def _follow_guide(self, incident: dict[str, Any], done_right: bool) -> bool:
        """True when a guide fixed it. The person follows the guide for what the machine shows:
        the incident's most recent fault that has a guide, then the others."""
        world = self.world
        device_id = incident["device_id"]
        tried = False
        for code in reversed(incident["codes"] or [incident["fault_code"]]):
            model = world.model_for(device_id, code)
            guide_id = (
                world.guides.get((code, model.guided_fixes[0].title))
                if model and model.guided_fixes
                else None
            )
            if model is None or guide_id is None:
                continue
            tried = True
            if await self._guide_run(incident, code, guide_id, done_right):
                return True
        if not tried:
            world.actions["customer.no_guide"] += 1
        return False

    async def _guide_run(self, incident: dict[str, Any], code: str, guide_id: int, done_right: bool) -> bool:
        world = self.world
        device_id = incident["device_id"]
        person = world.customers[device_id]
        model = world.model_for(device_id, code)
        assert model is not None
        index, fix = 0, model.guided_fixes[0]
        run = await person.call("POST", f"/incidents/{incident['id']}/guide-runs", {"guide_id": guide_id})
        world.actions["customer.guide_run"] += 1
        fixed = False
        try:
            for step, _text in enumerate(fix.steps):
                result = "done" if done_right else "failed"
                await person.call("POST", f"/guide-runs/{run['id']}/steps", {"step": step, "result": result})
                if not done_right:
                    break
            rng = world.rng("guide", device_id, code, incident["t_fault"])
            fixed = done_right and guided_fix(world.machines[device_id], code, index, rng)
            if fixed:
                await world.wait_restored(incident["id"], device_id)
            await person.call("POST", f"/guide-runs/{run['id']}/finish", {"fixed": fixed})
        except ApiError:
            # the server finished the run itself when the clear arrived (the guide's fix, or the
            # fault clearing by itself meanwhile): nothing left to do
            current = await world.incident(incident["id"])
            if current["status"] in ("resolved", "closed") or current["t_restored"] is not None:
                world.actions["customer.fixed" if fixed else "customer.cleared_meanwhile"] += 1
                return True
            raise
        world.actions["customer.fixed" if fixed else "customer.guide_failed"] += 1
        return fixed

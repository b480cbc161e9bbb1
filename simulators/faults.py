"""Fault models for simulated equipment: what a fault is, and when random ones happen.

Faults arrive as a Poisson process: with a rate of ``r`` per hour, the chance of at least one
in a step of ``dt`` seconds is ``1 - exp(-r * dt / 3600)``, whatever the step size, so a
simulation gives the same statistics on a fast clock with coarse steps as in real time.
Every draw comes from the equipment's own seeded :class:`random.Random`: same seed, same life.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from agent import plugin
from protocol import EquipmentState, Severity

__all__ = ["FaultSpec", "occurs", "poisson"]


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One kind of fault: its code, how bad it is and what it does to the equipment."""

    code: str
    severity: Severity
    effect: EquipmentState
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def event_data(self, **extra: Any) -> dict[str, Any]:
        return {"effect": self.effect.value, **self.data, **extra}

    def catalogue_entry(self) -> plugin.FaultSpec:
        """This fault as the agent's fault catalogue describes it (``fault_catalogue()``): the
        effect ``down`` or ``degraded`` when it takes the equipment there, else ``none``."""
        effects = {EquipmentState.DOWN: "down", EquipmentState.DEGRADED: "degraded"}
        return plugin.FaultSpec(
            code=self.code,
            meaning=self.detail,
            severity=self.severity,
            effect=effects.get(self.effect, "none"),
        )


def occurs(rng: random.Random, rate_per_hour: float, seconds: float) -> bool:
    """Whether an event of a Poisson process with ``rate_per_hour`` happens within ``seconds``."""
    if rate_per_hour <= 0 or seconds <= 0:
        return False
    return rng.random() < -math.expm1(-rate_per_hour * seconds / 3600.0)


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson-distributed count with the given mean (Knuth below 30, normal above)."""
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1

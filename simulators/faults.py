"""Fault models for simulated equipment: what a fault is, and when random ones happen.

Faults arrive as a Poisson process: with a rate of ``r`` per hour, the chance of at least one
in a step of ``dt`` seconds is ``1 - exp(-r * dt / 3600)``, whatever the step size, so a
simulation gives the same statistics on a fast clock with coarse steps as in real time.
Every draw comes from the equipment's own seeded :class:`random.Random`: same seed, same life.

:class:`FaultModel` is the rich, data-only description of one fault code (rate, effect, how it
clears, which remote actions and customer steps fix it with what chance, whether it needs a field
engineer, what wear drives it); :mod:`simulators.catalogue` brings a list of them to life.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from agent import plugin
from protocol import EquipmentState, Severity

__all__ = [
    "HOUR",
    "FaultModel",
    "FaultSpec",
    "GuidedFix",
    "RemoteFix",
    "WearOut",
    "occurs",
    "occurs_units",
    "poisson",
]


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


# -- the rich, data-only fault model (issue 5) ---------------------------------------------------

HOUR = "hour"  # the usage unit of faults that strike per operating hour


def _probability(owner: str, name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{owner}: {name} must be a probability within 0..1, got {value!r}")


def _positive(owner: str, name: str, value: float | None) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{owner}: {name} must be a number > 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class RemoteFix:
    """A remote action (as a technician sends it) that clears the fault with ``probability``."""

    action: str
    probability: float

    def __post_init__(self) -> None:
        _probability(f"remote fix {self.action}", "probability", self.probability)


@dataclass(frozen=True, slots=True)
class GuidedFix:
    """Steps a customer follows at the machine (a guide's text); they fix the fault with
    ``probability``. The steps are worded so they can be authored as a guide verbatim."""

    title: str
    steps: tuple[str, ...]
    probability: float

    def __post_init__(self) -> None:
        _probability(f"guide {self.title!r}", "probability", self.probability)
        if not self.steps:
            raise ValueError(f"guide {self.title!r} needs at least one step")


@dataclass(frozen=True, slots=True)
class WearOut:
    """A wear-out failure: ``counter`` (usage since the ``part`` was last replaced or serviced,
    in ``unit``) drives it. Each part's life is drawn from a Weibull distribution with scale
    ``threshold`` and ``shape`` (> 1: the hazard rises with wear), so most fail near the
    threshold but not all at once. ``precursor`` names the metric that rises before the failure
    (what a forecast can find)."""

    part: str
    counter: str
    unit: str
    threshold: float
    shape: float = 3.0
    precursor: str = ""

    def __post_init__(self) -> None:
        _positive(f"wear of {self.part}", "threshold", self.threshold)
        _positive(f"wear of {self.part}", "shape", self.shape)

    @property
    def mean_life(self) -> float:
        """The mean of the drawn lives, in ``unit``."""
        return self.threshold * math.gamma(1.0 + 1.0 / self.shape)

    def draw_life(self, rng: random.Random) -> float:
        return rng.weibullvariate(self.threshold, self.shape)


@dataclass(frozen=True, slots=True)
class FaultModel:
    """Everything the simulation (and the behaviours of issue 5) knows about one fault code.

    How it starts — exactly one of:
      * ``mtbf`` — random, a Poisson process: mean ``per`` units between faults (``per`` is
        ``"hour"`` of operation, or a usage unit the equipment counts, e.g. ``"exposure"``);
      * ``wear`` — wear-out, when the part's usage reaches its drawn life;
      * neither — a condition the equipment detects (e.g. a temperature limit); ``condition``
        says which.

    How it ends: by itself with ``self_clear_probability`` after a mean ``self_clear_minutes``
    (for a condition fault: when the condition goes away); by one of ``remote_fixes``; by one of
    ``guided_fixes`` done by the customer; or, when ``field_only`` (hardware), only by a field
    engineer on site, taking a mean ``field_repair_minutes`` there. ``diagnostics`` are actions
    that show the cause without fixing it; ``external`` marks faults whose cause usually lies
    outside the equipment (the customer's network, say).
    """

    code: str
    meaning: str
    severity: Severity
    effect: EquipmentState
    mtbf: float | None = None
    per: str = HOUR
    wear: WearOut | None = None
    condition: str = ""
    self_clear_probability: float = 0.0
    self_clear_minutes: float | None = None
    remote_fixes: tuple[RemoteFix, ...] = ()
    guided_fixes: tuple[GuidedFix, ...] = ()
    field_only: bool = False
    field_repair_minutes: float = 120.0
    diagnostics: tuple[str, ...] = ()
    external: bool = False

    def __post_init__(self) -> None:
        owner = f"fault {self.code}"
        if self.effect not in (EquipmentState.DOWN, EquipmentState.DEGRADED):
            raise ValueError(f"{owner}: effect must be down or degraded, got {self.effect!r}")
        triggers = [t for t in (self.mtbf is not None, self.wear is not None, bool(self.condition)) if t]
        if len(triggers) != 1:
            raise ValueError(f"{owner}: give exactly one of mtbf, wear or condition")
        _positive(owner, "mtbf", self.mtbf)
        _positive(owner, "self_clear_minutes", self.self_clear_minutes)
        _positive(owner, "field_repair_minutes", self.field_repair_minutes)
        _probability(owner, "self_clear_probability", self.self_clear_probability)
        if self.self_clear_probability > 0 and self.self_clear_minutes is None:
            raise ValueError(f"{owner}: a fault that clears by itself needs self_clear_minutes")
        if self.field_only and (self.remote_fixes or self.guided_fixes):
            raise ValueError(f"{owner}: a field-only fault has no remote or guided fixes")
        actions = [fix.action for fix in self.remote_fixes]
        if len(set(actions)) != len(actions):
            raise ValueError(f"{owner}: a remote fix is listed twice")

    @property
    def trigger(self) -> str:
        """``random``, ``wear`` or ``condition``."""
        return "random" if self.mtbf is not None else "wear" if self.wear is not None else "condition"

    @property
    def spec(self) -> FaultSpec:
        return FaultSpec(code=self.code, severity=self.severity, effect=self.effect, detail=self.meaning)

    def catalogue_entry(self) -> plugin.FaultSpec:
        """As the agent's inventory describes it (``fault_catalogue()``)."""
        return self.spec.catalogue_entry()

    def remote_probability(self, action: str) -> float:
        """The chance ``action`` clears this fault (0 when it is not a fix for it)."""
        return next((fix.probability for fix in self.remote_fixes if fix.action == action), 0.0)

    @property
    def channel(self) -> str:
        """The cheapest way it is usually fixed: ``self``, ``remote``, ``customer`` or ``field``."""
        if self.field_only:
            return "field"
        if self.self_clear_probability >= 0.5:
            return "self"
        if self.remote_fixes:
            return "remote"
        return "customer" if self.guided_fixes else "field"

    def to_json(self) -> dict[str, Any]:
        """Plain data, for docs, scenarios and the behaviours' reports."""
        return {
            "code": self.code,
            "meaning": self.meaning,
            "severity": self.severity.value,
            "effect": self.effect.value,
            "trigger": self.trigger,
            "mtbf": self.mtbf,
            "per": self.per,
            "condition": self.condition or None,
            "wear": None
            if self.wear is None
            else {
                "part": self.wear.part,
                "counter": self.wear.counter,
                "unit": self.wear.unit,
                "threshold": self.wear.threshold,
                "shape": self.wear.shape,
                "mean_life": round(self.wear.mean_life, 3),
                "precursor": self.wear.precursor,
            },
            "self_clear_probability": self.self_clear_probability,
            "self_clear_minutes": self.self_clear_minutes,
            "remote_fixes": [{"action": f.action, "probability": f.probability} for f in self.remote_fixes],
            "guided_fixes": [
                {"title": g.title, "steps": list(g.steps), "probability": g.probability}
                for g in self.guided_fixes
            ],
            "field_only": self.field_only,
            "field_repair_minutes": self.field_repair_minutes,
            "diagnostics": list(self.diagnostics),
            "external": self.external,
            "channel": self.channel,
        }


def occurs_units(rng: random.Random, units: float, mean_between: float) -> bool:
    """Whether a Poisson event with a mean of ``mean_between`` units between events happens
    within ``units`` (of time or usage)."""
    if units <= 0 or mean_between <= 0:
        return False
    return rng.random() < -math.expm1(-units / mean_between)

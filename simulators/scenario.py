"""Scenarios: a whole simulated service organisation in one TOML file.

    scenario = load_scenario("hospital-imaging")          # a shipped one, or a path to a .toml
    scenario = scenario.with_overrides(days=3, speed=20000, seed=7)

A scenario gives the fleet (kind, count, customer, site), the customers and their sites
(criticality, attended, contract hours, cost per dispatch), fault-rate multipliers (global and per
code), the behaviours' parameters (customers and technicians), how long to simulate and how fast,
the seed, whether remote maintenance is used and the clock: ``anchored`` (simulated time tied to
the wall clock at ``speed``) or ``stepped`` (simulated time moves in steps of ``tick_seconds``
only when everything of the step is done: a whole run is reproducible, see
``simulators/run.py``). Every error names the field
(``fleet[0].kind: …``). Shipped scenarios live in ``simulators/scenarios/``.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "KINDS",
    "SCENARIO_DIR",
    "CustomerBehaviour",
    "CustomerSpec",
    "FaultRates",
    "FleetGroup",
    "Scenario",
    "ScenarioError",
    "SiteSpec",
    "TechnicianBehaviour",
    "load_scenario",
    "shipped_scenarios",
]

SCENARIO_DIR = Path(__file__).with_name("scenarios")
KINDS = ("printer", "imaging", "chiller")
Kind = Literal["printer", "imaging", "chiller"]
Name = Annotated[str, Field(min_length=1, max_length=128)]
Minutes = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0, le=1)]


class ScenarioError(Exception):
    """A scenario that cannot be loaded; the message names the file and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContractHoursSpec(_Model):
    days: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        default_factory=lambda: [0, 1, 2, 3, 4], min_length=1
    )
    start: str = "08:00"
    end: str = "18:00"
    tz: str = "UTC"


class SiteSpec(_Model):
    name: Name
    criticality: int | None = Field(default=None, ge=1, le=5)
    attended: bool = False  # every remote session needs the local operator's consent


class CustomerSpec(_Model):
    name: Name
    criticality: int = Field(default=3, ge=1, le=5)
    contract_hours: ContractHoursSpec | None = None  # None: 24x7
    cost_per_dispatch: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    sites: list[SiteSpec] = Field(min_length=1)


class FleetGroup(_Model):
    """``count`` devices of one ``kind`` at one customer's site."""

    kind: Kind
    count: int = Field(ge=1, le=10000)
    customer: Name
    site: Name
    prefix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,40}$")  # default: sim-<kind>
    options: dict[str, Any] = Field(default_factory=dict)  # plugin options (simulators/<kind>.py)


class FaultRates(_Model):
    multiplier: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    codes: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(default_factory=dict)


class CustomerBehaviour(_Model):
    """People at the customer: they notice a *down* device after ``notice_minutes`` (mean,
    exponential), then call the service desk with ``call_probability`` or else follow the
    guide for the fault when one exists; they carry the steps out correctly with
    ``success_probability`` (the guide itself then works with the fault model's probability)."""

    notice_minutes: Minutes = 20.0
    call_probability: Probability = 0.3
    success_probability: Probability = 0.9


class TechnicianBehaviour(_Model):
    """The service desk: ``count`` technicians; each picks up the most urgent open incident
    after ``pickup_minutes[priority]``, tries the fault's remote fixes (at most
    ``max_remote_attempts``, ``remote_minutes`` each) in a session, dispatches a field
    engineer otherwise, who arrives after ``travel_minutes`` and repairs in ``repair_minutes``
    (default: the fault model's)."""

    count: int = Field(default=2, ge=1, le=1000)
    pickup_minutes: dict[Annotated[str, Field(pattern=r"^[1-4]$")], Minutes] = Field(
        default_factory=lambda: {"1": 5.0, "2": 15.0, "3": 45.0, "4": 120.0}
    )
    travel_minutes: Minutes = 180.0
    repair_minutes: Minutes | None = None
    max_remote_attempts: int = Field(default=2, ge=0, le=20)
    # simulated minutes a technician works on one remote fix (holding the technician)
    remote_minutes: Minutes = 10.0
    # simulated minutes: a person's few real seconds of API calls are hours at high speed
    session_minutes: float = Field(default=24 * 60.0, gt=0, le=7 * 24 * 60)
    command_ttl_minutes: float = Field(default=12 * 60.0, gt=0, le=24 * 60)

    def pickup_for(self, priority: int) -> float:
        """Minutes before an incident of ``priority`` is picked up."""
        return self.pickup_minutes.get(str(priority), max(self.pickup_minutes.values(), default=0.0))


class Scenario(_Model):
    name: Name
    description: str = ""
    days: float = Field(default=30.0, gt=0, le=3660)
    speed: float = Field(default=5000.0, gt=0, le=1e6)
    seed: int = 1
    # anchored: simulated time = wall clock x speed; stepped: reproducible, as fast as it computes
    clock: Literal["anchored", "stepped"] = "anchored"
    tick_seconds: float | None = Field(default=None, gt=0, le=3600)  # equipment step (simulated s)
    start: AwareDatetime | None = None  # simulated start; default: midnight UTC of the run's day
    remote_maintenance: bool = True
    telemetry_minutes: float = Field(default=15.0, gt=0, le=24 * 60)  # simulated
    customers: list[CustomerSpec] = Field(min_length=1)
    fleet: list[FleetGroup] = Field(min_length=1)
    faults: FaultRates = Field(default_factory=FaultRates)
    customer_behaviour: CustomerBehaviour = Field(default_factory=CustomerBehaviour)
    technicians: TechnicianBehaviour = Field(default_factory=TechnicianBehaviour)

    @model_validator(mode="after")
    def _references(self) -> Self:
        sites = {c.name: {s.name for s in c.sites} for c in self.customers}
        if len(sites) != len(self.customers):
            raise ValueError("customers: two customers share a name")
        for i, group in enumerate(self.fleet):
            if group.customer not in sites:
                raise ValueError(
                    f"fleet[{i}].customer: {group.customer!r} is not one of the customers "
                    f"({', '.join(sites)})"
                )
            if group.site not in sites[group.customer]:
                raise ValueError(
                    f"fleet[{i}].site: {group.site!r} is not a site of {group.customer!r} "
                    f"({', '.join(sorted(sites[group.customer]))})"
                )
        prefixes = [g.prefix or f"sim-{g.kind}" for g in self.fleet]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError("fleet: two groups share a device prefix; give each a distinct `prefix`")
        return self

    @property
    def tick(self) -> float:
        """The equipment step in simulated seconds: ``tick_seconds``, else 300 s for a stepped
        run, else about 50 steps per real second at ``speed`` (never below 5 s)."""
        if self.tick_seconds is not None:
            return self.tick_seconds
        return 300.0 if self.clock == "stepped" else max(5.0, self.speed / 50.0)

    @property
    def duration_s(self) -> float:
        return self.days * 86400.0

    def start_at(self) -> datetime:
        if self.start is not None:
            return self.start.astimezone(UTC)
        return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

    def with_overrides(self, **changes: Any) -> Scenario:
        """A copy with the given top-level fields changed (``None`` values are ignored), validated."""
        data = self.model_dump()
        data.update({k: v for k, v in changes.items() if v is not None})
        return _validate(data, self.name)

    def customer(self, name: str) -> CustomerSpec:
        return next(c for c in self.customers if c.name == name)


def _validate(data: dict[str, Any], source: str) -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        problem = err["msg"].removeprefix("Value error, ")
        raise ScenarioError(f"{source}: {loc or 'scenario'}: {problem}") from exc


def shipped_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name (``hospital-imaging``) or a TOML file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = SCENARIO_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise ScenarioError(
                f"no scenario {str(name_or_path)!r}: give a .toml path or one of {', '.join(shipped_scenarios())}"
            )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"cannot read {str(path)!r}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{str(path)!r} is not valid TOML: {exc}") from exc
    data.setdefault("name", path.stem)
    return _validate(data, str(path))

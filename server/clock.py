"""The server's notion of "now", swappable for accelerated simulations.

Every timestamp the server writes for a person's or its own action (acknowledge, session
activation, a command's ``issued_at``/``expires_at``, a message's ``received_at``, …) comes from
:func:`now` (through :func:`server.db.types.utcnow`). Normally that is the wall clock. With a
``[simulation]`` settings section it is a *wall-clock-anchored scaled clock*:

    sim_now = epoch + (time.time() - real_anchor) x speed

so the server, the simulated agents and the behaviours — in one process or several — agree on one
simulated time line without talking to each other. Only timestamps move; sweep intervals and
asyncio timeouts stay in real seconds.

A run in the same process can also hand over any :class:`TimeSource` (``configure(clock)``): a
stepped simulation (``simulators/clock.py``, ``SteppedClock``) whose time moves only when the
runner advances it, so the server's timestamps are those of the step being simulated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from server.settings import SimulationSettings

__all__ = ["AnchoredTime", "TimeSource", "configure", "current", "from_settings", "now"]


class TimeSource(Protocol):
    """Anything that tells the simulated time (timezone-aware UTC)."""

    def now(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class AnchoredTime:
    """``epoch`` at real (Unix) time ``real_anchor``, then ``speed`` times faster than real time."""

    epoch: datetime
    real_anchor: float
    speed: float

    def __post_init__(self) -> None:
        if self.epoch.tzinfo is None:
            raise ValueError("simulation epoch must be timezone-aware (UTC)")
        if not self.speed > 0:
            raise ValueError(f"simulation speed must be > 0, got {self.speed!r}")

    def now(self) -> datetime:
        return self.epoch + timedelta(seconds=(time.time() - self.real_anchor) * self.speed)


_current: TimeSource | None = None


def now() -> datetime:
    """The server's current time: the wall clock, or the simulated one when configured."""
    return datetime.now(UTC) if _current is None else _current.now()


def current() -> TimeSource | None:
    return _current


def configure(simulated: TimeSource | None) -> None:
    """Use ``simulated`` time from now on (``None``: the wall clock): an :class:`AnchoredTime`
    or, in the same process, a stepped clock. Process-wide: a server process serves one time line."""
    global _current  # noqa: PLW0603 - one time line per server process, set at start-up
    _current = simulated


def from_settings(simulation: SimulationSettings) -> AnchoredTime | None:
    """The ``[simulation]`` section as an :class:`AnchoredTime` (``None`` when disabled)."""
    if not simulation.enabled or simulation.epoch is None:
        return None
    return AnchoredTime(simulation.epoch, simulation.real_anchor, simulation.speed)

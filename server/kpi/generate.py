"""A synthetic fleet history for KPI tests and the benchmark: deterministic for a seed.

Each device lives a timeline — running, then failures (down), degraded faults, planned
maintenance (sometimes overrunning its announced end), offline spells (unknown, or external
power loss) — with one incident per fault carrying every timestamp of shared/KPIS.md. Some
histories are deliberately awkward: overlapping faults (as incidents; their ``down``
intervals joined into one, as the incidents writer stores them, or — ``overlapping_states``,
for tests — overlapping), device clocks skewed by up to ±2 h (t_fault after t_detect), devices
decommissioned or first seen mid-period, incidents still open and intervals without an end.
Some incidents have several failure episodes (a recurrence that reopened them: the first one
starts at t_fault, the last ends at t_restored), a few none (as before migration 0014's rows).
Timestamps are whole seconds, so epoch mirrors and datetimes agree exactly.

    ds = generate(FleetShape(devices=10_000, days=365, seed=7))
    await insert_dataset(session, ds)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from server.db.models import Channel, DeviceState, IncidentKind
from server.kpi.records import (
    AssignmentRecord,
    CustomerRecord,
    Dataset,
    DeviceRecord,
    IncidentRecord,
    SiteRecord,
    StateRecord,
    TransientRecord,
)

__all__ = ["FleetShape", "generate"]

HOUR = 3600.0
DAY = 86400.0
MODELS = ("LX-9", "MX-1", "CT-7", "US-3", "PR-5")
CODES = tuple(f"E{n}" for n in range(100, 124))
BUSINESS_HOURS = {"days": [0, 1, 2, 3, 4], "start": "08:00", "end": "18:00", "tz": "Europe/Berlin"}
_EVENTS = ("failure", "degraded", "maintenance", "offline")
_EVENT_CUM = (0.6, 0.85, 0.9, 1.0)
_CHANNELS = (Channel.AUTO.value, Channel.CUSTOMER.value, Channel.REMOTE.value, Channel.FIELD.value)
_CHANNEL_CUM = (0.3, 0.45, 0.75, 1.0)
_VISITS_CUM = (0.8, 0.95, 1.0)
_AUTO, _CUSTOMER, _REMOTE, _FIELD = _CHANNELS
_DOWN, _DEGRADED = DeviceState.DOWN.value, DeviceState.DEGRADED.value


@dataclass(frozen=True, slots=True)
class FleetShape:
    devices: int = 40
    customers: int = 4
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    days: float = 120.0
    events_per_year: float = 60.0  # failures + degraded + maintenance + offline, per device
    transients_per_year: float = 12.0
    seed: int = 1
    contract_share: float = 0.25  # customers with business hours instead of 24x7
    overlap_share: float = 0.08  # failures joined by a second, overlapping fault
    # their down intervals overlapping too (the incidents writer never stores that: it stores
    # the union, one interval; on for tests of the SQL engine's general path)
    overlapping_states: bool = False
    skew_share: float = 0.05  # devices whose clock is off by up to ±2 h
    decommission_share: float = 0.03
    late_start_share: float = 0.05  # devices first seen after the start (unknown before)
    unassigned_share: float = 0.02  # devices with no customer or site
    move_share: float = 0.0  # devices moved once to another customer/site mid-history


def _s(value: float) -> float:
    return float(round(value))


class _Builder:
    def __init__(self, shape: FleetShape) -> None:
        self.shape = shape
        self.rng = random.Random(shape.seed)  # noqa: S311 - reproducible test data, not secrets
        self.ds = Dataset()
        self.next_incident = 1
        self.start = shape.start.timestamp()
        self.end = self.start + shape.days * DAY

    def fleet(self) -> Dataset:
        rng, shape = self.rng, self.shape
        sites_of: dict[int, list[int]] = {}
        for cid in range(1, shape.customers + 1):
            hours = BUSINESS_HOURS if rng.random() < shape.contract_share else None
            cost = float(rng.randrange(150, 650, 50))
            self.ds.customers.append(CustomerRecord(cid, f"Customer {cid:03d}", hours, cost))
            sites_of[cid] = []
            for k in range(rng.randint(1, 3)):
                sid = len(self.ds.sites) + 1
                self.ds.sites.append(SiteRecord(sid, cid, f"Site {k + 1}"))
                sites_of[cid].append(sid)
        for n in range(shape.devices):
            customer_id: int | None = rng.randint(1, shape.customers) if shape.customers else None
            site_id = rng.choice(sites_of[customer_id]) if customer_id else None
            if rng.random() < shape.unassigned_share:
                customer_id = site_id = None
            decommissioned = (
                _s(self.start + rng.uniform(0.2, 0.9) * (self.end - self.start))
                if rng.random() < shape.decommission_share
                else None
            )
            if shape.move_share and customer_id and rng.random() < shape.move_share:
                moved = _s(self.start + rng.uniform(0.1, 0.9) * (self.end - self.start))
                new_customer = rng.randint(1, shape.customers)
                self.ds.assignments.append(AssignmentRecord(f"dev-{n:05d}", customer_id, site_id, 0.0))
                customer_id, site_id = new_customer, rng.choice(sites_of[new_customer])
                self.ds.assignments.append(AssignmentRecord(f"dev-{n:05d}", customer_id, site_id, moved))
            device = DeviceRecord(
                id=f"dev-{n:05d}",
                customer_id=customer_id,
                site_id=site_id,
                model=rng.choice(MODELS),
                decommissioned_s=decommissioned,
                first_seen_s=self.start,
            )
            self.ds.devices.append(device)
            self.timeline(device)
        return self.ds

    def state(self, device: str, state: DeviceState, start: float, end: float | None, **kw: Any) -> None:
        if end is None or end > start:
            self.ds.states.append(
                StateRecord(device, state.value, _s(start), None if end is None else _s(end), **kw)
            )

    def timeline(self, device: DeviceRecord) -> None:
        rng, shape = self.rng, self.shape
        stop = device.decommissioned_s or self.end
        skew = rng.uniform(-2 * HOUR, 2 * HOUR) if rng.random() < shape.skew_share else 0.0
        favourite = rng.sample(CODES, 3)
        cursor = self.start
        if rng.random() < shape.late_start_share:
            cursor = _s(self.start + rng.uniform(0.05, 0.5) * (stop - self.start))
        for _ in range(self.poisson(shape.transients_per_year * (stop - self.start) / (365 * DAY))):
            raised = _s(rng.uniform(self.start, stop))
            self.ds.transients.append(
                TransientRecord(device.id, rng.choice(favourite), raised, raised + rng.randint(1, 30))
            )
        mean_gap = 365 * DAY / shape.events_per_year
        up_since = cursor
        while True:
            at = _s(cursor + rng.expovariate(1 / mean_gap))
            if at >= stop:
                break
            self.state(device.id, DeviceState.RUNNING, up_since, at)
            event = rng.choices(_EVENTS, cum_weights=_EVENT_CUM)[0]
            code = rng.choice(favourite) if rng.random() < 0.7 else rng.choice(CODES)
            if event == "maintenance":
                planned = _s(rng.uniform(2, 8) * HOUR)
                actual = _s(planned * rng.uniform(0.7, 1.5))
                self.state(device.id, DeviceState.MAINTENANCE, at, at + actual, planned_end_s=at + planned)
                cursor = at + actual
            elif event == "offline":
                duration = _s(rng.expovariate(1 / (3 * HOUR)) + 60)
                external = rng.random() < 0.5
                state = DeviceState.DOWN if external else DeviceState.UNKNOWN
                self.state(device.id, state, at, at + duration, external=external)
                self.incident(
                    device.id, at, duration, None, skew, kind=IncidentKind.OFFLINE, external=external
                )
                cursor = at + duration
            else:
                effect = DeviceState.DOWN if event == "failure" else DeviceState.DEGRADED
                duration = _s(rng.lognormvariate(9.0, 1.0) + 60)  # median ~2.3 h
                if at + duration >= stop and device.decommissioned_s is None:
                    self.state(device.id, effect, at, None)  # still down at the end
                    self.incident(device.id, at, None, code, skew, effect=effect)
                    return
                self.state(device.id, effect, at, at + duration)
                self.incident(device.id, at, duration, code, skew, effect=effect)
                cursor = at + duration
                if effect is DeviceState.DOWN and rng.random() < shape.overlap_share:
                    cursor = max(cursor, self.second_fault(device.id, at, duration, skew))
            if cursor >= stop:
                return
            up_since = cursor
        self.state(
            device.id, DeviceState.RUNNING, up_since, None if device.decommissioned_s is None else stop
        )

    def second_fault(self, device: str, at: float, duration: float, skew: float) -> float:
        """A second fault overlapping the failure [at, at + duration) just stored; its end."""
        rng = self.rng
        second = _s(at + rng.uniform(0.1, 0.9) * duration)
        length = _s(rng.uniform(0.2, 1.5) * duration)
        if self.shape.overlapping_states:  # invalid for the incidents writer: tests only
            self.state(device, DeviceState.DOWN, second, second + length)
        elif second + length > at + duration:  # the writer's union: one longer interval
            self.ds.states[-1] = replace(self.ds.states[-1], end_s=_s(second + length))
        self.incident(device, second, length, rng.choice(CODES), skew, effect=DeviceState.DOWN)
        return second + length

    def poisson(self, mean: float) -> int:
        count, total = 0, self.rng.expovariate(1.0)
        while total < mean:
            count += 1
            total += self.rng.expovariate(1.0)
        return count

    def incident(
        self,
        device: str,
        at: float,
        duration: float | None,
        code: str | None,
        skew: float,
        *,
        kind: IncidentKind = IncidentKind.FAULT,
        effect: DeviceState = DeviceState.DOWN,
        external: bool = False,
    ) -> None:
        rng = self.rng
        detect = _s(at + rng.uniform(5, 300))
        fault = _s(at + skew)  # device time: may even be after t_detect
        restored = None if duration is None else _s(at + duration + skew)
        channel: str | None = None
        ack = respond = onsite = resolved = closed = None
        needs_dispatch = remote_used = False
        visits = 0
        if restored is not None:
            channel = rng.choices(_CHANNELS, cum_weights=_CHANNEL_CUM)[0]
            resolved = _s(max(restored, detect) + rng.expovariate(1 / (20 * 60)))
            if rng.random() < 0.03:
                restored = None  # resolved without a recorded restore
            closed = resolved + DAY
        if channel != _AUTO and rng.random() < 0.9:
            ack = _s(detect + rng.expovariate(1 / (15 * 60)))
            if rng.random() < 0.9:
                respond = _s(ack + rng.expovariate(1 / (30 * 60)))
        if channel == _FIELD:
            needs_dispatch = True
            visits = rng.choices((1, 2, 3), cum_weights=_VISITS_CUM)[0]
            onsite = _s((respond or detect) + rng.expovariate(1 / (4 * HOUR)))
            remote_used = rng.random() < 0.3
        elif channel in (_REMOTE, _CUSTOMER):
            needs_dispatch = rng.random() < 0.4
            remote_used = channel == _REMOTE or rng.random() < 0.1
        self.ds.incidents.append(
            IncidentRecord(
                id=self.next_incident,
                device_id=device,
                fault_s=fault,
                detect_s=detect,
                kind=kind.value,
                effect=effect.value,
                fault_code=code,
                external=external,
                ack_s=ack,
                respond_s=respond,
                onsite_s=onsite,
                restored_s=restored,
                resolved_s=resolved,
                closed_s=closed,
                channel=channel,
                needs_dispatch=needs_dispatch,
                remote_used=remote_used,
                visits=visits,
                reopened=int(rng.random() < 0.02),
                episodes=self.episodes(fault, detect, restored, skew),
            )
        )
        self.next_incident += 1

    def episodes(
        self, fault: float, detect: float, restored: float | None, skew: float
    ) -> tuple[tuple[float, float, float | None], ...]:
        """The incident's failure episodes: mostly one (t_fault → t_restored); one in six more,
        the time between them cut out of that span; one in fifty none. A stream of its own per
        incident, so the rest of the fleet is the same as without episodes."""
        rng = random.Random(f"{self.shape.seed}-{self.next_incident}")  # noqa: S311 - test data
        draw = rng.random()
        if draw < 0.02:
            return ()
        if draw > 1 / 6 + 0.02:
            return ((fault, detect, restored),)
        end = restored if restored is not None else _s(max(fault, detect) + rng.uniform(1, 72) * HOUR)
        cuts = sorted(_s(rng.uniform(fault, end)) for _ in range(2 * rng.choice((1, 2))))
        starts = [fault, *cuts[1::2]]
        ends: list[float | None] = [*cuts[0::2], restored]
        return tuple(
            (start, detect if k == 0 else _s(start - skew + rng.uniform(5, 300)), ends[k])
            for k, start in enumerate(starts)
        )


def generate(shape: FleetShape | None = None) -> Dataset:
    """A fleet history shaped by ``shape`` (same seed, same data)."""
    return _Builder(shape or FleetShape()).fleet()
